//! The connection to etcd: one client, a timeout on every call, a count of
//! round trips, and whether etcd answered lately. Callers see one error,
//! [`Unreachable`], for "etcd did not answer"; the server refuses what needs
//! etcd and carries on with what does not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, GetResponse, Identity, PutOptions, TlsOptions,
    Txn, TxnResponse,
};
use twoway_common::config_file::ConfigError;

use super::ClusterSection;

/// How long one etcd call may take before etcd counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// etcd did not answer (or answered with an error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster store unreachable: {0}")]
pub struct Unreachable(pub String);

/// The etcd client of this node.
pub struct Store {
    client: Client,
    round_trips: AtomicU64,
    reachable: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("round_trips", &self.round_trips())
            .field("reachable", &self.reachable())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A client for the endpoints of `section`. It connects lazily: an etcd
    /// that is down now is no reason not to start.
    pub async fn connect(
        section: &ClusterSection,
        config: &std::path::Path,
    ) -> Result<Self, ConfigError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            // HTTP/2 pings, so that a watch on a dead etcd ends instead of hanging.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &section.ca {
            let read = |key: &str, p: &std::path::Path| {
                std::fs::read(p).map_err(|e| {
                    ConfigError::invalid(config, key, format!("cannot read {}: {e}", p.display()))
                })
            };
            let mut tls =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read("cluster.ca", ca)?));
            if let (Some(cert), Some(key)) = (&section.cert, &section.key) {
                tls = tls.identity(Identity::from_pem(
                    read("cluster.cert", cert)?,
                    read("cluster.key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&section.etcd, Some(options))
            .await
            .map_err(|e| ConfigError::invalid(config, "cluster.etcd", e.to_string()))?;
        Ok(Self {
            client,
            round_trips: AtomicU64::new(0),
            reachable: AtomicBool::new(false),
        })
    }

    /// The etcd client (cheap to clone), for streams: watches, keep-alives.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Round trips to etcd so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Whether the last call reached etcd.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records the outcome of a call made outside this type (a stream).
    pub fn saw(&self, ok: bool) {
        self.reachable.store(ok, Ordering::Relaxed);
    }

    async fn call<T, F>(&self, f: F) -> Result<T, Unreachable>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(Unreachable(e.to_string())),
            Err(_) => Err(Unreachable(format!("no answer in {CALL_TIMEOUT:?}"))),
        };
        self.saw(outcome.is_ok());
        outcome
    }

    /// One key's value and modification revision, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, Unreachable> {
        let mut kv = self.client.kv_client();
        let r = self.call(kv.get(key, None)).await?;
        Ok(r.kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Every key under `prefix`.
    pub async fn get_prefix(&self, prefix: &str) -> Result<GetResponse, Unreachable> {
        let mut kv = self.client.kv_client();
        self.call(kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await
    }

    /// Writes `key`, attached to etcd lease `lease` (0: none).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), Unreachable> {
        let mut kv = self.client.kv_client();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.call(kv.put(key, value, options)).await.map(|_| ())
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Unreachable> {
        let mut kv = self.client.kv_client();
        self.call(kv.txn(txn)).await
    }

    /// A new etcd lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, Unreachable> {
        let mut lease = self.client.lease_client();
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.call(lease.grant(secs, None)).await.map(|r| r.id())
    }

    /// The seconds etcd lease `id` has left; -1 once it has expired.
    pub async fn time_to_live(&self, id: i64) -> Result<i64, Unreachable> {
        let mut lease = self.client.lease_client();
        self.call(lease.time_to_live(id, None))
            .await
            .map(|r| r.ttl())
    }

    /// Ends etcd lease `id` and so every key attached to it.
    pub async fn revoke(&self, id: i64) -> Result<(), Unreachable> {
        let mut lease = self.client.lease_client();
        self.call(lease.revoke(id)).await.map(|_| ())
    }
}
