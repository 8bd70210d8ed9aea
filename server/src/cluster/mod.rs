//! Nodes that share one etcd: pool leases (the same address for an identity
//! on every node, never one address for two identities), the live sessions
//! of every node under each node's etcd lease, and kicks delivered by a watch.
//! Without `[cluster]` none of this runs: the server keeps its leases in
//! `[state] dir` and knows only its own sessions.
//!
//! The server calls in at a few points of a session: [`Cluster::claim`]
//! (the duplicate rule across nodes), [`Cluster::address`] (a pool address),
//! [`Cluster::register`] (what status shows), and drops the [`Claim`] at
//! teardown. Stops for its own sessions (kicks, a newer session elsewhere)
//! arrive on the channel [`Cluster::start`] returns.

mod config;
mod keeper;
pub mod keys;
mod kick;
mod leases;
mod sessions;
mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use twoway_common::config_file::ConfigError;

pub use config::ClusterSection;
pub use keys::SessionRecord;
pub use leases::AddressError;
pub use sessions::{Claim, ClaimError, LeaseSeen};
pub use store::{Store, Unreachable};

/// Why the cluster asks this node to end one of its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An operator ran `kick` on some node.
    Kicked,
    /// A newer session of the identity took its slot (on any node).
    Replaced,
    /// Its pool address went to another identity while etcd was unreachable
    /// for longer than the node's lease (the client reconnects and gets one).
    AddressLost,
}

/// A session of this node that must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The session's number on this node.
    pub id: u64,
    /// Its identity (a stop for another identity is ignored).
    pub identity: String,
    /// Why.
    pub reason: StopReason,
}

/// A session of this node as it should be in etcd.
#[derive(Debug, Clone)]
struct Local {
    record: SessionRecord,
    /// The session key's modification revision when we last wrote it; 0
    /// while it is not in etcd (claimed while etcd was unreachable).
    revision: i64,
    /// Its pool address leased in etcd (none for a static address): the
    /// address key must still name the slot when the session is written again.
    leased: Option<std::net::Ipv4Addr>,
    /// Asked to end (a kick, a replace) perhaps before the server registered
    /// it, when a stop finds no session to act on: registration checks this.
    stopped: Option<StopReason>,
}

/// This node's part of the cluster.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    ttl: Duration,
    store: Store,
    /// The node's etcd lease; 0 until granted (or after it expired).
    lease: AtomicI64,
    /// Session key → this node's session there.
    local: Mutex<BTreeMap<String, Local>>,
    /// Session keys of ended sessions still to delete (key, revision).
    gone: Mutex<Vec<(String, i64)>>,
    /// Wakes the keeper when `local` or `gone` need etcd.
    dirty: Notify,
    /// Another live node held this node's name when it took its lease.
    name_taken: AtomicBool,
    stops: mpsc::UnboundedSender<Stop>,
}

impl Cluster {
    /// Connects (lazily) to the etcd of `section`; `config` is the server
    /// config file, named in errors. The receiver gets the stops for this
    /// node's sessions; [`Cluster::run`] must run for leases, kicks and
    /// catch-up to work.
    pub async fn start(
        section: &ClusterSection,
        config: &std::path::Path,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Stop>), ConfigError> {
        let store = Store::connect(section, config).await?;
        let (stops, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            node: section.node.clone(),
            ttl: section.lease_ttl(),
            store,
            lease: AtomicI64::new(0),
            local: Mutex::new(BTreeMap::new()),
            gone: Mutex::new(Vec::new()),
            dirty: Notify::new(),
            name_taken: AtomicBool::new(false),
            stops,
        });
        Ok((cluster, rx))
    }

    /// Keeps the node's etcd lease alive, writes what etcd missed while it
    /// was unreachable, and watches for kicks, until `shutdown`; then
    /// revokes the lease, so that this node's sessions leave etcd at once.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        // Both end on `shutdown`; dropping this future stops both (as a crash would).
        tokio::join!(
            self.clone().keep(shutdown.clone()),
            self.clone().watch_kicks(shutdown.clone())
        );
        let lease = self.lease.swap(0, Ordering::SeqCst);
        if lease != 0 {
            let _ = self.store.revoke(lease).await;
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether another live node had this node's name when this one took its
    /// etcd lease (a configuration error, also logged).
    pub fn name_taken(&self) -> bool {
        self.name_taken.load(Ordering::Relaxed)
    }

    /// The etcd connection (round trips, reachability).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lease(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks session `stop.id` as stopped and tells the server to end it.
    fn stop(&self, stop: Stop) {
        if let Some(l) = self
            .local()
            .values_mut()
            .find(|l| l.record.id == stop.id && l.record.identity == stop.identity)
        {
            l.stopped.get_or_insert(stop.reason);
        }
        let _ = self.stops.send(stop);
    }

    /// Whether the session of `claim` has been asked to end (or lost its
    /// slot), and why: for a session that registered while the stop was on
    /// its way, so that no stop is lost between claim and registration.
    pub fn stopped(&self, claim: &Claim) -> Option<StopReason> {
        match self.local().get(claim.key()) {
            Some(l) if l.record.id == claim.id() => l.stopped,
            _ => Some(StopReason::Replaced),
        }
    }
}
