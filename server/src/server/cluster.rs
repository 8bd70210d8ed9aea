//! Where a session meets the cluster (`[cluster]`): the slot claimed across
//! nodes, the pool address leased in etcd, the session registered for every
//! node's status, stops from other nodes, and cluster-wide status and kick.
//! Without a cluster each call does nothing and the single-server code
//! (registry slots, lease file) decides alone.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;
use twoway_common::control::status::{Carrier, SessionStatus};
use twoway_common::message::{Assignment, Bye, ByeReason, RefuseCode};

use super::Server;
use crate::cluster::{AddressError, Claim, ClaimError, Cluster, SessionRecord, Stop, StopReason};
use crate::policy::{Grant, Policy};
use crate::refusal::RefusalReason;
use crate::session::Identified;

/// What a refused session is told when etcd does not answer.
const UNREACHABLE: &str = "cluster store unreachable";

/// A refusal the cluster decided: what the client is told, and how metrics
/// count it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub reason: RefusalReason,
    pub code: RefuseCode,
    pub message: String,
}

impl Refused {
    fn with_code(code: RefuseCode, e: impl std::fmt::Display) -> Self {
        Self {
            reason: RefusalReason::Refused(code),
            code,
            message: e.to_string(),
        }
    }

    /// etcd did not answer: counted as `cluster-unreachable`.
    fn unreachable() -> Self {
        Self {
            reason: RefusalReason::ClusterUnreachable,
            code: RefuseCode::Busy,
            message: UNREACHABLE.into(),
        }
    }
}

impl Server {
    /// Makes this server a node of `cluster` and acts on the stops it sends
    /// until the channel closes.
    pub fn enable_cluster(
        self: &Arc<Self>,
        cluster: Arc<Cluster>,
        mut stops: mpsc::UnboundedReceiver<Stop>,
    ) {
        let _ = self.cluster.set(cluster);
        let server = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(stop) = stops.recv().await {
                let Some(server) = server.upgrade() else {
                    return;
                };
                server.stop_for_cluster(&stop);
            }
        });
    }

    /// The cluster, if this server is a node of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    fn stop_for_cluster(&self, stop: &Stop) {
        self.registry
            .stop_one(stop.id, &stop.identity, bye_for(stop.reason));
    }

    /// In a cluster, whether session `claim` was asked to end before it was
    /// registered (a kick or replace that found no session yet): the Bye to
    /// end it with.
    pub(crate) fn stopped_in_cluster(&self, claim: Option<&Claim>) -> Option<Bye> {
        let (Some(cluster), Some(claim)) = (self.cluster.get(), claim) else {
            return None;
        };
        cluster.stopped(claim).map(bye_for)
    }

    /// Claims session `id`'s slot across the cluster under the policy's
    /// duplicate rule; `None` without a cluster.
    pub(crate) async fn claim_in_cluster(
        &self,
        client: &Identified,
        id: u64,
        policy: &Policy,
        grant: &Grant,
    ) -> Result<Option<Claim>, Refused> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(None);
        };
        let claimed = cluster
            .claim(
                &client.identity,
                id,
                client.remote,
                policy.duplicate,
                policy.max_per_identity,
                grant.address.is_some(),
            )
            .await;
        match claimed {
            Ok(claim) => Ok(Some(claim)),
            Err(ClaimError::Unreachable(e)) => {
                warn!(error = %e, "refusing a pool client: {UNREACHABLE}");
                Err(Refused::unreachable())
            }
            Err(e @ ClaimError::Held { .. }) => Err(Refused::with_code(RefuseCode::Duplicate, e)),
        }
    }

    /// The pool address leased in etcd for the slot of `claim`, when the
    /// server is a node of a cluster and `grant` has no static address.
    pub(crate) async fn cluster_address(
        &self,
        claim: Option<&Claim>,
        grant: &Grant,
    ) -> Result<Option<std::net::Ipv4Addr>, Refused> {
        let (Some(cluster), Some(claim)) = (self.cluster.get(), claim) else {
            return Ok(None);
        };
        if grant.address.is_some() {
            return Ok(None);
        }
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let seen = claim.lease_seen().cloned();
        match cluster.address(claim.slot(), &pool, seen).await {
            Ok(a) => Ok(Some(a)),
            Err(AddressError::Unreachable(e)) => {
                warn!(error = %e, "refusing a pool client: {UNREACHABLE}");
                Err(Refused::unreachable())
            }
            Err(e @ AddressError::Contended(_)) => {
                warn!(error = %e, "refusing a pool client; it will try again");
                Err(Refused::with_code(RefuseCode::Busy, e))
            }
            Err(e @ AddressError::Exhausted(_)) => {
                Err(Refused::with_code(RefuseCode::PoolExhausted, e))
            }
        }
    }

    /// Writes the session's addresses to its cluster slot (`grant` says
    /// whether the IPv4 one is static or leased from the pool); `false` if
    /// another node took the slot meanwhile.
    pub(crate) async fn register_in_cluster(
        &self,
        claim: Option<&Claim>,
        assignment: &Assignment,
        grant: &Grant,
    ) -> bool {
        let (Some(cluster), Some(claim)) = (self.cluster.get(), claim) else {
            return true;
        };
        cluster
            .register(
                claim,
                assignment.address.ip(),
                assignment.address6.map(|a| a.ip().to_string()),
                grant.address.is_none(),
            )
            .await
    }

    /// Sessions for status: this server's, each with `node` in a cluster,
    /// and the other nodes' as etcd has them (without their counters).
    /// The second value says why other nodes' sessions are missing.
    pub async fn cluster_sessions(&self) -> (Vec<SessionStatus>, Option<String>) {
        let mut own = self.sessions();
        let Some(cluster) = self.cluster.get() else {
            return (own, None);
        };
        for s in &mut own {
            s.node = Some(cluster.node().to_owned());
        }
        match cluster.sessions().await {
            Ok(records) => {
                own.extend(
                    records
                        .into_iter()
                        .filter(|r| r.node != cluster.node())
                        .map(remote_status),
                );
                (own, None)
            }
            Err(e) => (own, Some(e.to_string())),
        }
    }

    /// Ends every session of `identity`, on any node; returns how many
    /// there were (this node's alone when etcd does not answer).
    pub async fn kick_everywhere(&self, identity: &str) -> Result<usize, String> {
        let local = self.kick(identity);
        let Some(cluster) = self.cluster.get() else {
            return Ok(local);
        };
        match cluster.kick(identity).await {
            Ok(n) => Ok(n.max(local)),
            Err(e) if local > 0 => {
                warn!(error = %e, "kicked this node's sessions only");
                Ok(local)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Another node's session in status output.
fn remote_status(r: SessionRecord) -> SessionStatus {
    SessionStatus {
        id: r.id,
        identity: r.identity,
        address: r.address,
        address6: r.address6,
        remote: r.remote,
        since: r.since,
        rx_bytes: 0,
        tx_bytes: 0,
        transport: Carrier::Tcp,
        udp_remote: None,
        node: Some(r.node),
    }
}

/// The Bye that ends a session the cluster stops.
fn bye_for(reason: StopReason) -> Bye {
    match reason {
        StopReason::Kicked => Bye::new(ByeReason::Kicked, "kicked by the operator"),
        StopReason::Replaced => Bye::new(
            ByeReason::Replaced,
            "a newer session of this identity connected",
        ),
        StopReason::AddressLost => Bye::new(
            ByeReason::PolicyChanged,
            "this session's address went to another client while the cluster store was unreachable; reconnect for a new one",
        ),
    }
}
