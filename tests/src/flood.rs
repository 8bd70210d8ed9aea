//! A bounded flood of idle TCP connections from inside a network namespace:
//! connections that never speak TLS, held open until the flood is dropped or
//! its time limit passes, whichever comes first. It counts how many of them
//! the server has closed.

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Idle connections held open by a thread inside a namespace.
pub struct IdleFlood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    connected: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl std::fmt::Debug for IdleFlood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleFlood")
            .field("opened", &self.opened())
            .finish_non_exhaustive()
    }
}

impl IdleFlood {
    /// From inside `ns`, open up to `count` TCP connections to `target`
    /// (each attempt bounded by 1 s) and hold them, for at most `hold`.
    pub fn start(ns: &str, target: SocketAddr, count: usize, hold: Duration) -> IdleFlood {
        IdleFlood::start_from(ns, &[], target, count, hold)
    }

    /// Like [`IdleFlood::start`], the connections taking their source
    /// address from `sources` in turn (addresses that exist in `ns`).
    pub fn start_from(
        ns: &str,
        sources: &[IpAddr],
        target: SocketAddr,
        count: usize,
        hold: Duration,
    ) -> IdleFlood {
        let sources = sources.to_vec();
        let path = format!("/run/netns/{ns}");
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, opened, closed) = (stop.clone(), opened.clone(), closed.clone());
            let connected = connected.clone();
            std::thread::spawn(move || -> Result<(), String> {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let deadline = Instant::now() + hold;
                let mut held = Vec::with_capacity(count);
                for i in 0..count {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                    if let Ok(s) = runtime.block_on(connect(source, target)) {
                        held.push(Some(s));
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                connected.store(true, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for slot in &mut held {
                        if slot.as_ref().is_some_and(closed_by_peer) {
                            *slot = None;
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(held);
                Ok(())
            })
        };
        IdleFlood {
            stop,
            opened,
            closed,
            connected,
            thread: Some(thread),
        }
    }

    /// Connections opened so far (some may since have been closed by the server).
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections the server has closed (seen once all are opened).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }

    /// Wait until every connection attempt has been made (or `timeout`
    /// passes); how many connected.
    pub fn wait_connected(&self, timeout: Duration) -> usize {
        crate::wait_until(timeout, || self.connected.load(Ordering::Relaxed));
        self.opened()
    }

    /// Close every connection and join the thread.
    pub fn stop(mut self) -> Result<(), String> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "flood thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One TCP connection from `source` (any if `None`) within 1 s, as a
/// non-blocking std stream.
async fn connect(source: Option<IpAddr>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(1), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    // tokio leaves the socket non-blocking, which `closed_by_peer` relies on.
    stream.into_std()
}

/// Whether the peer has closed (or reset) a non-blocking stream.
fn closed_by_peer(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    let mut r: &TcpStream = s;
    match r.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}
