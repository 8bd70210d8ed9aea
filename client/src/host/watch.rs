//! Noticing network changes: `ip monitor link address route` as a child
//! process (through tokio, killed with the watch), which prints a line for
//! every link, address and route event of both families. The lines
//! themselves are not parsed; each burst only wakes the client, which then
//! reads the routing table with `ip -j` and decides whether the path to the
//! server moved (`system.rs`). A slow timer covers lost events and hosts
//! where the monitor cannot run.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Quiet time after an event before the client looks (events come in bursts).
pub const SETTLE: Duration = Duration::from_millis(250);
/// Look at least this often even without events.
pub const POLL: Duration = Duration::from_secs(10);

/// The `ip` arguments of the monitor: links, addresses and routes, both families.
const MONITOR: [&str; 4] = ["monitor", "link", "address", "route"];

/// A running `ip monitor` and its output.
#[derive(Debug)]
struct Monitor {
    /// Held so that the monitor is killed with the watch.
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Wakes up when the host's links, addresses or routes change.
#[derive(Debug)]
pub struct Watch {
    monitor: Option<Monitor>,
}

impl Watch {
    /// Starts `ip monitor`; without it, falls back to polling.
    pub fn open() -> Self {
        let monitor = match spawn() {
            Ok(m) => Some(m),
            Err(e) => {
                warn_polling(&e.to_string());
                None
            }
        };
        Self { monitor }
    }

    /// Returns after a burst of changes has settled, or after [`POLL`].
    pub async fn changed(&mut self) {
        let Some(monitor) = &mut self.monitor else {
            return tokio::time::sleep(POLL).await;
        };
        tokio::select! {
            line = monitor.lines.next_line() => if !matches!(line, Ok(Some(_))) {
                // The monitor ended: poll from now on.
                warn_polling("ip monitor ended");
                self.monitor = None;
                return tokio::time::sleep(POLL).await;
            },
            _ = tokio::time::sleep(POLL) => return,
        }
        tokio::time::sleep(SETTLE).await;
        // The rest of the burst, without waiting for more (`next_line` is cancel-safe).
        while let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::ZERO, monitor.lines.next_line()).await
        {}
    }
}

fn spawn() -> std::io::Result<Monitor> {
    let mut child = Command::new("ip")
        .args(MONITOR)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C in the terminal is for twoway, which tears down.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    Ok(Monitor {
        _child: child,
        lines: BufReader::new(stdout).lines(),
    })
}

fn warn_polling(e: &str) {
    tracing::warn!(error = %e, poll = ?POLL,
        "cannot watch for network changes; checking on a timer instead");
}
