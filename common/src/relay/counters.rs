//! What the relay counts: traffic per session (or device) and the packets it
//! dropped, by reason. Status output and metrics read these.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a parsable IP packet.
    Malformed,
    /// Source address not assigned to the sender.
    Spoofed,
    /// Client-to-client traffic that policy does not allow.
    ClientToClient,
    /// Destination is no known session, or an address family the tunnel does not carry.
    NoRoute,
    /// The session's queue was full (slow peer).
    QueueFull,
    /// An offload header the kernel must not see; the session is closed too.
    BadOffload,
    /// A UDP datagram whose counter was seen before (or is too old).
    Replayed,
    /// A UDP datagram that did not authenticate (or is not ours at all).
    Forged,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 8] = [
        Self::Malformed,
        Self::Spoofed,
        Self::ClientToClient,
        Self::NoRoute,
        Self::QueueFull,
        Self::BadOffload,
        Self::Replayed,
        Self::Forged,
    ];

    /// Name used in status output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Spoofed => "spoofed",
            Self::ClientToClient => "client_to_client",
            Self::NoRoute => "no_route",
            Self::QueueFull => "queue_full",
            Self::BadOffload => "bad_offload",
            Self::Replayed => "replayed",
            Self::Forged => "forged",
        }
    }
}

/// Traffic counters of one session (or one device), shared with status readers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from the outside and delivered inside.
    pub rx_bytes: AtomicU64,
    /// Packets received from the outside and delivered inside.
    pub rx_packets: AtomicU64,
    /// Bytes of packets sent to the outside.
    pub tx_bytes: AtomicU64,
    /// Packets sent to the outside.
    pub tx_packets: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts a dropped packet.
    pub fn drop_packet(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` dropped packets.
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Packets dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a packet of `bytes` delivered inside.
    pub(super) fn received(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a packet of `bytes` sent to the outside.
    pub(super) fn sent(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
