//! The state of one session's UDP path, shared by the relay's loops: where
//! datagrams go, whether data uses the path, and when an authenticated
//! datagram last arrived. The client decides (its probes), the server
//! follows (the client's Path frames), see PROTOCOL.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::socket::UdpSocket;

/// One session's UDP path.
#[derive(Debug)]
pub struct UdpPath {
    /// The socket (the server's is shared by all sessions).
    pub socket: Arc<UdpSocket>,
    /// The peer's address, and our address it last sent to.
    peer: Mutex<(Option<SocketAddr>, Option<IpAddr>)>,
    sending: AtomicBool,
    /// The peer's address was given (the client's server) and never moves.
    fixed: bool,
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
            peer: Mutex::new((peer, None)),
            sending: AtomicBool::new(false),
            fixed: peer.is_some(),
            created: Instant::now(),
            last_rx: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    /// Where datagrams go, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Where datagrams go and the local address to send them from (the one
    /// the peer sent to, so that its connected socket takes the answer).
    pub fn route(&self) -> Option<(SocketAddr, Option<IpAddr>)> {
        let p = *self.peer.lock().unwrap_or_else(|e| e.into_inner());
        Some((p.0?, p.1))
    }

    /// An authenticated, fresh datagram arrived from `from`, sent to our
    /// `to`: the peer lives there now.
    pub fn received_from(&self, from: SocketAddr, to: Option<IpAddr>) {
        let ms = self.created.elapsed().as_millis() as u64 + 1;
        self.last_rx.store(ms, Ordering::Relaxed);
        if self.fixed {
            return;
        }
        let mut peer = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        if peer.0 != Some(from) {
            if peer.0.is_some() {
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
            peer.0 = Some(from);
        }
        if to.is_some() {
            peer.1 = to;
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
