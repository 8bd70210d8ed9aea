//! Running the system's network tools (`ip`, `resolvectl`) as child
//! processes through tokio, with `LC_ALL=C` and a time limit, so that no
//! runtime thread waits on them. The arguments are built by pure,
//! unit-tested functions next to their users (`routes.rs`, `dns.rs`).

use std::time::Duration;

use tokio::process::Command;

/// Longest a tool may run before it is killed and the change counts as failed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// A change to, or a look at, the host's network that failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The tool could not be started (not installed, no permission).
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// `ip` or `resolvectl`.
        tool: &'static str,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and said no.
    #[error("{tool} {args} failed: {stderr}")]
    Failed {
        /// `ip` or `resolvectl`.
        tool: &'static str,
        /// Its arguments, joined with spaces.
        args: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// The tool did not finish within [`TOOL_TIMEOUT`] and was killed.
    #[error("{tool} {args} did not finish within {TOOL_TIMEOUT:?}")]
    TimedOut {
        /// `ip` or `resolvectl`.
        tool: &'static str,
        /// Its arguments, joined with spaces.
        args: String,
    },
    /// The tool's JSON output could not be read.
    #[error("{tool} {args}: {source}")]
    Output {
        /// `ip`.
        tool: &'static str,
        /// Its arguments, joined with spaces.
        args: String,
        /// What was wrong with it.
        #[source]
        source: serde_json::Error,
    },
}

/// Runs `tool ARGS` and returns its stdout; the error carries the command and its stderr.
pub async fn run(tool: &'static str, args: &[String]) -> Result<String, HostError> {
    let child = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        // Its own group: a Ctrl-C in the terminal is for twoway, which tears down.
        .process_group(0)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TOOL_TIMEOUT, child)
        .await
        .map_err(|_| HostError::TimedOut {
            tool,
            args: args.join(" "),
        })?
        .map_err(|source| HostError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError::Failed {
            tool,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS`.
pub async fn ip(args: &[String]) -> Result<String, HostError> {
    run("ip", args).await
}

/// Runs `ip ARGS` and reads its output as JSON (`ip -j ...`).
pub async fn ip_json(args: &[&str]) -> Result<serde_json::Value, HostError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = ip(&args).await?;
    serde_json::from_str(&out).map_err(|source| HostError::Output {
        tool: "ip",
        args: args.join(" "),
        source,
    })
}

/// Runs `resolvectl ARGS`.
pub async fn resolvectl(args: &[String]) -> Result<(), HostError> {
    run("resolvectl", args).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_failure_and_missing_tools_are_told_apart() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(run("echo", &args(&["a", "b"])).await.unwrap(), "a b\n");
        let e = run("sh", &args(&["-c", "echo no >&2; exit 2"]))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "sh -c echo no >&2; exit 2 failed: no");
        let e = run("twoway-no-such-tool", &[]).await.unwrap_err();
        assert!(matches!(e, HostError::Spawn { .. }), "{e:?}");
    }
}
