//! The node's etcd lease and catch-up: keeps the lease alive, and, beside
//! it, whenever etcd answers writes what it missed: sessions claimed while it
//! was unreachable, and deletions of sessions that ended meanwhile. A lease
//! that expired (etcd away longer than its TTL) is replaced by a new one and
//! every live session of this node is written again under it; a slot that
//! another node took meanwhile, or a pool address that another node gave to
//! another identity meanwhile, ends this node's session instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio_util::sync::CancellationToken;

use super::keys::{self, SessionRecord};
use super::sessions::record_of;
use super::store::CALL_TIMEOUT;
use super::{Cluster, Local, Stop, StopReason, Unreachable};

/// Pause between attempts while etcd does not answer.
const RETRY: Duration = Duration::from_secs(1);

/// Ended sessions' keys deleted in one transaction at most (etcd allows
/// 128 operations in one by default).
const DELETE_BATCH: usize = 64;

/// A lease's keep-alive stream.
type KeepAlive = (LeaseKeeper, LeaseKeepAliveStream);

/// What writing a session's key again found.
enum Rewritten {
    /// Written, at this revision.
    Written(i64),
    /// The key holds this very session already (the lease survived), at
    /// this revision.
    Ours(i64),
    /// Another session holds the slot.
    Held(SessionRecord),
    /// The slot is free, but the session's pool address is leased to
    /// another lease key now: the session cannot keep it.
    AddressLost,
}

impl Cluster {
    /// Runs until `shutdown`: the lease's keep-alive and the write-back of
    /// what etcd missed, side by side (a long catch-up never delays the
    /// keep-alive).
    pub(super) async fn keep(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::join!(
            self.clone().keep_lease(shutdown.clone()),
            self.write_back(shutdown)
        );
    }

    /// Keeps the node's etcd lease alive; takes a new one when it expired.
    async fn keep_lease(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.ttl / 3).max(Duration::from_millis(500));
        let mut keepalive = None;
        loop {
            if self.lease() == 0 {
                match self.store.grant(self.ttl).await {
                    Ok(id) => {
                        tracing::info!(lease = id, node = %self.node, "cluster lease granted");
                        keepalive = None;
                        self.take_lease(id);
                        self.take_name(id).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no cluster lease; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(RETRY) => {}
                        }
                        continue;
                    }
                }
            }
            let lease = self.lease();
            let alive = self.renew(lease, &mut keepalive).await;
            match alive {
                Some(true) => {
                    self.store.saw(true);
                    // etcd answers: whatever it missed can be written now.
                    self.dirty.notify_one();
                }
                Some(false) => {
                    tracing::warn!(lease, "the cluster lease expired while etcd was unreachable; taking a new one and registering this node's sessions again");
                    self.lease.store(0, Ordering::SeqCst);
                    continue;
                }
                None => {
                    self.store.saw(false);
                    keepalive = None;
                }
            }
            let wait = if alive.is_some() { period } else { RETRY };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One keep-alive of `lease`: `Some(true)` renewed, `Some(false)` the
    /// lease has expired, `None` etcd did not answer.
    async fn renew(&self, lease: i64, keepalive: &mut Option<KeepAlive>) -> Option<bool> {
        if keepalive.is_none() {
            let mut client = self.store.client();
            let opened = client.lease_keep_alive(lease);
            match tokio::time::timeout(CALL_TIMEOUT, opened).await {
                Ok(Ok(k)) => *keepalive = Some(k),
                // etcd-client will not open a keep-alive for an expired
                // lease (an error like any other): ask etcd about the lease.
                _ => {
                    return match self.store.time_to_live(lease).await {
                        // -1: no such lease (0 is a live lease in its last second).
                        Ok(ttl) if ttl < 0 => Some(false),
                        _ => None,
                    };
                }
            }
        }
        let (keeper, stream) = keepalive.as_mut()?;
        let sent = keeper.keep_alive().await.is_ok();
        match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(r))) if sent => Some(r.ttl() > 0),
            _ => None,
        }
    }

    /// Writes what etcd missed whenever something changed, and after every
    /// renewal of the lease (which is also how a catch-up that etcd cut
    /// short is tried again).
    async fn write_back(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let lease = self.lease();
            if lease != 0 {
                self.catch_up(lease).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.dirty.notified() => {}
            }
        }
    }

    /// Makes `id` the node's lease: every local session must be written again.
    /// Under the lock of the local sessions, so that a write under the old
    /// lease that finishes later cannot mark a session written (writers
    /// check the lease under the same lock).
    fn take_lease(&self, id: i64) {
        let mut local = self.local();
        self.lease.store(id, Ordering::SeqCst);
        for l in local.values_mut() {
            l.revision = 0;
        }
        drop(local);
        // The old lease took the ended sessions' keys with it, or will.
        self.gone.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Holds this node's name under lease `id`; another live node holding it
    /// is a configuration error (kicks and sessions would be mixed up): logged
    /// as one, and reported by [`Cluster::name_taken`].
    async fn take_name(&self, id: i64) {
        let key = keys::node(&self.node);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                id.to_string(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let Ok(r) = self.store.txn(txn).await else {
            return; // etcd away again: the next lease tries again
        };
        let taken = !r.succeeded();
        self.name_taken.store(taken, Ordering::Relaxed);
        if taken {
            tracing::error!(node = %self.node,
                "another live node has this name ([cluster] node must be unique); kicks and status will mix the two up");
        }
    }

    /// Deletes the keys of ended sessions and writes the sessions etcd lacks.
    async fn catch_up(&self, lease: i64) {
        let gone = std::mem::take(&mut *self.gone.lock().unwrap_or_else(|e| e.into_inner()));
        for (n, chunk) in gone.chunks(DELETE_BATCH).enumerate() {
            if self.delete_ours(chunk).await.is_err() {
                self.gone
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(gone[n * DELETE_BATCH..].iter().cloned());
                return;
            }
        }
        let unwritten: Vec<(String, Local)> = self
            .local()
            .iter()
            .filter(|(_, l)| l.revision == 0)
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        for (key, l) in unwritten {
            let Ok(outcome) = self.rewrite(&key, &l, lease).await else {
                return;
            };
            let revision = match outcome {
                Rewritten::Written(revision) => revision,
                Rewritten::Ours(seen) => {
                    // Ours already (the lease survived): refresh it under this
                    // lease, unless it changed since (then the next round looks again).
                    let unchanged =
                        vec![Compare::mod_revision(key.as_str(), CompareOp::Equal, seen)];
                    match self.put_session_if(&key, &l.record, lease, unchanged).await {
                        Ok(r) if r.succeeded() => r.header().map_or(0, |h| h.revision()),
                        Ok(_) => continue,
                        Err(_) => return,
                    }
                }
                Rewritten::Held(holder) => {
                    tracing::warn!(identity = %l.record.identity, node = %holder.node,
                        "another node took this session's slot while etcd was unreachable; ending it here");
                    self.end(&key, &l, StopReason::Replaced);
                    continue;
                }
                Rewritten::AddressLost => {
                    tracing::warn!(identity = %l.record.identity, address = %l.record.address,
                        "this session's address went to another identity while etcd was unreachable; ending it here (the client reconnects)");
                    self.end(&key, &l, StopReason::AddressLost);
                    continue;
                }
            };
            let mut local = self.local();
            if self.lease() != lease {
                // A new lease since: the write dies with the old one.
                continue;
            }
            match local.get_mut(&key).filter(|e| e.record.id == l.record.id) {
                // As written: done.
                Some(entry) if entry.record == l.record && entry.leased == l.leased => {
                    entry.revision = revision;
                }
                // Registered meanwhile: written again next round, with its address.
                Some(_) => self.dirty.notify_one(),
                // It ended while we wrote it.
                None => {
                    self.gone
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((key, revision));
                    self.dirty.notify_one();
                }
            }
        }
    }

    /// Deletes the session keys of `gone` that still hold what this node
    /// wrote (another node may have replaced one since): all in one
    /// transaction, or, when one of them changed, each in its own.
    async fn delete_ours(&self, gone: &[(String, i64)]) -> Result<(), Unreachable> {
        let txn = |keys: &[(String, i64)]| {
            let (when, ops): (Vec<Compare>, Vec<TxnOp>) = keys
                .iter()
                .map(|(key, revision)| {
                    (
                        Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision),
                        TxnOp::delete(key.as_str(), None),
                    )
                })
                .unzip();
            Txn::new().when(when).and_then(ops)
        };
        if self.store.txn(txn(gone)).await?.succeeded() || gone.len() == 1 {
            return Ok(());
        }
        for one in gone.chunks(1) {
            self.store.txn(txn(one)).await?;
        }
        Ok(())
    }

    /// Forgets session `l` at `key` (if it is still there) and has it end.
    fn end(&self, key: &str, l: &Local, reason: StopReason) {
        {
            let mut local = self.local();
            if local.get(key).is_some_and(|e| e.record.id == l.record.id) {
                local.remove(key);
            }
        }
        self.stop(Stop {
            id: l.record.id,
            identity: l.record.identity.clone(),
            reason,
        });
    }

    /// Writes session `l` at `key` again (after etcd was away): only if the
    /// key is absent and, for a pool address, the address is still leased to
    /// the session's lease key; another node may have reclaimed it once this
    /// node's sessions had expired.
    async fn rewrite(&self, key: &str, l: &Local, lease: i64) -> Result<Rewritten, Unreachable> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        if let Some(a) = l.leased {
            let slot = l.record.slot.as_str();
            when.push(Compare::value(
                keys::lease_address(a),
                CompareOp::Equal,
                slot,
            ));
        }
        let r = self.put_session_if(key, &l.record, lease, when).await?;
        if r.succeeded() {
            return Ok(Rewritten::Written(r.header().map_or(0, |h| h.revision())));
        }
        let holder = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (record_of(kv.value()), kv.mod_revision())),
            _ => None,
        });
        Ok(match holder {
            Some((Some(h), seen)) if h.node == self.node && h.id == l.record.id => {
                Rewritten::Ours(seen)
            }
            Some((Some(h), _)) => Rewritten::Held(h),
            Some((None, _)) => Rewritten::Held(SessionRecord {
                node: "?".into(),
                ..l.record.clone()
            }),
            // The slot is free (read in the same transaction), so the
            // address compare failed.
            None => Rewritten::AddressLost,
        })
    }
}
