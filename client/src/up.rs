//! `twoway up`: connect, configure the TUN device, routes and DNS, relay, and
//! reconnect with backoff when the connection is lost, at once when the
//! network changed under it; the device and routes stay in place meanwhile so
//! nothing leaks outside the tunnel.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use twoway_common::control;
use twoway_common::ippacket;
use twoway_common::message::{self, Bye, ByeReason, Update, FEATURE_OFFLOAD, FEATURE_UPDATE};
use twoway_common::queue;
use twoway_common::relay::{self, DropReason, Keepalive, RelayEnd, Updates};

use crate::config::ClientConfig;
use crate::connect::{connect, Connection};
use crate::daemon::{control_handler, signals};
use crate::error::ClientError;
use crate::host::journal::{self, HostChanges};
use crate::host::system::{Refresh, Routing};
use crate::host::watch::Watch;
use crate::reconnect::{blocking, reconnect, refresh};
use crate::status::Status;
use crate::tunnel::Tunnel;

/// Packets queued from the device towards the server.
const OUTBOUND_QUEUE: usize = 512;
/// Bytes queued from the device towards the server: beyond this the device
/// reader waits, so the kernel's queue, not ours, absorbs a burst.
const OUTBOUND_QUEUE_BYTES: usize = 512 * 1024;

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
    let (changes, stale) = HostChanges::recover(&journal::state_path(&config.control.socket));
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

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
