//! Waiting for conditions with a deadline, and TCP probes from inside a
//! network namespace.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// How often [`wait_until`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Poll `cond` every 100 ms until it returns true or `timeout` passes.
/// Returns whether it became true. The condition is always checked at least
/// once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Like [`wait_until`] but for a condition that yields a value.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let mut found = None;
    wait_until(timeout, || {
        found = probe();
        found.is_some()
    });
    found
}

pub use twoway_common::eventually::eventually;

/// Run `f` on a fresh thread that has joined the network namespace `ns`
/// (a name under /run/netns). Sockets made by `f` live in that namespace;
/// the rest of the process is unaffected.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path)?;
    std::thread::spawn(move || -> std::io::Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("thread in netns panicked"))?
}

/// One TCP connect attempt to `addr` from inside `ns`.
pub fn tcp_connects(ns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, timeout).is_ok()
    })
    .unwrap_or(false)
}

/// Wait until a TCP connect to `addr` from inside `ns` succeeds.
pub fn wait_for_tcp(ns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        tcp_connects(ns, addr, Duration::from_millis(500))
    })
}
