//! What the registry keeps of one live session, and what status and the
//! metrics read from it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use twoway_common::control::status::{Carrier, SessionStatus};
use twoway_common::control::timestamp::rfc3339;
use twoway_common::message::Bye;
use twoway_common::relay::{Counters, DropReason};

use crate::policy::Grant;

/// One live session as the registry keeps it.
#[derive(Debug)]
pub struct Entry {
    /// The client's identity.
    pub identity: String,
    /// Its tunnel addresses.
    pub addresses: Vec<IpAddr>,
    /// Its public address and port.
    pub remote: SocketAddr,
    /// When the session was assigned.
    pub since: SystemTime,
    /// Serial number of its certificate (hex), to match against a new CRL.
    pub serial: String,
    /// What policy granted it (updated when a reload pushes a new grant),
    /// to tell on reload whether that changed.
    pub grant: Grant,
    /// A second (third...) session of the identity, with a pool address.
    pub extra_device: bool,
    /// Its traffic counters.
    pub counters: Arc<Counters>,
    /// Where a Bye is sent to end it.
    pub stop: mpsc::Sender<Bye>,
    /// Where a changed grant goes to the client (an Update frame), when the
    /// client announced feature `update`.
    pub update: Option<watch::Sender<Bytes>>,
    /// Whether its packets may reach other clients (its filter reads this).
    pub client_to_client: Arc<AtomicBool>,
    /// Its UDP path, when the session has the UDP channel.
    pub udp: Option<Arc<twoway_common::outside::udp::UdpPath>>,
}

/// Traffic totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from clients delivered inside.
    pub rx_bytes: u64,
    /// Bytes sent to clients.
    pub tx_bytes: u64,
    /// Dropped packets, indexed by `DropReason as usize`.
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Traffic {
    /// Adds one set of counters.
    pub fn add(&mut self, c: &Counters) {
        self.rx_bytes += c.rx_bytes.load(Ordering::Relaxed);
        self.tx_bytes += c.tx_bytes.load(Ordering::Relaxed);
        for r in DropReason::ALL {
            self.dropped[r as usize] += c.dropped(r);
        }
    }
}

impl Entry {
    /// The session `id` in status output.
    pub fn status(&self, id: u64) -> SessionStatus {
        SessionStatus {
            id,
            identity: self.identity.clone(),
            address: self
                .addresses
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            address6: self.addresses.get(1).map(ToString::to_string),
            remote: self.remote.to_string(),
            since: rfc3339(self.since),
            rx_bytes: self.counters.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.counters.tx_bytes.load(Ordering::Relaxed),
            transport: self.udp.as_ref().map_or(Carrier::Tcp, |p| p.transport()),
            udp_remote: self
                .udp
                .as_ref()
                .and_then(|p| p.peer())
                .map(|a| a.to_string()),
        }
    }
}
