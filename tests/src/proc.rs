//! Running commands with a deadline and stopping processes by PID.
//!
//! Output always goes to files, never pipes: a command that daemonizes
//! (`twoway up --detach`) leaves a child holding its stdout/stderr, and a pipe
//! reader would then wait for that child instead of the command.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long [`run`] waits by default before killing a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Put in front of a command: run it as user and group nobody (65534) with
/// no supplementary groups, a process without any privilege.
pub const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

/// Put in front of a command: run it in a network namespace of its own
/// (only a loopback device, down), so that it cannot reach or change any
/// network outside the test.
pub const OWN_NETNS: [&str; 3] = ["unshare", "--net", "--"];

/// What a finished (or timed-out) command left behind.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the command was killed because it ran past its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    /// Exit code, `None` if killed by a signal or timed out.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

impl fmt::Display for CmdOutput {
    /// A multi-line report: command, outcome, time, stdout and stderr.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.status {
            None => "timed out (killed)".to_string(),
            Some(s) => match s.code() {
                Some(c) => format!("exit code {c}"),
                None => format!("{s}"),
            },
        };
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "outcome: {outcome} after {:.1?}", self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Quote a command line for messages.
pub fn display_args<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `args` (program first) with stdin from /dev/null, killing it after `timeout`.
///
/// Panics only if the program cannot be started at all.
pub fn run<S: AsRef<str>>(args: &[S], timeout: Duration) -> CmdOutput {
    run_with_env(args, &[], timeout)
}

/// Like [`run`], with extra environment variables.
pub fn run_with_env<S: AsRef<str>>(
    args: &[S],
    env: &[(&str, &str)],
    timeout: Duration,
) -> CmdOutput {
    assert!(!args.is_empty(), "run: empty command");
    let command = display_args(args);
    let dir = tempfile::tempdir().expect("tempdir for command output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(args[0].as_ref());
    cmd.args(args[1..].iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let status = wait_deadline(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let elapsed = start.elapsed();
    CmdOutput {
        command,
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
        elapsed,
    }
}

/// Read a file as text, replacing invalid UTF-8; empty if unreadable.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Poll `child` until it exits or `timeout` passes (`None`).
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `signal` to one process by PID; errors (already gone) are ignored.
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Whether a process with this PID exists. A zombie counts as gone only
/// once all its threads have exited: the group leader turns `Z` while other
/// threads still run, and those threads hold the files (a TUN device, its
/// routes) until the last one is done.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // Field 3, after the parenthesised command name, is the state.
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(false)
    })
}

/// SIGTERM a child we own, wait up to `grace`, then SIGKILL it.
/// Returns the exit status and whether it stopped on SIGTERM alone.
pub fn terminate_child(child: &mut Child, grace: Duration) -> (Option<ExitStatus>, bool) {
    if let Ok(Some(status)) = child.try_wait() {
        return (Some(status), true);
    }
    signal(child.id(), Signal::SIGTERM);
    if let Some(status) = wait_deadline(child, grace) {
        return (Some(status), true);
    }
    let _ = child.kill();
    (child.wait().ok(), false)
}

/// SIGTERM processes that are not our children (e.g. a daemonized client),
/// wait up to `grace` for them to disappear, then SIGKILL the rest.
pub fn terminate_pids(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids {
        if pid_alive(pid) {
            signal(pid, Signal::SIGKILL);
        }
    }
}
