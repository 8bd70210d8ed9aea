//! The server: shared state (TLS config, policy, pool, router, registry) and
//! the accept loop. `serve` takes its listener, inside device and shutdown
//! token as parameters, so tests run it over loopback with a memory device.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};
use twoway_common::config_file::ConfigErrors;
use twoway_common::control::status::SessionStatus;
use twoway_common::inside::Inside;
use twoway_common::message::{self, Assignment, Bye, ByeReason, RefuseCode, Update};
use twoway_common::message::{FEATURE_OFFLOAD, FEATURE_UDP, FEATURE_UPDATE};
use twoway_common::outside::udp::keys::REKEY_AFTER;
use twoway_common::outside::udp::UdpSecret;
use twoway_common::outside::udp::{self, Role, UdpPath};
use twoway_common::queue;
use twoway_common::relay::UdpInput;
use twoway_common::relay::{self, Counters, RelayEnd, Updates};
use twoway_common::tls::{self, TlsError};

use crate::admission::{Admission, Limits as AdmissionLimits};
use crate::config::ServerConfig;
use crate::filter::SourceFilter;
use crate::handshakes::Handshakes;
use crate::leases::LeaseStore;
use crate::policy::{Duplicate, Grant, Policy};
use crate::pool::Pool;
use crate::registry::{Entry, Registry, Slot, Traffic, Unclaimed};
use crate::router::Router;
use crate::session::{Connected, Identified, SessionError};
use crate::stats::Stats;
use crate::udp::UdpEndpoint;

mod assign;
mod reload;

pub use reload::Reloaded;

/// How long shutdown waits for sessions to say Bye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a new session waits for the old session of the same identity to end.
const REPLACE_WAIT: Duration = Duration::from_secs(3);
/// The lease file is rewritten for a returning client (whose lease only gets a
/// new last-used time) only when the last write is this many seconds old.
const LEASE_REFRESH_SECS: u64 = 60;

/// Everything the sessions share.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    policy: RwLock<Arc<Policy>>,
    pool: Mutex<Pool>,
    leases: LeaseStore,
    /// When the lease file was last written (Unix seconds).
    leases_saved_at: AtomicU64,
    /// Address → session queue, fed by the inside reader.
    pub router: Router,
    /// Live sessions.
    pub registry: Registry,
    /// Connection outcomes and ended sessions' traffic.
    pub stats: Stats,
    handshakes: Handshakes,
    /// Serials on the CRL in force, to cut live sessions on reload.
    revoked: RwLock<Arc<HashSet<String>>>,
    /// Counts reloads, so a session set up across one re-checks itself.
    generation: AtomicU64,
    admission: Admission,
    /// The UDP endpoint, once `enable_udp` gave one.
    udp: std::sync::OnceLock<Arc<UdpEndpoint>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration or policy problems.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Certificates, key or CRL unusable.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The lease file could not be read.
    #[error("lease file {path}: {source}")]
    Leases {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn unix_now() -> u64 {
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
    /// Loads TLS material, policy and leases for `config`.
    pub fn new(config: ServerConfig) -> Result<Self, StartError> {
        let tls = tls::server_config(&config.tls_files())?;
        let policy = Policy::load(&config.policy, &config.tunnel)?;
        let mut pool = pool_for(&config, &policy);
        let leases = LeaseStore::new(&config.state.dir);
        let loaded = leases
            .load(unix_now())
            .map_err(|source| StartError::Leases {
                path: leases.path().display().to_string(),
                source,
            })?;
        if let Some((aside, why)) = &loaded.set_aside {
            tracing::error!(file = %leases.path().display(), moved_to = %aside.display(), reason = %why,
                "lease file is corrupt; set it aside and starting with no leases");
        }
        let dropped = pool.adopt(loaded.leases);
        if !dropped.is_empty() {
            warn!(identities = ?dropped, "dropped leases that no longer fit the pool or policy");
        }
        let l = &config.limits;
        let admission = Admission::new(AdmissionLimits {
            rate: f64::from(l.connections_per_source_per_sec),
            burst: f64::from(l.connection_burst_per_source),
            in_flight: l.handshakes_per_source,
        });
        Ok(Self {
            handshakes: Handshakes::new(config.limits.max_handshakes),
            revoked: RwLock::new(Arc::new(
                crate::revocation::revoked_serials(&config.tls.crl).unwrap_or_default(),
            )),
            generation: AtomicU64::new(0),
            admission,
            config,
            tls: RwLock::new(tls),
            policy: RwLock::new(Arc::new(policy)),
            pool: Mutex::new(pool),
            leases,
            leases_saved_at: AtomicU64::new(0),
            router: Router::default(),
            registry: Registry::default(),
            stats: Stats::default(),
            udp: std::sync::OnceLock::new(),
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

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn acceptor(&self) -> Arc<rustls::ServerConfig> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
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
                    if let Err(e) = server.router.read_inside(&*queue, mtu).await {
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
                async move { server.connection(tcp, remote, &*inside, shutdown).await }
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
        for reader in readers {
            reader.abort();
        }
    }

    async fn connection<I: Inside>(
        self: &Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        inside: &I,
        shutdown: CancellationToken,
    ) {
        let limit = Duration::from_secs(self.config.limits.handshake_timeout_secs.into());
        let connected = {
            let _ticket = match self.admission.admit(remote.ip(), std::time::Instant::now()) {
                Ok(t) => t,
                Err(reject) => {
                    self.stats.refused(reject.label());
                    return tracing::debug!(reason = reject.label(), "connection not admitted");
                }
            };
            let Some(slot) = self.handshakes.start(std::time::Instant::now()) else {
                self.stats.refused("too-many-handshakes");
                warn!("too many handshakes in progress; closing connection");
                return;
            };
            twoway_common::outside::tcp::tune::tune(&tcp, &self.config.tunnel.congestion);
            let handshake = async {
                // Until its peer speaks, a connection is the first to make room for others.
                let _ = tcp.peek(&mut [0u8; 1]).await;
                slot.spoke();
                Connected::accept(tcp, remote, self.acceptor(), limit).await
            };
            tokio::select! {
                c = tokio::time::timeout(limit, handshake) => c.unwrap_or(Err(SessionError::Timeout(limit))),
                () = slot.evicted() => {
                    self.stats.refused("evicted");
                    return tracing::debug!("handshake closed to make room for a newer connection");
                }
            }
        };
        let identified = match connected {
            Ok(c) => c.identify(self.config.identity.source).await,
            Err(e) => Err(e),
        };
        let identified = match identified {
            Ok(i) => i,
            Err(e) => return log_refusal(&self.stats, &e),
        };
        let span = info_span!("session", identity = %identified.identity, peer = %remote);
        self.session(identified, inside, shutdown)
            .instrument(span)
            .await;
    }

    async fn session<I: Inside>(
        self: &Arc<Self>,
        client: Identified,
        inside: &I,
        shutdown: CancellationToken,
    ) {
        let generation = self.generation.load(Ordering::SeqCst);
        let policy = self.policy();
        let Some(mut grant) = policy.grant(&client.identity) else {
            let message = format!("identity {:?} is not allowed by policy", client.identity);
            let e = client.refuse(RefuseCode::IdentityNotAllowed, message).await;
            return log_refusal(&self.stats, &e);
        };
        // Each session holds a slot: the identity itself, or `identity#N` for
        // extra devices. Holding it while the session lives is what keeps two
        // sessions off one address, however they race.
        let replaced = policy.duplicate == Duplicate::Replace
            && self.replace_older_sessions(&client.identity).await;
        let slots = match policy.duplicate {
            Duplicate::Allow => policy.max_per_identity,
            Duplicate::Replace | Duplicate::Refuse => 1,
        };
        let slot = match self
            .claim_slot(&client.identity, slots, policy.duplicate, replaced)
            .await
        {
            Ok(slot) => slot,
            Err(Unclaimed::AtLimit) => {
                let e = client
                    .refuse(RefuseCode::Busy, "server is at its session limit".into())
                    .await;
                return log_refusal(&self.stats, &e);
            }
            Err(Unclaimed::IdentityFull) => {
                let message = format!(
                    "identity {:?} already has the {slots} session(s) policy allows",
                    client.identity
                );
                return log_refusal(
                    &self.stats,
                    &client.refuse(RefuseCode::Duplicate, message).await,
                );
            }
        };
        let lease_key = slot.key().to_owned();
        if lease_key != client.identity {
            // Extra devices get their own pool address, remembered per slot.
            grant.address = None;
            grant.address6 = None;
        }
        let offload = inside.offload() && client.features.iter().any(|f| f == FEATURE_OFFLOAD);
        let mut assignment = match self.assignment(&lease_key, &grant, offload) {
            Ok(a) => a,
            Err((code, message)) => {
                return log_refusal(&self.stats, &client.refuse(code, message).await)
            }
        };
        // The UDP channel, when both ends want it: fresh secrets sent inside
        // this TLS session, a number the endpoint routes its datagrams by.
        // Without random secrets (the RNG failed) the session stays on TCP.
        let secret = self
            .udp
            .get()
            .filter(|_| client.features.iter().any(|f| f == FEATURE_UDP))
            .and_then(|_| {
                UdpSecret::generate(REKEY_AFTER).or_else(|| {
                    warn!("no random bytes for UDP keys; this session stays on TCP");
                    None
                })
            });
        let udp = match (self.udp.get(), secret) {
            (Some(endpoint), Some((secret, seal, open))) => {
                let (registration, input) = endpoint.register();
                let number = registration.number;
                assignment.features.push(FEATURE_UDP.to_owned());
                assignment.udp_session = Some(number);
                assignment.udp_secret = Some(secret);
                let path = UdpPath::new(endpoint.socket(), None)
                    .with_tcp(client.tcp_handle(&self.config.tunnel.congestion));
                let channel = relay::Udp {
                    path: Arc::new(path),
                    sender: udp::Sender::new(number, seal),
                    receiver: udp::Receiver::new(number, open),
                    input: UdpInput::Channel(input),
                    role: Role::Server,
                    clean_tcp: false,
                };
                Some((registration, channel))
            }
            _ => None,
        };
        let (_registration, udp) = match udp {
            Some((r, u)) => (Some(r), Some(u)),
            None => (None, None),
        };
        // A client that can take a changed grant live gets it pushed on
        // reload; any other is sent a Bye and reconnects, as before.
        let (update_tx, update_rx) = if client.features.iter().any(|f| f == FEATURE_UPDATE) {
            assignment.features.push(FEATURE_UPDATE.to_owned());
            let (tx, rx) = watch::channel(bytes::Bytes::new());
            (Some(tx), Updates::Send(rx))
        } else {
            (None, Updates::Off)
        };
        let id = self.registry.next_id();
        let l = &self.config.limits;
        let (queue_tx, mut queue_rx) = queue::channel(l.session_queue, l.session_queue_bytes);
        let (stop_tx, mut stop_rx) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let addresses: Vec<IpAddr> = [
            Some(assignment.address.ip()),
            assignment.address6.map(|a| a.ip()),
        ]
        .into_iter()
        .flatten()
        .collect();
        for a in &addresses {
            self.router.insert(*a, id, queue_tx.clone());
        }
        let filter = self.filter(&assignment, &grant);
        self.registry.insert(
            id,
            Entry {
                identity: client.identity.clone(),
                addresses: addresses.clone(),
                remote: client.remote,
                since: SystemTime::now(),
                serial: client.serial.clone(),
                grant: grant.clone(),
                extra_device: lease_key != client.identity,
                counters: counters.clone(),
                stop: stop_tx,
                update: update_tx,
                client_to_client: filter.client_to_client.clone(),
                udp: udp.as_ref().map(|u| u.path.clone()),
            },
        );
        if self.generation.load(Ordering::SeqCst) != generation {
            // A reload ran while this session was set up: its checks may have
            // missed it, so check now against what is in force (an Update
            // queued here follows the assignment).
            self.registry.with_entry(id, |e| {
                if let reload::Review::End(bye) = self.review(e) {
                    let _ = e.stop.try_send(bye);
                }
            });
        }
        let session = relay::Session {
            keepalive: self.config.keepalive.keepalive(),
            offload: assignment.features.iter().any(|f| f == FEATURE_OFFLOAD),
        };
        let end = match client.assign(assignment).await {
            Ok(assigned) => {
                self.stats
                    .sessions_started
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(address = %assigned.assignment.address.ip(), offload = session.offload, udp = assigned.assignment.udp_session.is_some(), "session up");
                let stop = async {
                    tokio::select! {
                        bye = stop_rx.recv() => bye.unwrap_or_else(|| Bye::new(ByeReason::Shutdown, "server is stopping")),
                        _ = shutdown.cancelled() => Bye::new(ByeReason::Shutdown, "server is stopping"),
                    }
                };
                Some(
                    assigned
                        .relay(
                            inside,
                            &mut queue_rx,
                            |p| filter.check(p),
                            &counters,
                            session,
                            udp,
                            update_rx,
                            stop,
                        )
                        .await,
                )
            }
            Err(e) => {
                warn!(error = %e, "could not send the assignment");
                None
            }
        };
        self.router.remove_session(id);
        self.registry.remove(id);
        self.stats.session_ended(&counters);
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
    }

    /// Claims a session slot; when replacing, waits briefly for the replaced
    /// session to let go of it.
    /// Claims a slot (see `Registry::claim_slot`). With `replace`, a slot of
    /// this identity still held by a session on its way out is waited for; a
    /// full server is waited on only when we `replaced` sessions, whose slots
    /// are about to come free.
    async fn claim_slot(
        &self,
        identity: &str,
        slots: usize,
        mode: Duplicate,
        replaced: bool,
    ) -> Result<Slot, Unclaimed> {
        let total = self.config.limits.max_sessions;
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        loop {
            let slot = self.registry.claim_slot(identity, slots, total);
            let wait = match slot {
                Ok(_) => false,
                Err(Unclaimed::IdentityFull) => mode == Duplicate::Replace,
                Err(Unclaimed::AtLimit) => replaced,
            };
            if !wait || tokio::time::Instant::now() >= deadline {
                return slot;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes older sessions of `identity` (a reconnecting laptop replaces its
    /// stale session) and waits until their addresses are free. Returns
    /// whether there were any.
    async fn replace_older_sessions(&self, identity: &str) -> bool {
        let bye = Bye::new(
            ByeReason::Replaced,
            "a newer session of this identity connected",
        );
        let old = self.registry.stop_where(|e| e.identity == identity, &bye);
        if old.is_empty() {
            return false;
        }
        info!(sessions = ?old, "replacing older session(s) of the same identity");
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        while old.iter().any(|id| self.registry.contains(*id))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Live sessions for status output.
    pub fn sessions(&self) -> Vec<SessionStatus> {
        self.registry.snapshot()
    }

    /// Traffic and drops of all sessions, live and ended, and of the device reader.
    pub fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        t.add(&self.stats.closed);
        t.add(&self.router.counters);
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

fn log_refusal(stats: &Stats, e: &SessionError) {
    match e {
        SessionError::Refused { code, .. } => stats.refused(&format!("refused-{}", code.as_str())),
        other => stats.refused(other.label()),
    }
    match e {
        SessionError::Refused { .. } => warn!(error = %e, "client refused"),
        _ => match refused_by_client(e) {
            Some(why) => {
                info!(error = %e, reason = e.label(), "connection closed before a session: {why}")
            }
            None => info!(error = %e, reason = e.label(), "connection closed before a session"),
        },
    }
}

/// The explanation of a handshake the client ended because it refused our
/// certificate, if that is what happened.
fn refused_by_client(e: &SessionError) -> Option<String> {
    let SessionError::Handshake(io) = e else {
        return None;
    };
    match twoway_common::tls::rustls_error(io)? {
        rustls::Error::AlertReceived(alert) => {
            twoway_common::tls::verify::alert_from_client(*alert)
        }
        _ => None,
    }
}
