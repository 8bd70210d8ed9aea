//! Running an operator's hook command (`sh -c`), for the client's up/down
//! hooks and the server's session hooks: a child process through tokio, in a
//! process group of its own, with a time limit.
//!
//! The group is why: a terminal's Ctrl-C must reach twoway, which then runs
//! its down hooks, not the hooks themselves; and on timeout the whole group is killed, not only the
//! shell, so a `sleep` a hook started does not outlive it. (A hook that
//! exits in time may leave a background process running, as a shell would.)

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// At most this much of a hook's standard error is kept for the log.
const STDERR_KEPT: usize = 4096;
/// How long, after a hook exited, its standard error is still read.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// How a hook ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited 0; `stderr` is the start of what it wrote there, if anything.
    Succeeded { stderr: String },
    /// It exited otherwise.
    Failed {
        /// How it exited.
        status: std::process::ExitStatus,
        /// The start of what it wrote to its standard error.
        stderr: String,
    },
    /// It ran longer than its limit; its process group was killed.
    TimedOut,
    /// It could not be started, or waiting for it failed.
    Error(std::io::Error),
}

/// Runs `command` with `/bin/sh -c` and `env` added to twoway's environment,
/// for at most `limit`. Never fails: the outcome says what happened.
pub async fn run<'a>(
    command: &str,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    limit: Duration,
) -> Outcome {
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Outcome::Error(e),
    };
    // Until the shell is reaped its pid, the group's id, cannot be reused: the
    // group is killed on timeout, and also if this future is dropped midway.
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let reader = child.stderr.take().map(|e| tokio::spawn(kept_start(e)));
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Outcome::Error(e),
        // Dropping `group` kills the shell and whatever it started in its
        // group (kill_on_drop reaps the shell).
        Err(_) => return Outcome::TimedOut,
    };
    // Reaped: what the hook left running in the background is its own.
    group.0 = None;
    // A background child of the hook may hold its stderr open: wait only briefly.
    let stderr = match reader {
        Some(r) => match tokio::time::timeout(STDERR_GRACE, r).await {
            Ok(Ok(kept)) => String::from_utf8_lossy(&kept).trim().to_owned(),
            _ => String::new(),
        },
        None => String::new(),
    };
    if status.success() {
        Outcome::Succeeded { stderr }
    } else {
        Outcome::Failed { status, stderr }
    }
}

/// A hook's process group, killed when dropped while it holds one.
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
    }
}

/// Reads a hook's standard error to its end, keeping the first
/// [`STDERR_KEPT`] bytes (the rest is read and dropped, so the hook never
/// blocks on a full pipe).
async fn kept_start(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventually::eventually;

    #[tokio::test]
    async fn a_hook_sees_its_environment_and_its_failure_is_reported() {
        let out = tempfile::NamedTempFile::new().unwrap();
        let cmd = format!("echo \"$A\" > {}", out.path().display());
        let ok = run(&cmd, [("A", "one")], Duration::from_secs(5)).await;
        assert!(matches!(ok, Outcome::Succeeded { .. }), "{ok:?}");
        assert_eq!(std::fs::read_to_string(out.path()).unwrap(), "one\n");

        let noted = run("echo note >&2", [], Duration::from_secs(5)).await;
        assert!(
            matches!(&noted, Outcome::Succeeded { stderr } if stderr == "note"),
            "{noted:?}"
        );

        let failed = run("echo oops >&2; exit 3", [], Duration::from_secs(5)).await;
        match failed {
            Outcome::Failed { status, stderr } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "oops");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_hook_started_too() {
        let (_dir, pidfile) = crate::temp_path::temp_path("pid");
        // The shell starts a background sleep and waits: on timeout both must die.
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let outcome = run(&cmd, [], Duration::from_millis(300)).await;
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed at once; reaped by init (or us) shortly after.
        eventually(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                let state =
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie_or_gone = state.is_empty() || state.split(' ').nth(2) == Some("Z");
                if zombie_or_gone {
                    Ok(())
                } else {
                    Err(format!(
                        "the hook's background sleep {pid} still runs: {state}"
                    ))
                }
            },
        )
        .await;
    }
}
