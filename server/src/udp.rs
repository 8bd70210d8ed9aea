//! The server's UDP endpoint: one socket on the listen address and port,
//! shared by every session. It reads datagrams (in GRO batches) and hands
//! each batch to the session its header names; the session's relay checks
//! and opens them. Nothing is ever answered from here: a datagram that does
//! not name a live session is counted and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::warn;
use twoway_common::outside::udp::inbox::{inbox, InboxRx, InboxTx};
use twoway_common::outside::udp::{RecvBatch, RecvPool, UdpSocket};

/// Bytes queued for one session before more are dropped (a slow session
/// loses its own datagrams, never another's): about a millisecond at the
/// rates one session reaches, as on the client's side (its device queue).
/// Measured (`scripts/bench.sh`, 2 reps each): unbounded (256 receive
/// calls), ping p99 during an upload under 1 % loss 6.0 ms; 2 MiB, 4.4 ms;
/// 512 KiB, 2.8-3.2 ms. The drops on a clean link are not counted as path
/// loss (relay/udp.rs), so that `auto` still moves a busy clean path to TCP.
const SESSION_INBOX: usize = 512 * 1024;
/// GRO batches read per receive call.
const RECV_BATCHES: usize = 32;

/// The socket and the live sessions' numbers.
#[derive(Debug)]
pub struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    sessions: Mutex<HashMap<u32, InboxTx>>,
    /// Datagram batches that named no live session or did not parse.
    pub unknown: AtomicU64,
    /// Datagram batches (one datagram or a GRO aggregate) dropped because
    /// their session's inbox was full.
    pub overflow: AtomicU64,
}

/// A session's place at the endpoint; dropping it frees the number.
#[derive(Debug)]
pub struct Registration {
    endpoint: Arc<UdpEndpoint>,
    /// The session's number in datagram headers.
    pub number: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.endpoint
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.number);
    }
}

impl UdpEndpoint {
    /// Binds `addr` (the TCP listener's address and port).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            socket: Arc::new(UdpSocket::bind(addr)?),
            sessions: Mutex::new(HashMap::new()),
            unknown: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
        })
    }

    /// The shared socket.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.socket.clone()
    }

    /// A fresh random session number and the queue its datagrams arrive on.
    pub fn register(self: &Arc<Self>) -> (Registration, InboxRx) {
        let (tx, rx) = inbox(SESSION_INBOX);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let number = loop {
            let n = random_u32();
            if n != 0 && !sessions.contains_key(&n) {
                break n;
            }
        };
        sessions.insert(number, tx);
        let registration = Registration {
            endpoint: self.clone(),
            number,
        };
        (registration, rx)
    }

    /// Reads datagrams until `cancel`, handing each batch to its session.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut pool = RecvPool::new(RECV_BATCHES);
        loop {
            let batches = tokio::select! {
                r = self.socket.recv(&mut pool) => r,
                _ = cancel.cancelled() => return,
            };
            let batches = match batches {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "UDP receive failed; data stays on the TLS connections");
                    return;
                }
            };
            // One message per session per receive: the session then writes
            // all of it to its device in one batch.
            let mut by_session: Vec<(u32, Vec<RecvBatch>)> = Vec::new();
            for batch in batches {
                let Some(n) = batch.session() else {
                    self.unknown.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match by_session.iter_mut().find(|(m, _)| *m == n) {
                    Some((_, v)) => v.push(batch),
                    None => by_session.push((n, vec![batch])),
                }
            }
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            for (n, batches) in by_session {
                let Some(tx) = sessions.get(&n) else {
                    self.unknown
                        .fetch_add(batches.len() as u64, Ordering::Relaxed);
                    continue;
                };
                let dropped = tx.send_or_drop(batches) as u64;
                if dropped > 0 {
                    self.overflow.fetch_add(dropped, Ordering::Relaxed);
                }
            }
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // The system RNG failing is not something a server can go on without.
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator");
    u32::from_ne_bytes(b)
}
