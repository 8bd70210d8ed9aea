//! The node's etcd lease and catch-up: keeps the lease alive, and whenever
//! etcd answers writes what it missed: sessions claimed while it was
//! unreachable, and deletions of sessions that ended meanwhile. A lease that
//! expired (etcd away longer than its TTL) is replaced by a new one and every
//! live session of this node is written again under it; a slot that another
//! node took meanwhile ends this node's session instead (never two holders).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio_util::sync::CancellationToken;

use super::{Cluster, Stop, StopReason};

/// Pause between attempts while etcd does not answer.
const RETRY: Duration = Duration::from_secs(1);

impl Cluster {
    /// Runs until `shutdown`.
    pub(super) async fn keep(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.ttl / 3).max(Duration::from_millis(500));
        let mut keepalive = None;
        loop {
            if self.lease() == 0 {
                match self.store.grant(self.ttl).await {
                    Ok(id) => {
                        tracing::info!(lease = id, node = %self.node, "cluster lease granted");
                        self.lease.store(id, Ordering::SeqCst);
                        keepalive = None;
                        self.mark_all_unwritten();
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
            if keepalive.is_none() {
                let mut client = self.store.client();
                keepalive = client.lease_keep_alive(lease).await.ok();
            }
            let alive = match keepalive.as_mut() {
                Some((keeper, stream)) => {
                    let sent = keeper.keep_alive().await.is_ok();
                    match tokio::time::timeout(super::store::CALL_TIMEOUT, stream.message()).await {
                        Ok(Ok(Some(r))) if sent => Some(r.ttl() > 0),
                        _ => None,
                    }
                }
                None => None,
            };
            match alive {
                Some(true) => {
                    self.store.saw(true);
                    self.catch_up(lease).await;
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
                () = self.dirty.notified(), if alive.is_some() => {}
            }
        }
    }

    /// After a new lease: every local session must be written again.
    fn mark_all_unwritten(&self) {
        for l in self.local().values_mut() {
            l.revision = 0;
        }
        // The old lease took the ended sessions' keys with it, or will.
        self.gone.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Deletes the keys of ended sessions and writes the sessions etcd lacks.
    async fn catch_up(&self, lease: i64) {
        let gone = std::mem::take(&mut *self.gone.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, (key, revision)) in gone.iter().enumerate() {
            // Only if it is still ours: another node may have replaced it.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    *revision,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            if self.store.txn(txn).await.is_err() {
                self.gone
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(gone[i..].iter().cloned());
                return;
            }
        }
        let unwritten: Vec<(String, super::Local)> = self
            .local()
            .iter()
            .filter(|(_, l)| l.revision == 0)
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        for (key, l) in unwritten {
            let written = match self.create(&key, &l.record, lease).await {
                Err(_) => return,
                Ok(Ok(revision)) => Some(revision),
                Ok(Err((holder, _))) if holder.node == self.node && holder.id == l.record.id => {
                    // Ours already (the lease survived): refresh it.
                    let value = serde_json::to_vec(&l.record).unwrap_or_default();
                    let txn = Txn::new().and_then([TxnOp::put(
                        key.as_str(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                    match self.store.txn(txn).await {
                        Ok(r) => r.header().map(|h| h.revision()),
                        Err(_) => return,
                    }
                }
                Ok(Err(holder)) => {
                    tracing::warn!(identity = %l.record.identity, node = %holder.0.node,
                        "another node took this session's slot while etcd was unreachable; ending it here");
                    None
                }
            };
            let mut local = self.local();
            match written {
                Some(revision) => {
                    match local.get_mut(&key).filter(|e| e.record.id == l.record.id) {
                        Some(entry) => entry.revision = revision,
                        // It ended while we wrote it.
                        None => self
                            .gone
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((key, revision)),
                    }
                }
                None => {
                    local.remove(&key);
                    drop(local);
                    self.stop(Stop {
                        id: l.record.id,
                        identity: l.record.identity.clone(),
                        reason: StopReason::Replaced,
                    });
                }
            }
        }
    }
}
