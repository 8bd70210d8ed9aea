//! The server: shared state (the reloadable configuration, pool, leases,
//! live sessions, limits) and the accept loop. `serve` takes its listener,
//! inside device and shutdown token as parameters, so tests run it over
//! loopback with a memory device. Each accepted connection goes down the
//! session pipeline (`crate::session`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, warn, Instrument};
use twoway_common::control::status::SessionStatus;
use twoway_common::inside::Inside;
use twoway_common::message::{Bye, ByeReason};

use crate::config::ServerConfig;
use crate::leases::LeaseStore;
use crate::limits::Limits;
use crate::loaded::{LoadError, Loaded};
use crate::policy::Policy;
use crate::pool::Pool;
use crate::registry::{Registry, Traffic};
use crate::stats::Stats;
use crate::udp::UdpEndpoint;

mod cluster;
mod reload;

pub use reload::Reloaded;
pub(crate) use reload::{pushed, review, Review};

/// How long shutdown waits for sessions to say Bye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping server waits for the last session hooks.
const HOOKS_GRACE: Duration = Duration::from_secs(8);

/// Everything the sessions share.
#[derive(Debug)]
pub struct Server {
    pub(crate) config: ServerConfig,
    /// TLS acceptor, policy and revoked serials in force, swapped as one on reload.
    pub(crate) loaded: ArcSwap<Loaded>,
    pub(crate) pool: Mutex<Pool>,
    pub(crate) leases: LeaseStore,
    /// When the lease file was last written (Unix seconds).
    pub(crate) leases_saved_at: AtomicU64,
    /// Live sessions, their slots and the routes to them.
    pub registry: Registry,
    /// Connection outcomes and ended sessions' traffic.
    pub stats: Stats,
    /// Limits on connections before they are sessions.
    pub(crate) limits: Limits,
    /// The UDP endpoint, once `enable_udp` gave one.
    udp: OnceLock<Arc<UdpEndpoint>>,
    /// `[hooks] session_up` and `session_down`.
    pub(crate) hooks: Arc<crate::hooks::SessionHooks>,
    /// The cluster, once `enable_cluster` gave one (`[cluster]`).
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Policy, certificates, key or CRL unusable.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The lease file could not be read.
    #[error("lease file {path}: {source}")]
    Leases {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn pool_for(config: &ServerConfig, policy: &Policy) -> Pool {
    let t = &config.tunnel;
    let reserved = [
        t.network.network(),
        t.network.broadcast(),
        t.server_address(),
    ]
    .into_iter()
    .chain(policy.static_addresses());
    Pool::new(t.pool, reserved)
}

impl Server {
    /// Loads TLS material, policy, CRL and leases for `config`.
    pub fn new(config: ServerConfig) -> Result<Self, StartError> {
        let loaded = Loaded::read(&config)?;
        let mut pool = pool_for(&config, &loaded.policy);
        let leases = LeaseStore::new(&config.state.dir);
        let stored = leases
            .load(unix_now())
            .map_err(|source| StartError::Leases {
                path: leases.path().display().to_string(),
                source,
            })?;
        if let Some((aside, why)) = &stored.set_aside {
            tracing::error!(file = %leases.path().display(), moved_to = %aside.display(), reason = %why,
                "lease file is corrupt; set it aside and starting with no leases");
        }
        let dropped = pool.adopt(stored.leases);
        if !dropped.is_empty() {
            warn!(identities = ?dropped, "dropped leases that no longer fit the pool or policy");
        }
        let hooks =
            crate::hooks::SessionHooks::new(config.hooks.clone(), config.cluster.node.clone());
        Ok(Self {
            hooks,
            cluster: OnceLock::new(),
            limits: Limits::new(&config.limits),
            loaded: ArcSwap::from_pointee(loaded),
            config,
            pool: Mutex::new(pool),
            leases,
            leases_saved_at: AtomicU64::new(0),
            registry: Registry::default(),
            stats: Stats::default(),
            udp: OnceLock::new(),
        })
    }

    /// Offers the UDP data channel through `endpoint` to clients that ask
    /// for it (`tunnel.transport = "auto"`); the caller runs the endpoint.
    pub fn enable_udp(&self, endpoint: Arc<UdpEndpoint>) {
        let _ = self.udp.set(endpoint);
    }

    /// The UDP endpoint, if enabled.
    pub fn udp(&self) -> Option<&Arc<UdpEndpoint>> {
        self.udp.get()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Accepts clients on `listener` and relays their packets through `inside`
    /// until `shutdown` is cancelled; then every session gets a Bye.
    pub async fn serve<I: Inside>(
        self: Arc<Self>,
        listener: TcpListener,
        inside: Arc<I>,
        shutdown: CancellationToken,
    ) {
        self.serve_queues(listener, vec![inside], shutdown).await;
    }

    /// Like [`Server::serve`] with a multi-queue device: one reader per queue
    /// (the kernel spreads flows over the queues, so the cores share the
    /// reading), and each session writes through one queue.
    pub async fn serve_queues<I: Inside>(
        self: Arc<Self>,
        listener: TcpListener,
        queues: Vec<Arc<I>>,
        shutdown: CancellationToken,
    ) {
        let tracker = TaskTracker::new();
        let readers: Vec<_> = queues
            .iter()
            .map(|queue| {
                let server = self.clone();
                let queue = queue.clone();
                let mtu = self.config.tunnel.mtu;
                tokio::spawn(async move {
                    if let Err(e) = server.registry.router().read_inside(&*queue, mtu).await {
                        tracing::error!(error = %e, "reading the tunnel device failed");
                    }
                })
            })
            .collect();
        let mut next_queue = 0usize;
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let server = self.clone();
            let inside = queues[next_queue % queues.len()].clone();
            next_queue = next_queue.wrapping_add(1);
            let shutdown = shutdown.clone();
            tracker.spawn(
                async move { crate::session::run(&server, tcp, remote, &*inside, shutdown).await }
                    .instrument(info_span!("conn", peer = %remote)),
            );
        }
        drop(listener);
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some sessions did not close in time");
        }
        // Their session_down hooks (routes withdrawn) run before the server exits.
        self.hooks.finish(HOOKS_GRACE).await;
        for reader in readers {
            reader.abort();
        }
    }

    /// Live sessions for status output.
    pub fn sessions(&self) -> Vec<SessionStatus> {
        self.registry.snapshot()
    }

    /// Traffic and drops of all sessions, live and ended, and of the device reader.
    pub fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        t.add(&self.stats.closed);
        t.add(&self.registry.router().counters);
        self.registry.add_traffic(&mut t);
        t
    }

    /// Ends every session of `identity` with a Bye; returns how many.
    pub fn kick(&self, identity: &str) -> usize {
        let bye = Bye::new(ByeReason::Kicked, "kicked by the operator");
        self.registry
            .stop_where(|e| e.identity == identity, &bye)
            .len()
    }
}
