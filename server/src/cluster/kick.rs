//! Kicks between nodes: a node that must end a session held by another
//! node writes `/twoway/kicks/<node>/<session id>` (under a short etcd lease
//! of its own, so a kick for a node that is gone does not linger); every node
//! watches its own prefix and ends the session as soon as the key appears.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::keys::{self, KickRecord, SessionRecord};
use super::{Cluster, Stop, StopReason, Unreachable};

/// How long an unanswered kick stays in etcd.
const KICK_TTL: Duration = Duration::from_secs(10);
/// Pause before the watch is opened again after etcd went away.
const RETRY: Duration = Duration::from_secs(1);

impl Cluster {
    /// Asks the node holding `record` to end it (`reason`: `kicked` or
    /// `replaced`).
    pub(super) async fn send_kick(
        &self,
        record: &SessionRecord,
        reason: &str,
    ) -> Result<(), Unreachable> {
        let lease = self.store.grant(KICK_TTL).await?;
        let kick = KickRecord {
            identity: record.identity.clone(),
            reason: reason.to_owned(),
        };
        let value = serde_json::to_vec(&kick).unwrap_or_default();
        self.store
            .put(&keys::kick(&record.node, record.id), value, lease)
            .await
    }

    /// Acts on one kick for this node and deletes it.
    async fn on_kick(&self, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let id = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
        let kick: Option<KickRecord> = serde_json::from_slice(kv.value()).ok();
        if let (Some(id), Some(kick)) = (id, kick) {
            let reason = if kick.reason == "replaced" {
                StopReason::Replaced
            } else {
                StopReason::Kicked
            };
            tracing::info!(session = id, identity = %kick.identity, reason = %kick.reason, "kick from the cluster");
            self.stop(Stop {
                id,
                identity: kick.identity,
                reason,
            });
        }
        let mut kv_client = self.store.client().kv_client();
        let _ = kv_client.delete(key, None).await;
    }

    /// Watches this node's kicks until `shutdown`; after each break (etcd
    /// gone) first handles the kicks that arrived meanwhile.
    pub(super) async fn watch_kicks(self: Arc<Self>, shutdown: CancellationToken) {
        let prefix = keys::kicks_for(&self.node);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.clone().watch_once(&prefix) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn watch_once(self: Arc<Self>, prefix: &str) {
        let mut client = self.store.client();
        let pending = match client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(r) => r,
            Err(_) => return self.store.saw(false),
        };
        let revision = pending.header().map_or(0, |h| h.revision());
        for kv in pending.kvs() {
            self.on_kick(kv).await;
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let Ok(mut stream) = client.watch(prefix, Some(options)).await else {
            return self.store.saw(false);
        };
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    for e in r.events() {
                        if let (EventType::Put, Some(kv)) = (e.event_type(), e.kv()) {
                            self.on_kick(kv).await;
                        }
                    }
                    if r.canceled() {
                        return;
                    }
                }
                _ => return self.store.saw(false),
            }
        }
    }
}
