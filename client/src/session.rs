//! The client's session loop, from the first connection to the last:
//! connect, open the tunnel device, relay until the connection ends, then
//! reconnect (at once when the network moved under it, with backoff
//! otherwise) while the device and routes stay in place, so nothing leaks
//! outside the tunnel; at the end close the device and undo the host's
//! changes. Generic over the device ([`Inside`]) and the host's network
//! ([`HostNetwork`]), so that tests run it without root.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use twoway_common::inside::Inside;
use twoway_common::ippacket;
use twoway_common::message::{self, Bye, ByeReason, Update, FEATURE_OFFLOAD, FEATURE_UPDATE};
use twoway_common::queue::{self, QueueRx, QueueTx};
use twoway_common::relay::{self, DropReason, Keepalive, RelayEnd, Updates};

use crate::config::ClientConfig;
use crate::connect::{connect, Connection};
use crate::error::ClientError;
use crate::host::{HostNetwork, Refresh};
use crate::reconnect::reconnect;
use crate::status::Status;
use crate::tunnel::{OpenDevice, Tunnel};

/// Packets queued from the device towards the server.
const OUTBOUND_QUEUE: usize = 512;
/// Bytes queued from the device towards the server: beyond this the device
/// reader waits, so the kernel's queue, not ours, absorbs a burst.
const OUTBOUND_QUEUE_BYTES: usize = 512 * 1024;

/// Called once the tunnel is up the first time (for `--detach`).
pub type OnReady = Box<dyn FnOnce() + Send>;

/// What a running client is made of, besides its device and host network.
#[derive(Debug)]
pub struct Client<'a> {
    /// Its configuration.
    pub config: &'a ClientConfig,
    /// Its TLS configuration (CA, certificate and key).
    pub tls: Arc<rustls::ClientConfig>,
    /// What `status` shows.
    pub status: &'a Status,
    /// Cancelled by `down` or a signal.
    pub stop: &'a CancellationToken,
}

/// What the loop does after a connection ended.
enum Next {
    /// Connect again; at once when the network moved.
    Reconnect { at_once: bool },
    /// Stop without an error.
    Stop,
}

/// Runs the client until `down`, a signal, or a final error: connects,
/// makes the host network for the server's address with `host` and the
/// device with `open`, relays and reconnects; then closes the device and
/// undoes the host's changes, whatever ended it.
pub async fn run<I: Inside, H: HostNetwork>(
    client: Client<'_>,
    on_ready: Option<OnReady>,
    host: impl FnOnce(SocketAddr) -> H,
    mut open: impl OpenDevice<I>,
) -> Result<(), ClientError> {
    let first = tokio::select! {
        c = connect(client.config, client.tls.clone()) => c?,
        _ = client.stop.cancelled() => return Ok(()),
    };
    // Reconnects go to the same address: it is the one routed outside the tunnel.
    let mut host = host(first.peer);
    host.connected(first.local.ip()).await;
    let (queue_tx, queue_rx) = queue::channel(OUTBOUND_QUEUE, OUTBOUND_QUEUE_BYTES);
    let mut tunnel = None;
    let result = match Tunnel::open(
        client.config,
        &first.assignment,
        queue_tx.clone(),
        &mut host,
        &mut open,
    )
    .await
    {
        Ok(t) => {
            t.show(client.status);
            tunnel = Some(t);
            if let Some(ready) = on_ready {
                ready();
            }
            // Under systemd (Type=notify), `systemctl start` returns once the tunnel is up.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            sessions(
                &client,
                first,
                &mut tunnel,
                &mut host,
                &mut open,
                queue_tx,
                queue_rx,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Some(t) = tunnel.take() {
        t.close().await;
    }
    host.undo().await;
    result
}

/// One connection after another, starting with `first`, until one ends for good.
async fn sessions<I: Inside, H: HostNetwork>(
    client: &Client<'_>,
    first: Connection,
    tunnel: &mut Option<Tunnel<I>>,
    host: &mut H,
    open: &mut impl OpenDevice<I>,
    queue_tx: QueueTx,
    mut queue_rx: QueueRx,
) -> Result<(), ClientError> {
    // Reconnects go to the same address first: it is the one routed outside
    // the tunnel (in a full tunnel the other entries of a list are not).
    let (mut server, mut last) = (first.peer, first.server);
    let mut conn = Some(first);
    let mut at_once = false;
    loop {
        let connection = match conn.take() {
            Some(c) => c,
            None => match reconnect(
                client.config,
                &client.tls,
                client.stop,
                (server, last),
                host,
                at_once,
            )
            .await?
            {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        // The next reconnect starts with the node that worked last.
        (server, last) = (connection.peer, connection.server);
        let end = relay_one(
            client,
            connection,
            tunnel,
            host,
            open,
            &queue_tx,
            &mut queue_rx,
        )
        .await?;
        client.status.udp(None);
        host.disconnected();
        match next(client, end)? {
            Next::Reconnect { at_once: now } => at_once = now,
            Next::Stop => return Ok(()),
        }
        warn!("connection to the server lost; reconnecting (device and routes stay in place)");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("reconnecting")]);
    }
}

/// Puts `connection`'s assignment in force on the device (reopened when the
/// address or MTU changed) and relays until the connection ends.
async fn relay_one<I: Inside, H: HostNetwork>(
    client: &Client<'_>,
    mut connection: Connection,
    slot: &mut Option<Tunnel<I>>,
    host: &mut H,
    open: &mut impl OpenDevice<I>,
    queue_tx: &QueueTx,
    queue_rx: &mut QueueRx,
) -> Result<RelayEnd, ClientError> {
    let Client {
        config,
        status,
        stop,
        ..
    } = *client;
    let udp = connection.udp_channel(config.transport, &config.tunnel.congestion);
    status.udp(udp.as_ref().map(|u| u.path.clone()));
    let Connection {
        outside,
        assignment,
        local,
        ..
    } = connection;
    host.connected(local.ip()).await;
    let tunnel = match slot.take() {
        Some(mut t) if assignment.same_device(&t.assignment) => {
            let diff = t.update(config, &assignment.grant(), host, status).await;
            if !diff.is_empty() {
                info!(change = %diff, "the server changed this client's routes or DNS; the device stays");
            }
            t.assignment = assignment.clone();
            slot.insert(t)
        }
        old => {
            info!("the server changed this client's address or MTU; reconfiguring the device");
            if let Some(t) = old {
                t.close().await;
            }
            slot.insert(Tunnel::open(config, &assignment, queue_tx.clone(), host, open).await?)
        }
    };
    tunnel.show(status);
    let session = relay::Session {
        keepalive: Keepalive {
            interval: Duration::from_secs(assignment.keepalive_secs.max(1).into()),
            timeout: Duration::from_secs(assignment.timeout_secs.max(2).into()),
        },
        offload: assignment.features.iter().any(|f| f == FEATURE_OFFLOAD),
    };
    let own = assignment.addresses();
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
                _ = host.watch() => {
                    if let Refresh::Moved(why) = host.refresh().await {
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
                        let diff = tunnel.update(config, &update, host, status).await;
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
    Ok(relay::relay(
        outside,
        &*tun,
        queue_rx,
        filter,
        &status.counters,
        session,
        udp,
        updates,
        stopping,
    )
    .await)
}

/// What the end of a session means for the client.
fn next(client: &Client<'_>, end: RelayEnd) -> Result<Next, ClientError> {
    let status = client.status;
    // Stopping (a signal, `down`): however the session ended meanwhile (the
    // server may be stopping at the same moment), there is nothing to resume.
    if client.stop.is_cancelled() {
        return Ok(Next::Stop);
    }
    match end {
        RelayEnd::SentBye(bye) if bye.reason == ByeReason::Shutdown => {
            status.reconnecting(bye.message);
            return Ok(Next::Reconnect { at_once: true });
        }
        RelayEnd::SentBye(bye) => {
            status.reconnecting(format!("we closed the session: {}", bye.message))
        }
        RelayEnd::PeerBye(bye) => match bye.reason {
            ByeReason::Revoked => return Err(ClientError::Revoked(bye.message)),
            // Another device with this certificate took over: leaving avoids a kick loop.
            ByeReason::Replaced | ByeReason::Kicked => {
                warn!(reason = ?bye.reason, message = %bye.message, "server ended the session; not reconnecting");
                return Ok(Next::Stop);
            }
            _ => status.reconnecting(format!(
                "server said bye ({:?}): {}",
                bye.reason, bye.message
            )),
        },
        RelayEnd::Lost(e) => status.reconnecting(e.to_string()),
    }
    Ok(Next::Reconnect { at_once: false })
}

/// The payload of the next Update frame the relay received; pending
/// forever when the session has none (or the relay is gone).
async fn next_update(updates: &mut watch::Receiver<Bytes>) -> Bytes {
    match updates.changed().await {
        Ok(()) => updates.borrow_and_update().clone(),
        Err(_) => std::future::pending().await,
    }
}
