//! The state of one session's UDP path, shared by the relay's loops: where
//! datagrams go, whether data uses the path, and when an authenticated
//! datagram last arrived. The client decides (its probes), the server
//! follows (the client's Path frames), see PROTOCOL.md.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::socket::UdpSocket;

/// One session's UDP path.
#[derive(Debug)]
pub struct UdpPath {
    /// The socket (the server's is shared by all sessions).
    pub socket: Arc<UdpSocket>,
    peer: Mutex<Option<SocketAddr>>,
    sending: AtomicBool,
    created: Instant,
    /// Milliseconds after `created` of the last authenticated datagram, plus one (0: none yet).
    last_rx: AtomicU64,
    /// Times the peer's address changed (NAT rebinding, roaming).
    pub moves: AtomicU64,
}

impl UdpPath {
    /// A path over `socket`; `peer` is known on the client (the server) and
    /// learned on the server (from the first authenticated datagram).
    pub fn new(socket: Arc<UdpSocket>, peer: Option<SocketAddr>) -> Self {
        Self {
            socket,
            peer: Mutex::new(peer),
            sending: AtomicBool::new(false),
            created: Instant::now(),
            last_rx: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    /// Where datagrams go, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An authenticated, fresh datagram arrived from `from`: the peer lives
    /// there now.
    pub fn received_from(&self, from: SocketAddr) {
        let ms = self.created.elapsed().as_millis() as u64 + 1;
        self.last_rx.store(ms, Ordering::Relaxed);
        let mut peer = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        if *peer != Some(from) {
            if peer.is_some() {
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
            *peer = Some(from);
        }
    }

    /// How long ago the last authenticated datagram arrived (None: never).
    pub fn since_rx(&self) -> Option<Duration> {
        let ms = self.last_rx.load(Ordering::Relaxed);
        let at = Duration::from_millis(ms.checked_sub(1)?);
        Some(self.created.elapsed().saturating_sub(at))
    }

    /// Whether data goes over UDP (and the peer's address is known).
    pub fn sending(&self) -> bool {
        self.sending.load(Ordering::Relaxed) && self.peer().is_some()
    }

    /// Switches data to UDP (true) or to the TLS connection.
    pub fn set_sending(&self, on: bool) {
        self.sending.store(on, Ordering::Relaxed);
    }

    /// The transport data uses now, for status output.
    pub fn transport(&self) -> &'static str {
        if self.sending() {
            "udp"
        } else {
            "tcp"
        }
    }
}
