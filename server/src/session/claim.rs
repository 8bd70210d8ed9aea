//! Claim: a session holds a slot for its whole life, the identity itself or
//! `identity#N` for extra devices, within the identity's share and the
//! server's session limit. Holding it is what keeps two sessions off one
//! address, however they race. Under `duplicate = "replace"` the older
//! sessions of the identity are closed first and their slots waited for.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;
use twoway_common::message::{Bye, ByeReason, RefuseCode};

use super::{Granted, SessionError};
use crate::policy::Duplicate;
use crate::registry::{Slot, Unclaimed};
use crate::server::Server;

/// How long a new session waits for the old session of the same identity to end.
const REPLACE_WAIT: Duration = Duration::from_secs(3);

/// A granted session that holds its slot.
#[derive(Debug)]
pub(super) struct Claimed {
    /// The session.
    pub granted: Granted,
    /// Its slot, the key of its pool lease; freed when dropped.
    pub slot: Slot,
    /// The session's number, given here: the cluster's slot names it.
    pub id: u64,
    /// Its slot across the cluster's nodes (`[cluster]` only).
    pub cluster: Option<crate::cluster::Claim>,
}

impl Claimed {
    /// The key its pool address is leased under: the slot (the identity,
    /// or `identity#N` for an extra device), the cluster's in a cluster.
    pub fn lease_key(&self) -> &str {
        self.cluster.as_ref().map_or(self.slot.key(), |c| c.slot())
    }
}

/// Claims a slot for `granted`, or refuses the client (busy, or its
/// identity holds every slot the policy allows).
pub(super) async fn claim(server: &Server, granted: Granted) -> Result<Claimed, SessionError> {
    let policy = &granted.loaded.policy;
    let mode = policy.duplicate;
    let identity = &granted.client.identity;
    let replaced = mode == Duplicate::Replace && replace_older(server, identity).await;
    let slots = match mode {
        Duplicate::Allow => policy.max_per_identity,
        Duplicate::Replace | Duplicate::Refuse => 1,
    };
    // When replacing, a slot still held by a session on its way out is
    // waited for; a full server only when sessions were replaced, whose
    // slots are about to come free.
    let wait = |why| match why {
        Unclaimed::IdentityFull => mode == Duplicate::Replace,
        Unclaimed::AtLimit => replaced,
    };
    let deadline = Instant::now() + REPLACE_WAIT;
    let total = server.config.limits.max_sessions;
    let claimed = server
        .registry
        .claim(identity, slots, total, wait, deadline)
        .await;
    let (code, message) = match claimed {
        Ok(slot) => {
            let id = server.registry.next_id();
            let cluster = server
                .claim_in_cluster(&granted.client, id, policy, &granted.grant)
                .await;
            return match cluster {
                Ok(cluster) => Ok(Claimed {
                    granted,
                    slot,
                    id,
                    cluster,
                }),
                Err(r) => Err(granted.client.refuse_as(r.reason, r.code, r.message).await),
            };
        }
        Err(Unclaimed::AtLimit) => (RefuseCode::Busy, "server is at its session limit".into()),
        Err(Unclaimed::IdentityFull) => (
            RefuseCode::Duplicate,
            format!("identity {identity:?} already has the {slots} session(s) policy allows"),
        ),
    };
    Err(granted.client.refuse(code, message).await)
}

/// Closes older sessions of `identity` (a reconnecting laptop replaces its
/// stale session) and waits until they are gone. Returns whether there
/// were any.
async fn replace_older(server: &Server, identity: &str) -> bool {
    let bye = Bye::new(
        ByeReason::Replaced,
        "a newer session of this identity connected",
    );
    let old = server.registry.stop_where(|e| e.identity == identity, &bye);
    if old.is_empty() {
        return false;
    }
    info!(sessions = ?old, "replacing older session(s) of the same identity");
    server
        .registry
        .wait_gone(&old, Instant::now() + REPLACE_WAIT)
        .await;
    true
}
