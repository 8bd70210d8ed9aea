//! Register and teardown: a session enters the registry (its entry, and the
//! routes of its addresses to its queue) before its client hears of its
//! assignment, and leaves it when the relay ends; then its slot is freed.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::info;
use twoway_common::message::{Assignment, Bye, RefuseCode};
use twoway_common::queue::{self, QueueRx};
use twoway_common::relay::{self, Counters, RelayEnd, Updates};

use super::assign::Offer;
use super::{Identified, SessionError};
use crate::filter::SourceFilter;
use crate::registry::{Entry, Registry, Slot};
use crate::server::{review, Review, Server};
use crate::udp::Registration;

/// A session in the registry: what teardown undoes. Its fields drop in
/// this order also when a panic unwinds the session's task: the entry and
/// its routes first, the slot last.
#[derive(Debug)]
pub(super) struct Registered {
    entered: Entered,
    /// Its slot across the cluster's nodes, let go at teardown.
    cluster: Option<crate::cluster::Claim>,
    /// `[hooks]` for its addresses: up once the client has its assignment,
    /// down at teardown.
    pub hook: Option<crate::hooks::SessionHook>,
    slot: Slot,
    /// Its traffic counters, also in its registry entry.
    pub counters: Arc<Counters>,
    /// Its queue, which the router feeds with packets for its addresses.
    pub outbound: QueueRx,
    /// Its place at the UDP endpoint, if it has the UDP channel.
    _udp: Option<Registration>,
}

/// The session's entry in the registry; dropping it takes the entry and its
/// routes out (removing twice is harmless).
#[derive(Debug)]
struct Entered {
    registry: Registry,
    id: u64,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// What the relay needs: the connection, not yet told its assignment, and
/// the session's channels.
#[derive(Debug)]
pub(super) struct Link {
    /// The connection.
    pub client: Identified,
    /// What it will be sent.
    pub assignment: Assignment,
    /// The checks its packets pass.
    pub filter: SourceFilter,
    /// Where kick, reload and replacement send their Bye.
    pub stop: mpsc::Receiver<Bye>,
    /// Its end of the UDP channel.
    pub udp: Option<relay::Udp>,
    /// Grants pushed by a reload.
    pub updates: Updates,
}

/// In a cluster, writes the session's addresses to its slot there; refused
/// if another node took the slot meanwhile (a newer session of the identity).
pub(super) async fn announce(server: &Server, offer: Offer) -> Result<Offer, SessionError> {
    let claim = offer.claimed.cluster.as_ref();
    let grant = &offer.claimed.granted.grant;
    if server
        .register_in_cluster(claim, &offer.assignment, grant)
        .await
    {
        return Ok(offer);
    }
    let message = "a newer session of this identity took over".to_owned();
    Err(offer
        .claimed
        .granted
        .client
        .refuse(RefuseCode::Duplicate, message)
        .await)
}

/// Enters `offer` into the registry and routes its addresses to it. A reload
/// that swapped the configuration after the session was granted has not seen
/// it, so it is reviewed here against what is in force, under the registry's
/// lock (an Update queued here follows the assignment).
pub(super) fn register(server: &Server, offer: Offer) -> (Registered, Link) {
    let Offer {
        claimed,
        assignment,
        filter,
        udp,
        updates: (update, updates),
    } = offer;
    // The lease key decides, as in assign: in a cluster it is the cluster's slot.
    let extra_device = claimed.lease_key() != claimed.granted.client.identity;
    let granted = claimed.granted;
    let client = granted.client;
    let id = claimed.id;
    let l = &server.config.limits;
    let (queue_tx, outbound) = queue::channel(l.session_queue, l.session_queue_bytes);
    let (stop_tx, stop) = mpsc::channel(1);
    let counters = Arc::new(Counters::default());
    let addresses = assignment.addresses();
    let (registration, udp) = match udp {
        Some((r, u)) => (Some(r), Some(u)),
        None => (None, None),
    };
    let hook = server.hooks.session(&client.identity, &addresses);
    let entry = Entry {
        identity: client.identity.clone(),
        addresses,
        remote: client.remote,
        since: SystemTime::now(),
        serial: client.serial.clone(),
        extra_device,
        grant: granted.grant,
        counters: counters.clone(),
        stop: stop_tx,
        update,
        client_to_client: filter.client_to_client.clone(),
        udp: udp.as_ref().map(|u| u.path.clone()),
    };
    server.registry.insert(id, entry, queue_tx, |e| {
        let now = server.loaded.load();
        if !Arc::ptr_eq(&now, &granted.loaded) {
            if let Review::End(bye) = review(&now, e) {
                let _ = e.stop.try_send(bye);
            }
        }
        // A kick or replace from the cluster that came before this entry did.
        if let Some(bye) = server.stopped_in_cluster(claimed.cluster.as_ref()) {
            let _ = e.stop.try_send(bye);
        }
    });
    let registered = Registered {
        entered: Entered {
            registry: server.registry.clone(),
            id,
        },
        cluster: claimed.cluster,
        hook,
        slot: claimed.slot,
        counters,
        outbound,
        _udp: registration,
    };
    let link = Link {
        client,
        assignment,
        filter,
        stop,
        udp,
        updates,
    };
    (registered, link)
}

/// Takes the session out of the registry, adds its traffic to the totals,
/// says how it ended (`None`: it never got its assignment) and frees its
/// slot, last, so whoever waits for the slot finds its addresses free.
pub(super) fn teardown(server: &Server, registered: Registered, end: Option<RelayEnd>) {
    let Registered {
        entered,
        cluster,
        hook,
        slot,
        counters,
        outbound,
        _udp,
    } = registered;
    drop(entered);
    // Lets go of the slot in the cluster; the down hook runs for a session
    // whose up hook ran (it got its assignment).
    drop(cluster);
    if let (Some(hook), Some(_)) = (&hook, &end) {
        hook.down();
    }
    server.stats.session_ended(&counters);
    match end {
        Some(RelayEnd::PeerBye(bye)) => {
            info!(reason = ?bye.reason, message = %bye.message, "client said bye")
        }
        Some(RelayEnd::SentBye(bye)) => {
            info!(reason = ?bye.reason, message = %bye.message, "session closed by server")
        }
        Some(RelayEnd::Lost(e)) => info!(error = %e, "session lost"),
        None => {}
    }
    drop((outbound, _udp));
    drop(slot);
}
