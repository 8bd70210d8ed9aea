//! `twoway up`: connect, configure the TUN device, routes and DNS, relay, and
//! reconnect with backoff when the connection is lost, at once when the
//! network changed under it; the device and routes stay in place meanwhile so
//! nothing leaks outside the tunnel.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use twoway_common::control::{self, Failure, Reply, Request};
use twoway_common::inside::tun::{TunInside, TunSettings};
use twoway_common::ippacket;
use twoway_common::message::{
    self, Assignment, Bye, ByeReason, Update, FEATURE_OFFLOAD, FEATURE_UPDATE,
};
use twoway_common::queue::{self, QueueTx};
use twoway_common::relay::{self, DropReason, Keepalive, RelayEnd, Updates};

use crate::changes::{self, HostChanges};
use crate::config::ClientConfig;
use crate::connect::{connect, Connection};
use crate::error::ClientError;
use crate::hooks;
use crate::reconnect::{blocking, reconnect, refresh};
use crate::roam::Watch;
use crate::routing::{Refresh, Routing};
use crate::status::Status;
use crate::update::Diff;
/// Packets queued from the device towards the server.
const OUTBOUND_QUEUE: usize = 512;
/// Bytes queued from the device towards the server: beyond this the device
/// reader waits, so the kernel's queue, not ours, absorbs a burst.
const OUTBOUND_QUEUE_BYTES: usize = 512 * 1024;

/// The configured device: TUN and the task reading it (routes and DNS are in [`Routing`]).
struct Tunnel {
    tun: Arc<TunInside>,
    reader: JoinHandle<()>,
    assignment: Assignment,
    down_hook: Option<(String, Vec<(String, String)>)>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some((cmd, env)) = self.down_hook.take() {
            hooks::run("down", &cmd, &env);
        }
        self.reader.abort();
    }
}

impl Tunnel {
    /// Takes the device down and waits until it is gone, so that a device of
    /// the same name can be created at once (the reader task holds the device
    /// until it has finished).
    async fn close(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    fn open(
        config: &ClientConfig,
        a: &Assignment,
        queue: QueueTx,
        routing: &mut Routing,
    ) -> Result<Self, ClientError> {
        let name = config.device_name();
        let ipv4 = match a.address.ip() {
            IpAddr::V4(ip) => (ip, a.address.prefix()),
            IpAddr::V6(_) => {
                return Err(ClientError::Internal(
                    "server assigned an IPv6 address as IPv4".into(),
                ))
            }
        };
        let ipv6 = a.address6.and_then(|n| match n.ip() {
            IpAddr::V6(ip) => Some((ip, n.prefix())),
            IpAddr::V4(_) => None,
        });
        let tun = TunInside::create(&TunSettings {
            name,
            ipv4,
            ipv6,
            mtu: a.mtu,
            offload: config.tunnel.offload,
            multi_queue: false,
        })
        .map_err(|e| {
            if e.is_privilege() {
                ClientError::Privilege(e.to_string())
            } else {
                ClientError::Internal(e.to_string())
            }
        })?;
        let tun = Arc::new(tun);
        routing
            .install(tun.name(), a)
            .map_err(ClientError::Internal)?;
        routing.apply_dns(config, tun.name(), a);
        let reader = {
            let tun = tun.clone();
            let max = twoway_common::inside::max_read(&*tun, a.mtu);
            tokio::spawn(async move {
                if let Err(e) = twoway_common::inside::reader::to_queue(&*tun, queue, max).await {
                    warn!(error = %e, "reading the tunnel device failed");
                }
            })
        };
        info!(device = tun.name(), address = %a.address, routes = %twoway_common::logging::list(&a.routes), "tunnel up");
        let env = hooks::environment(a, tun.name(), &config.server);
        if let Some(cmd) = &config.hooks.up {
            hooks::run("up", cmd, &env);
        }
        let down_hook = config.hooks.down.clone().map(|cmd| (cmd, env));
        Ok(Self {
            tun,
            reader,
            assignment: a.clone(),
            down_hook,
        })
    }

    /// Puts a changed grant in force on the same device and connection:
    /// routes added and removed (through the journal of host changes, so
    /// that `down` or crash recovery removes exactly what is installed),
    /// DNS replaced, status updated (its `since` stays), the up hook run
    /// again with the new environment. Returns what changed, for the
    /// caller's log line. Blocks on `ip` and `resolvectl`.
    fn update(
        &mut self,
        config: &ClientConfig,
        update: &Update,
        routing: &mut Routing,
        status: &Status,
    ) -> Diff {
        let diff = Diff::between(&self.assignment.grant(), update);
        let next = self.assignment.updated(update);
        if diff.is_empty() {
            self.assignment = next;
            return diff;
        }
        let dev = self.tun.name();
        let full_before = routing.full_tunnel();
        if let Err(e) = routing.update(dev, &next) {
            warn!(error = %e, "cannot install every route the server pushed; the others are in place");
            status.failed(format!("applying the server's new routes: {e}"));
        }
        // A full tunnel takes every DNS query: its coming or going changes DNS too.
        if diff.dns_changed() || routing.full_tunnel() != full_before {
            routing.update_dns(config, dev, &next);
        }
        status.updated(&next);
        status.dns(routing.dns_method(), routing.full_tunnel());
        let env = hooks::environment(&next, dev, &config.server);
        if let Some(cmd) = config.hooks.up.clone() {
            let env = env.clone();
            // Not on the relay's thread: a hook may take up to 30 s.
            tokio::task::spawn_blocking(move || hooks::run("update", &cmd, &env));
        }
        if let Some((_, old)) = &mut self.down_hook {
            *old = env;
        }
        self.assignment = next;
        diff
    }
}

/// The payload of the next Update frame the relay received; pending
/// forever when the session has none (or the relay is gone).
async fn next_update(updates: &mut watch::Receiver<Bytes>) -> Bytes {
    match updates.changed().await {
        Ok(()) => updates.borrow_and_update().clone(),
        Err(_) => std::future::pending().await,
    }
}

/// Called once the tunnel is up the first time (for `--detach`).
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Runs the client until `down`, a signal, or a final error.
pub async fn up(config: ClientConfig, on_ready: Option<OnReady>) -> Result<(), ClientError> {
    // Privilege first: without CAP_NET_ADMIN `up` ends (exit 5) before it
    // reads a key file. A key other users can read, or a profile holding
    // the key that is not 0600, is refused here (exit 2).
    crate::privilege::check()?;
    let credentials = crate::credentials::load(&config)?;
    let tls = credentials.tls;
    twoway_common::priority::apply(config.tunnel.nice);
    let status = Status::new(&config.server)
        .with_config(&config.path)
        .with_certificate(credentials.certificate.clone());
    let stop = CancellationToken::new();
    tokio::spawn(crate::expiry::watch(credentials.certificate, stop.clone()));
    let socket = control::bind(&config.control.socket).await.map_err(|e| {
        ClientError::Config(format!(
            "control socket {}: {e}",
            config.control.socket.display()
        ))
    })?;
    let _socket_file = RemoveOnDrop(config.control.socket.clone());
    tokio::spawn(control::serve(
        socket,
        control_handler(status.clone(), stop.clone()),
        stop.clone(),
    ));
    tokio::spawn(signals(stop.clone()));

    // Undo what a client of this config left behind when it was killed.
    let (changes, stale) = HostChanges::recover(&changes::state_path(&config.control.socket));
    if stale {
        info!("removed the routes and DNS settings a previous run left behind");
    }
    let first = tokio::select! {
        c = connect(&config, tls.clone()) => c?,
        _ = stop.cancelled() => return Ok(()),
    };
    // Reconnects go to the same address: it is the one routed outside the tunnel.
    let server = first.peer;
    let mut routing = Routing::new(changes, &config, server.ip());
    routing.connected(first.local.ip());
    let (queue_tx, mut queue_rx) = queue::channel(OUTBOUND_QUEUE, OUTBOUND_QUEUE_BYTES);
    let mut tunnel = Tunnel::open(&config, &first.assignment, queue_tx.clone(), &mut routing)?;
    status.up(&tunnel.assignment, tunnel.tun.name());
    status.dns(routing.dns_method(), routing.full_tunnel());
    if let Some(ready) = on_ready {
        ready();
    }
    // Under systemd (Type=notify), `systemctl start` returns once the tunnel is up.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut watch = Watch::open();
    let mut conn = Some(first);
    let mut at_once = false;
    loop {
        let mut connection = match conn.take() {
            Some(c) => c,
            None => match reconnect(
                &config,
                &tls,
                &stop,
                server,
                &mut routing,
                &mut watch,
                at_once,
            )
            .await?
            {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        let udp = connection.udp_channel(config.transport, &config.tunnel.congestion);
        status.udp(udp.as_ref().map(|u| u.path.clone()));
        let Connection {
            outside,
            assignment,
            local,
            ..
        } = connection;
        routing.connected(local.ip());
        if assignment.same_device(&tunnel.assignment) {
            let diff =
                blocking(|| tunnel.update(&config, &assignment.grant(), &mut routing, &status));
            if !diff.is_empty() {
                info!(change = %diff, "the server changed this client's routes or DNS; the device stays");
            }
            tunnel.assignment = assignment.clone();
        } else {
            info!("the server changed this client's address or MTU; reconfiguring the device");
            tunnel.close().await;
            tunnel = Tunnel::open(&config, &assignment, queue_tx.clone(), &mut routing)?;
        }
        status.up(&tunnel.assignment, tunnel.tun.name());
        status.dns(routing.dns_method(), routing.full_tunnel());
        let session = relay::Session {
            keepalive: Keepalive {
                interval: Duration::from_secs(assignment.keepalive_secs.max(1).into()),
                timeout: Duration::from_secs(assignment.timeout_secs.max(2).into()),
            },
            offload: assignment.features.iter().any(|f| f == FEATURE_OFFLOAD),
        };
        let own: Vec<IpAddr> = [
            Some(assignment.address.ip()),
            assignment.address6.map(|a| a.ip()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let filter = |p: &[u8]| match ippacket::addresses(p) {
            Ok(a) if own.contains(&a.dst) => Ok(()),
            Ok(_) => Err(DropReason::NoRoute),
            Err(_) => Err(DropReason::Malformed),
        };
        // Update frames, when the server agreed to send them: the relay
        // hands each one over, and the session applies it right here.
        let (update_tx, mut update_rx) = watch::channel(Bytes::new());
        let updates = if assignment.features.iter().any(|f| f == FEATURE_UPDATE) {
            Updates::Receive(update_tx)
        } else {
            Updates::Off
        };
        let tun = tunnel.tun.clone();
        let stopping = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Bye::new(ByeReason::Shutdown, "client going down"),
                    _ = watch.changed() => {
                        if let Refresh::Moved(why) = refresh(&mut routing).await {
                            warn!(reason = %why, "network changed; reconnecting now");
                            return Bye::new(ByeReason::Shutdown, format!("network changed: {why}"));
                        }
                    }
                    payload = next_update(&mut update_rx) => match message::decode::<Update>(&payload) {
                        Ok(mut update) => {
                            let bad = message::drop_bad_search_domains(&mut update.search);
                            if !bad.is_empty() {
                                warn!(domains = ?bad, "the server pushed search domains that are not domain names; left out");
                            }
                            let diff = blocking(|| tunnel.update(&config, &update, &mut routing, &status));
                            if !diff.is_empty() {
                                info!(change = %diff, "the server changed this session's routes or DNS; applied without reconnecting");
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "the server sent an Update that cannot be read");
                            return Bye::new(ByeReason::ProtocolError, format!("bad Update: {e}"));
                        }
                    },
                }
            }
        };
        let end = relay::relay(
            outside,
            &*tun,
            &mut queue_rx,
            filter,
            &status.counters,
            session,
            udp,
            updates,
            stopping,
        )
        .await;
        status.udp(None);
        routing.disconnected();
        at_once = false;
        match end {
            RelayEnd::SentBye(_) if stop.is_cancelled() => return Ok(()),
            RelayEnd::SentBye(bye) if bye.reason == ByeReason::Shutdown => {
                at_once = true;
                status.reconnecting(bye.message)
            }
            RelayEnd::SentBye(bye) => {
                status.reconnecting(format!("we closed the session: {}", bye.message))
            }
            RelayEnd::PeerBye(bye) => match bye.reason {
                ByeReason::Revoked => {
                    return Err(ClientError::Auth(format!("server: {}", bye.message)))
                }
                // Another device with this certificate took over: leaving avoids a kick loop.
                ByeReason::Replaced | ByeReason::Kicked => {
                    warn!(reason = ?bye.reason, message = %bye.message, "server ended the session; not reconnecting");
                    return Ok(());
                }
                _ => status.reconnecting(format!(
                    "server said bye ({:?}): {}",
                    bye.reason, bye.message
                )),
            },
            RelayEnd::Lost(e) => status.reconnecting(e.to_string()),
        }
        warn!("connection to the server lost; reconnecting (device and routes stay in place)");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("reconnecting")]);
    }
}

fn control_handler(
    status: Status,
    stop: CancellationToken,
) -> impl Fn(Request) -> std::future::Ready<control::Answer> + Clone + Send + 'static {
    move |req| {
        std::future::ready(match req {
            Request::Status => Ok(Reply::ClientStatus(Box::new(status.report()))),
            Request::Down => {
                info!("down requested");
                stop.cancel();
                Ok(Reply::Done {})
            }
            other => Err(Failure::new(format!("{other:?} is a server command"))),
        })
    }
}

async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // A detached client outlives its terminal.
            _ = hup.recv() => continue,
        }
    }
    info!("signal received; taking the tunnel down");
    stop.cancel();
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
