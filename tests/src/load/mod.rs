//! A load generator: many concurrent mutual-TLS sessions against a twoway
//! server, without TUN devices. Each session is a real client connection
//! (TCP, TLS 1.3 with a client certificate, hello, assignment) relayed with
//! `relay::relay` through an in-memory device that only counts what arrives:
//! it answers the server's pings and sends an ICMP echo request to the
//! server's tunnel address now and then, counting the replies.
//!
//! Two measurements: [`sessions`] opens N sessions (at most C handshakes at
//! once), holds them idle, then with echo traffic, and reports how many were
//! established, held and lost; [`handshakes`] does M complete handshakes
//! (connect, TLS, hello, assignment, Bye, close) as fast as C workers can.
//! `twoway-load` (src/bin) is the command-line front end; scripts/load.sh runs
//! it against a real server in a network namespace.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use twoway_client::config::ClientConfig;
use twoway_client::connect::{connect, Connection};
use twoway_client::error::{
    ClientError, ConnectError, EXIT_AUTH, EXIT_CONFIG, EXIT_PRIVILEGE, EXIT_UNREACHABLE,
};
use twoway_common::inside::Inside;
use twoway_common::message::{Bye, ByeReason};
use twoway_common::outside::tcp::record::frame::FrameType;
use twoway_common::queue;
use twoway_common::relay::{self, Counters, Keepalive, RelayEnd};

pub mod icmp;
pub mod mint;

/// The ramp-up is given up after this long.
const RAMP_LIMIT: Duration = Duration::from_secs(120);

/// How long replies to the last echo requests are waited for.
const REPLY_WAIT: Duration = Duration::from_secs(1);

/// One client identity: its config and TLS setup, shared by its sessions.
#[derive(Clone)]
pub struct Client {
    /// The client config (offload is switched off: the memory device has none).
    pub config: ClientConfig,
    /// TLS client config with the identity's certificate.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config.path)
            .finish()
    }
}

impl Client {
    /// Loads a client config (as `pki issue` writes it); `server` overrides
    /// the server address in it.
    pub fn load(path: &Path, server: Option<&str>) -> anyhow::Result<Self> {
        let mut config = ClientConfig::load(path)?;
        if let Some(s) = server {
            config.server = s.to_owned();
        }
        config.tunnel.offload = false;
        let tls = twoway_client::credentials::load(&config)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .tls;
        Ok(Self { config, tls })
    }
}

/// What [`sessions`] does.
#[derive(Debug, Clone)]
pub struct SessionsOptions {
    /// Sessions to open; session `i` uses client `i % clients.len()`.
    pub sessions: usize,
    /// Handshakes in flight at once during the ramp-up.
    pub concurrency: usize,
    /// How long the sessions are held idle (keepalives only) after the ramp-up.
    pub idle: Duration,
    /// How long they are then held with echo traffic.
    pub hold: Duration,
    /// Each session sends one echo request this often during `hold`.
    pub echo_interval: Duration,
    /// Written with the phase name (`idle`, `active`, `done`) as each begins,
    /// so that a script can measure the server meanwhile.
    pub phase_file: Option<PathBuf>,
}

/// What [`handshakes`] does.
#[derive(Debug, Clone)]
pub struct HandshakesOptions {
    /// Complete handshakes to do; handshake `i` uses client `i % clients.len()`.
    pub handshakes: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

/// Errors counted by kind, with the first message of each kind.
#[derive(Debug, Default)]
struct Errors(Mutex<BTreeMap<String, (u64, String)>>);

impl Errors {
    fn add(&self, kind: &str, message: String) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(kind.to_owned()).or_insert((0, message));
        e.0 += 1;
    }

    fn count(&self) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.values().map(|(n, _)| n).sum()
    }

    fn to_json(&self) -> Value {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(k, (n, example))| (k.clone(), json!({ "count": n, "example": example })))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

fn client_error_kind(e: &ClientError) -> &'static str {
    match (e, e.exit_code()) {
        (
            ClientError::Connect {
                source: ConnectError::TimedOut { .. },
            },
            _,
        ) => "timeout",
        (
            ClientError::Connect {
                source: ConnectError::Refused(_),
            },
            EXIT_UNREACHABLE,
        ) => "refused",
        (_, EXIT_CONFIG) => "config",
        (_, EXIT_AUTH) => "auth",
        (_, EXIT_UNREACHABLE) => "unreachable",
        (_, EXIT_PRIVILEGE) => "privilege",
        _ => "internal",
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency_json(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50": round3(percentile(&ms, 0.5)),
        "p99": round3(percentile(&ms, 0.99)),
        "max": round3(ms.last().copied().unwrap_or_default()),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    (n as f64 / d.as_secs_f64()).round()
}

async fn timed_connect(client: &Client) -> (Result<Connection, ClientError>, f64) {
    let t = Instant::now();
    let r = connect(&client.config, client.tls.clone()).await;
    (r, t.elapsed().as_secs_f64() * 1000.0)
}

/// The memory device of one load session: never yields a packet (the
/// session's own traffic is queued directly), counts echo replies to `me`.
#[derive(Debug)]
struct EchoCounter {
    me: Ipv4Addr,
    replies: AtomicU64,
    other: AtomicU64,
}

impl Inside for EchoCounter {
    async fn recv(&self, _buf: &mut [u8]) -> io::Result<usize> {
        std::future::pending().await
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        if icmp::is_echo_reply_to(packet, self.me) {
            self.replies.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Shared state of a [`sessions`] run.
#[derive(Debug, Default)]
struct Tally {
    established: AtomicUsize,
    lost: AtomicUsize,
    held: AtomicUsize,
    echo_sent: AtomicU64,
    echo_replies: AtomicU64,
    other_packets: AtomicU64,
    without_reply: AtomicUsize,
    connect_ms: Mutex<Vec<f64>>,
    errors: Errors,
    lost_reasons: Errors,
}

/// The server address inside the tunnel that echo requests go to.
fn gateway(c: &Connection) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let me = match c.assignment.address.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => return None,
    };
    c.assignment.gateways.iter().find_map(|g| match g {
        IpAddr::V4(g) => Some((me, *g)),
        IpAddr::V6(_) => None,
    })
}

struct Phases {
    /// Cancelled when echo traffic is to start.
    active: CancellationToken,
    /// Cancelled when echo traffic is to stop (replies still count).
    quiet: CancellationToken,
    /// Cancelled when the sessions are to say Bye.
    stop: CancellationToken,
}

async fn one_session(
    index: usize,
    client: Client,
    gate: Arc<Semaphore>,
    tally: Arc<Tally>,
    phases: Arc<Phases>,
    echo_interval: Duration,
) {
    let connected = {
        let _permit = gate.acquire().await;
        timed_connect(&client).await
    };
    let conn = match connected {
        (Ok(c), ms) => {
            tally.established.fetch_add(1, Ordering::Relaxed);
            tally
                .connect_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ms);
            c
        }
        (Err(e), _) => return tally.errors.add(client_error_kind(&e), e.to_string()),
    };
    let Some((me, server)) = gateway(&conn) else {
        tally.lost.fetch_add(1, Ordering::Relaxed);
        let why = "the assignment has no IPv4 address or gateway";
        return tally.lost_reasons.add("no-ipv4", why.into());
    };
    let inside = EchoCounter {
        me,
        replies: AtomicU64::new(0),
        other: AtomicU64::new(0),
    };
    let session = relay::Session {
        keepalive: Keepalive {
            interval: Duration::from_secs(conn.assignment.keepalive_secs.max(1).into()),
            timeout: Duration::from_secs(conn.assignment.timeout_secs.max(2).into()),
        },
        offload: false,
    };
    let (tx, mut rx) = queue::channel(4, 64 * 1024);
    let counters = Counters::default();
    let stopping = async {
        phases.stop.cancelled().await;
        Bye::new(ByeReason::Shutdown, "load test done")
    };
    let pinger = async {
        phases.active.cancelled().await;
        let mut tick = tokio::time::interval(echo_interval);
        let mut seq: u16 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = phases.quiet.cancelled() => break,
            }
            seq = seq.wrapping_add(1);
            let packet = icmp::echo_request(me, server, index as u16, seq, 32);
            if tx.try_send(Bytes::from(packet)).is_ok() {
                tally.echo_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::future::pending::<()>().await;
    };
    let relayed = relay::relay(
        conn.outside,
        &inside,
        &mut rx,
        |_| Ok(()),
        &counters,
        session,
        None,
        relay::Updates::Off,
        stopping,
    );
    let end = tokio::select! {
        end = relayed => end,
        _ = pinger => unreachable!("the pinger never ends"),
    };
    let replies = inside.replies.load(Ordering::Relaxed);
    tally.echo_replies.fetch_add(replies, Ordering::Relaxed);
    tally
        .other_packets
        .fetch_add(inside.other.load(Ordering::Relaxed), Ordering::Relaxed);
    match end {
        RelayEnd::SentBye(_) if phases.stop.is_cancelled() => {
            tally.held.fetch_add(1, Ordering::Relaxed);
            if replies == 0 {
                tally.without_reply.fetch_add(1, Ordering::Relaxed);
            }
        }
        RelayEnd::PeerBye(bye) => {
            tally.lost.fetch_add(1, Ordering::Relaxed);
            tally
                .lost_reasons
                .add(&format!("server-bye-{:?}", bye.reason), bye.message);
        }
        RelayEnd::SentBye(bye) => {
            tally.lost.fetch_add(1, Ordering::Relaxed);
            tally.lost_reasons.add("protocol-error", bye.message);
        }
        RelayEnd::Lost(e) => {
            tally.lost.fetch_add(1, Ordering::Relaxed);
            tally.lost_reasons.add("connection", e.to_string());
        }
    }
}

fn write_phase(file: &Option<PathBuf>, phase: &str) {
    if let Some(f) = file {
        if let Err(e) = std::fs::write(f, format!("{phase}\n")) {
            tracing::warn!(file = %f.display(), error = %e, "cannot write the phase file");
        }
    }
}

/// Opens `opts.sessions` sessions, holds them, closes them; returns the report.
pub async fn sessions(clients: &[Client], opts: &SessionsOptions) -> Value {
    assert!(!clients.is_empty(), "no client configs");
    let tally = Arc::new(Tally::default());
    let phases = Arc::new(Phases {
        active: CancellationToken::new(),
        quiet: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.sessions {
        tasks.spawn(one_session(
            i,
            clients[i % clients.len()].clone(),
            gate.clone(),
            tally.clone(),
            phases.clone(),
            opts.echo_interval,
        ));
    }
    // The ramp-up ends when every session has connected or failed (each
    // connect is bounded by the client's connect timeout).
    let attempted = || tally.established.load(Ordering::Relaxed) + tally.errors.count() as usize;
    let ramp_deadline = start + RAMP_LIMIT;
    while attempted() < opts.sessions && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp = start.elapsed();
    let established = tally.established.load(Ordering::Relaxed);
    eprintln!(
        "twoway-load: {established} of {} sessions established in {:.2} s; holding",
        opts.sessions,
        ramp.as_secs_f64()
    );
    write_phase(&opts.phase_file, "idle");
    tokio::time::sleep(opts.idle).await;
    write_phase(&opts.phase_file, "active");
    phases.active.cancel();
    tokio::time::sleep(opts.hold).await;
    // Replies to the last requests are still on their way.
    phases.quiet.cancel();
    tokio::time::sleep(REPLY_WAIT).await;
    let alive_at_end = established - tally.lost.load(Ordering::Relaxed);
    phases.stop.cancel();
    // Bye goes out within the relay's grace period; do not wait forever.
    let closing = async { while tasks.join_next().await.is_some() {} };
    let closed_in_time = tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .is_ok();
    write_phase(&opts.phase_file, "done");
    let connect_ms =
        std::mem::take(&mut *tally.connect_ms.lock().unwrap_or_else(|e| e.into_inner()));
    json!({
        "mode": "sessions",
        "sessions_requested": opts.sessions,
        "sessions_established": established,
        "sessions_failed": tally.errors.count(),
        "sessions_held": alive_at_end,
        "sessions_lost": tally.lost.load(Ordering::Relaxed),
        "sessions_closed_cleanly": tally.held.load(Ordering::Relaxed),
        "closed_in_time": closed_in_time,
        "concurrency": opts.concurrency,
        "ramp_seconds": round3(ramp.as_secs_f64()),
        "handshakes_per_sec": rate(established, ramp),
        "connect_ms": latency_json(connect_ms),
        "idle_seconds": opts.idle.as_secs_f64(),
        "hold_seconds": opts.hold.as_secs_f64(),
        "echo_interval_ms": opts.echo_interval.as_millis() as u64,
        "echo_requests_sent": tally.echo_sent.load(Ordering::Relaxed),
        "echo_replies_received": tally.echo_replies.load(Ordering::Relaxed),
        "sessions_without_echo_reply": tally.without_reply.load(Ordering::Relaxed),
        "other_packets_received": tally.other_packets.load(Ordering::Relaxed),
        "errors": tally.errors.to_json(),
        "lost_reasons": tally.lost_reasons.to_json(),
    })
}

/// Does `opts.handshakes` complete handshakes, each closed with a Bye right
/// after the assignment; returns the report.
pub async fn handshakes(clients: &[Client], opts: &HandshakesOptions) -> Value {
    assert!(!clients.is_empty(), "no client configs");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Errors::default());
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(opts.handshakes)));
    let clients: Arc<[Client]> = clients.to_vec().into();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (next, done, errors, latencies, clients) = (
            next.clone(),
            done.clone(),
            errors.clone(),
            latencies.clone(),
            clients.clone(),
        );
        let total = opts.handshakes;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let client = &clients[i % clients.len()];
                match timed_connect(client).await {
                    (Ok(mut c), ms) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                        let bye = Bye::new(ByeReason::Shutdown, "handshake test");
                        let _ = c.outside.write_message(FrameType::Bye, &bye).await;
                        let _ = c.outside.stream.shutdown().await;
                    }
                    (Err(e), _) => errors.add(client_error_kind(&e), e.to_string()),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let completed = done.load(Ordering::Relaxed);
    let ms = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    json!({
        "mode": "handshakes",
        "handshakes_requested": opts.handshakes,
        "handshakes_completed": completed,
        "handshakes_failed": errors.count(),
        "concurrency": opts.concurrency,
        "seconds": round3(elapsed.as_secs_f64()),
        "handshakes_per_sec": rate(completed, elapsed),
        "handshake_ms": latency_json(ms),
        "errors": errors.to_json(),
    })
}
