//! The session slots of the cluster: claiming one under the policy's
//! duplicate rule (checked against every node), filling in what status
//! shows, and letting go at teardown. A slot is one etcd key, created only
//! if absent (compare-and-swap), under the node's etcd lease.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use twoway_common::control::timestamp::rfc3339;

use super::keys::{self, SessionRecord};
use super::{Cluster, Local, Unreachable};
use crate::policy::Duplicate;

/// How long a new session waits for a replaced one on another node to end
/// before it takes the slot over.
pub const REPLACE_WAIT: Duration = Duration::from_secs(3);

/// How often a replace that cannot watch reads the replaced session's key.
const POLL: Duration = Duration::from_millis(200);

/// A session's slot in the cluster; dropping it lets go of the slot.
#[derive(Debug)]
pub struct Claim {
    cluster: Arc<Cluster>,
    key: String,
    slot: String,
    id: u64,
    /// The slot's pool lease as the claiming transaction read it (saves
    /// [`Cluster::address`] a round trip); `None` if not read.
    lease_seen: Option<LeaseSeen>,
}

/// A pool lease record as read: its value and modification revision, or
/// `None` when there is none.
pub type LeaseSeen = Option<(Vec<u8>, i64)>;

impl Claim {
    /// The lease key of the slot: the identity, or identity U+0001 N for an
    /// extra device.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The slot's pool lease as read when the slot was claimed.
    pub fn lease_seen(&self) -> Option<&LeaseSeen> {
        self.lease_seen.as_ref()
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.cluster.release(&self.key, self.id);
    }
}

/// Why no slot was claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// etcd did not answer, and the client needs a pool address.
    #[error("{0}")]
    Unreachable(#[from] Unreachable),
    /// Every slot the policy allows is held by a live session somewhere.
    #[error(
        "identity {identity:?} already has the {slots} session(s) policy allows (on node {node})"
    )]
    Held {
        /// The identity.
        identity: String,
        /// How many it may hold.
        slots: usize,
        /// A node holding one.
        node: String,
    },
}

pub(super) fn record_of(value: &[u8]) -> Option<SessionRecord> {
    serde_json::from_slice(value).ok()
}

impl Cluster {
    /// Claims a slot for session `id` of `identity`: under `Replace` the
    /// identity's one slot, ending the session that holds it on whatever node;
    /// under `Refuse` the one slot if free; under `Allow` the first free of
    /// `max`. With `static_address` the session may go ahead while etcd is
    /// unreachable (its slot is written when etcd answers again).
    pub async fn claim(
        self: &Arc<Self>,
        identity: &str,
        id: u64,
        remote: SocketAddr,
        mode: Duplicate,
        max: usize,
        static_address: bool,
    ) -> Result<Claim, ClaimError> {
        let slots = if mode == Duplicate::Allow {
            max.max(1)
        } else {
            1
        };
        let record = |n: usize| SessionRecord {
            identity: identity.to_owned(),
            node: self.node.clone(),
            id,
            slot: keys::slot_key(identity, n),
            address: String::new(),
            address6: None,
            remote: remote.to_string(),
            since: rfc3339(SystemTime::now()),
        };
        let mut holder_node = String::new();
        for n in 1..=slots {
            let key = keys::session(identity, n);
            let mine = record(n);
            // A session of this node that etcd has not seen yet (written
            // back later) holds its slot too; under replace it is on its way out.
            if mode != Duplicate::Replace && self.local().contains_key(&key) {
                holder_node.clone_from(&self.node);
                continue;
            }
            let lease = self.lease();
            let outcome = match lease {
                0 => Err(Unreachable("no lease from etcd yet".into())),
                lease => self.create(&key, &mine, lease).await,
            };
            let held = match outcome {
                Ok(Ok((revision, seen))) => {
                    let mut claim = self.claimed(key, mine, revision, lease);
                    claim.lease_seen = Some(seen);
                    return Ok(claim);
                }
                Ok(Err(held)) => held,
                // Only slot 1 (the static address) may go ahead so, once on
                // this node: another slot gets a pool address, which needs etcd.
                Err(e) if static_address && n == 1 => match self.claimed_if_free(key, mine) {
                    Some(claim) => {
                        tracing::warn!(error = %e, "cluster store unreachable; admitting a static address on this node's word alone");
                        self.dirty.notify_one();
                        return Ok(claim);
                    }
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            };
            holder_node = held.0.node.clone();
            if mode == Duplicate::Replace {
                let revision = self.replace(&key, held, &mine, lease).await?;
                return Ok(self.claimed(key, mine, revision, lease));
            }
        }
        Err(ClaimError::Held {
            identity: identity.to_owned(),
            slots,
            node: holder_node,
        })
    }

    /// Records the claim of `key`, written at `revision` under `lease`.
    fn claimed(
        self: &Arc<Self>,
        key: String,
        record: SessionRecord,
        revision: i64,
        lease: i64,
    ) -> Claim {
        let claim = self.claim_of(&key, &record);
        let mut local = self.local();
        // Written under a lease since replaced: the keeper writes it again.
        let revision = if self.lease() == lease { revision } else { 0 };
        local.insert(key, Self::local_entry(record, revision));
        drop(local);
        if revision == 0 {
            self.dirty.notify_one();
        }
        claim
    }

    /// Claims `key` for `record` on this node's word alone (etcd away),
    /// unless a session of this node holds it: checked and taken under one lock.
    fn claimed_if_free(self: &Arc<Self>, key: String, record: SessionRecord) -> Option<Claim> {
        let mut local = self.local();
        let std::collections::btree_map::Entry::Vacant(free) = local.entry(key.clone()) else {
            return None;
        };
        let claim = self.claim_of(&key, &record);
        free.insert(Self::local_entry(record, 0));
        Some(claim)
    }

    fn local_entry(record: SessionRecord, revision: i64) -> Local {
        Local {
            record,
            revision,
            // The address, and whether it is leased, come with `register`.
            leased: None,
            stopped: None,
        }
    }

    fn claim_of(self: &Arc<Self>, key: &str, record: &SessionRecord) -> Claim {
        Claim {
            cluster: self.clone(),
            key: key.to_owned(),
            slot: record.slot.clone(),
            id: record.id,
            lease_seen: None,
        }
    }

    /// Writes `record` at `key` if the key is absent: `Ok` with its revision
    /// and the slot's pool lease read with it, or the record that holds it
    /// and its revision.
    pub(super) async fn create(
        &self,
        key: &str,
        record: &SessionRecord,
        lease: i64,
    ) -> Result<Result<(i64, LeaseSeen), (SessionRecord, i64)>, Unreachable> {
        let absent = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let r = self.put_session_if(key, record, lease, absent).await?;
        if r.succeeded() {
            let seen = r.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(g) => Some(
                    g.kvs()
                        .first()
                        .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                ),
                _ => None,
            });
            return Ok(Ok((r.header().map_or(0, |h| h.revision()), seen.flatten())));
        }
        for op in r.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    let holder = record_of(kv.value()).unwrap_or_else(|| SessionRecord {
                        identity: record.identity.clone(),
                        node: "?".into(),
                        id: 0,
                        slot: record.slot.clone(),
                        address: String::new(),
                        address6: None,
                        remote: String::new(),
                        since: String::new(),
                    });
                    return Ok(Err((holder, kv.mod_revision())));
                }
            }
        }
        // Deleted between the compare and the get: the caller tries again.
        Ok(Err((record.clone(), -1)))
    }

    /// Writes `record` at `key` under etcd lease `lease` if `when` holds,
    /// reading the slot's pool lease in the same round trip; otherwise the
    /// response holds a read of `key`.
    pub(super) async fn put_session_if(
        &self,
        key: &str,
        record: &SessionRecord,
        lease: i64,
        when: Vec<Compare>,
    ) -> Result<TxnResponse, Unreachable> {
        let value = serde_json::to_vec(record).unwrap_or_default();
        let txn = Txn::new()
            .when(when)
            .and_then([
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(keys::lease_identity(&record.slot), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        self.store.txn(txn).await
    }

    /// Ends the session that holds `key` (wherever it runs) and takes the
    /// slot: when it is gone, or after [`REPLACE_WAIT`] (its node may be
    /// dead, its lease not yet expired).
    async fn replace(
        &self,
        key: &str,
        (holder, revision): (SessionRecord, i64),
        mine: &SessionRecord,
        lease: i64,
    ) -> Result<i64, ClaimError> {
        if holder.node == self.node {
            // The local replace already told it to go; it lets go at teardown.
        } else if revision >= 0 {
            tracing::info!(node = %holder.node, session = holder.id, "replacing the session of this identity on another node");
            self.send_kick(&holder, "replaced").await?;
        }
        if revision >= 0 {
            self.wait_gone(key, revision).await;
        }
        let value = serde_json::to_vec(mine).unwrap_or_default();
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        // Taken over only if nobody else wrote it since (or it is gone).
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Less,
                revision.max(0) + 1,
            )])
            .and_then([put]);
        let r = self.store.txn(txn).await?;
        if r.succeeded() {
            return Ok(r.header().map_or(0, |h| h.revision()));
        }
        match self.create(key, mine, lease).await? {
            Ok((revision, _)) => Ok(revision),
            Err((holder, _)) => Err(ClaimError::Held {
                identity: mine.identity.clone(),
                slots: 1,
                node: holder.node,
            }),
        }
    }

    /// Waits, by a watch, until `key` is deleted or changed after
    /// `revision`, for at most [`REPLACE_WAIT`]. If the watch cannot run
    /// (etcd compacted that revision away, or the stream broke), it reads the
    /// key every [`POLL`] instead until then.
    async fn wait_gone(&self, key: &str, revision: i64) {
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        let mut client = self.store.client();
        let watch = async {
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let Ok(mut stream) = client.watch(key, Some(options)).await else {
                return false;
            };
            while let Ok(Some(r)) = stream.message().await {
                if r.events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return true;
                }
                if r.canceled() {
                    return false;
                }
            }
            false
        };
        if tokio::time::timeout_at(deadline, watch)
            .await
            .unwrap_or(true)
        {
            return;
        }
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.store.get(key)).await {
                Ok(Ok(Some((_, now)))) if now == revision => {}
                // Gone or rewritten.
                Ok(Ok(_)) => return,
                // etcd away: waiting is all there is.
                Ok(Err(_)) | Err(_) => {}
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + POLL).min(deadline)).await;
        }
    }

    /// Fills in the addresses of a claimed session, for status on every
    /// node; `leased` says the IPv4 address is a pool lease from
    /// [`Cluster::address`] (not a static one). `false` when the slot is no
    /// longer this session's (another node replaced it in between): the
    /// session must end.
    pub async fn register(
        &self,
        claim: &Claim,
        address: IpAddr,
        address6: Option<String>,
        leased: bool,
    ) -> bool {
        let (record, revision) = {
            let mut local = self.local();
            let Some(l) = local.get_mut(&claim.key).filter(|l| l.stopped.is_none()) else {
                return false;
            };
            l.record.address = address.to_string();
            l.record.address6 = address6;
            l.leased = match address {
                IpAddr::V4(a) if leased => Some(a),
                _ => None,
            };
            (l.record.clone(), l.revision)
        };
        let lease = self.lease();
        if revision == 0 || lease == 0 {
            // Written by the keeper once etcd answers.
            self.dirty.notify_one();
            return true;
        }
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                claim.key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(
                claim.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        match self.store.txn(txn).await {
            Ok(r) if r.succeeded() => {
                let mut local = self.local();
                // Unless a new lease came meanwhile (then it is written again under it).
                if let Some(l) = local.get_mut(&claim.key).filter(|_| self.lease() == lease) {
                    l.revision = r.header().map_or(revision, |h| h.revision());
                }
                true
            }
            Ok(_) => {
                self.local().remove(&claim.key);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register the session in the cluster store; will retry");
                if let Some(l) = self.local().get_mut(&claim.key) {
                    l.revision = 0;
                }
                self.dirty.notify_one();
                true
            }
        }
    }

    /// Lets go of session `id`'s slot at `key` (from [`Claim`]'s drop).
    fn release(&self, key: &str, id: u64) {
        let mut local = self.local();
        if local.get(key).is_some_and(|l| l.record.id == id) {
            let l = local.remove(key).expect("present");
            if l.revision != 0 {
                self.gone
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((key.to_owned(), l.revision));
                self.dirty.notify_one();
            }
        }
    }

    /// Every session of every node, as etcd has them.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>, Unreachable> {
        let r = self.store.get_prefix(&keys::sessions()).await?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| record_of(kv.value()))
            .collect())
    }

    /// Ends every session of `identity` in the cluster: this node's through
    /// the stop channel, other nodes' by a kick they watch for. Returns how
    /// many sessions it had.
    pub async fn kick(&self, identity: &str) -> Result<usize, Unreachable> {
        let r = self.store.get_prefix(&keys::sessions_of(identity)).await?;
        let records: Vec<SessionRecord> = r
            .kvs()
            .iter()
            .filter_map(|kv| record_of(kv.value()))
            .collect();
        for record in &records {
            if record.node == self.node {
                self.stop(super::Stop {
                    id: record.id,
                    identity: record.identity.clone(),
                    reason: super::StopReason::Kicked,
                });
            } else {
                self.send_kick(record, "kicked").await?;
            }
        }
        Ok(records.len())
    }
}
