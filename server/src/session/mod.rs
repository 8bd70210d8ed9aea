//! A client's session, top to bottom:
//!
//! admit → handshake → identify → grant → claim → assign → register → relay → teardown
//!
//! Each step is one function: the first four and the relay below, claim,
//! assign, register and teardown in files of their own. What a step hands on
//! is typed by how far the client got (`Connected`, `Identified` and
//! `Assigned` in connection.rs; `Granted` here, `Claimed`, `Offer`,
//! `Registered` beside it), so no step can be skipped: only an `Assigned`
//! connection relays, and only a registered session is sent its assignment.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use twoway_common::inside::Inside;
use twoway_common::message::{Bye, ByeReason, RefuseCode, FEATURE_OFFLOAD};
use twoway_common::relay::{self, RelayEnd};

use crate::limits::Admitted;
use crate::loaded::Loaded;
use crate::policy::Grant;
use crate::refusal::RefusalReason;
use crate::server::Server;
use crate::stats::Stats;

mod assign;
mod claim;
mod connection;
mod register;

pub use connection::{Assigned, Connected, Identified, SessionError};
use register::{Link, Registered};

/// Takes one accepted connection through the pipeline.
pub(crate) async fn run<I: Inside>(
    server: &Arc<Server>,
    tcp: TcpStream,
    remote: SocketAddr,
    inside: &I,
    shutdown: CancellationToken,
) {
    let client = match connect(server, tcp, remote).await {
        Ok(client) => client,
        Err(e) => return refused(&server.stats, &e),
    };
    let span = info_span!("session", identity = %client.identity, peer = %remote);
    async {
        let (mut registered, link) = match open(server, client, inside.offload()).await {
            Ok(session) => session,
            Err(e) => return refused(&server.stats, &e),
        };
        let end = relay(server, link, &mut registered, inside, shutdown).await;
        register::teardown(server, registered, end);
    }
    .instrument(span)
    .await;
}

/// admit → handshake → identify.
async fn connect(
    server: &Server,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<Identified, SessionError> {
    let admitted = admit(server, remote)?;
    let connected = handshake(server, tcp, remote, admitted).await?;
    identify(server, connected).await
}

/// grant → claim → assign → register.
async fn open(
    server: &Server,
    client: Identified,
    inside_offload: bool,
) -> Result<(Registered, Link), SessionError> {
    let granted = grant(server, client).await?;
    let claimed = claim::claim(server, granted).await?;
    let offer = assign::assign(server, claimed, inside_offload).await?;
    Ok(register::register(server, offer))
}

/// Lets the connection in if its source and the handshakes in progress
/// leave room (`crate::limits`).
fn admit(server: &Server, remote: SocketAddr) -> Result<Admitted, SessionError> {
    server
        .limits
        .admit(remote.ip(), Instant::now())
        .map_err(SessionError::NotAdmitted)
}

/// The TLS handshake and the hello, within `limits.handshake_timeout_secs`;
/// ends early if a newer connection takes this one's place.
async fn handshake(
    server: &Server,
    tcp: TcpStream,
    remote: SocketAddr,
    admitted: Admitted,
) -> Result<Connected, SessionError> {
    let limit = Duration::from_secs(server.config.limits.handshake_timeout_secs.into());
    twoway_common::outside::tcp::tune::tune(&tcp, &server.config.tunnel.congestion);
    let place = &admitted.handshake;
    let handshake = async {
        // Until its peer speaks, a connection is the first to make room for others.
        let _ = tcp.peek(&mut [0u8; 1]).await;
        place.spoke();
        let tls = server.loaded.load().tls.clone();
        Connected::accept(tcp, remote, tls, limit).await
    };
    tokio::select! {
        c = tokio::time::timeout(limit, handshake) => c.unwrap_or(Err(SessionError::Timeout(limit))),
        () = place.evicted() => Err(SessionError::NotAdmitted(RefusalReason::Evicted)),
    }
}

/// The identity, from the configured field of the client's certificate.
async fn identify(server: &Server, connected: Connected) -> Result<Identified, SessionError> {
    connected.identify(server.config.identity.source).await
}

/// An identity the policy in force allows, and what it gets.
#[derive(Debug)]
pub(super) struct Granted {
    /// The connection.
    pub client: Identified,
    /// What the policy gives it.
    pub grant: Grant,
    /// The configuration it was granted under.
    pub loaded: Arc<Loaded>,
}

/// What the policy in force grants the client, or its refusal.
async fn grant(server: &Server, client: Identified) -> Result<Granted, SessionError> {
    let loaded = server.loaded.load_full();
    match loaded.policy.grant(&client.identity) {
        Some(grant) => Ok(Granted {
            client,
            grant,
            loaded,
        }),
        None => {
            let message = format!("identity {:?} is not allowed by policy", client.identity);
            Err(client.refuse(RefuseCode::IdentityNotAllowed, message).await)
        }
    }
}

/// Sends the assignment, then relays until the session ends: the client or
/// the server says Bye (kick, reload, replacement, shutdown), or the
/// connection is lost. `None` if the assignment could not be sent.
async fn relay<I: Inside>(
    server: &Server,
    link: Link,
    registered: &mut Registered,
    inside: &I,
    shutdown: CancellationToken,
) -> Option<RelayEnd> {
    let Link {
        client,
        assignment,
        filter,
        mut stop,
        udp,
        updates,
    } = link;
    let session = relay::Session {
        keepalive: server.config.keepalive.keepalive(),
        offload: assignment.features.iter().any(|f| f == FEATURE_OFFLOAD),
    };
    let assigned = match client.assign(assignment).await {
        Ok(assigned) => assigned,
        Err(e) => {
            warn!(error = %e, "could not send the assignment");
            return None;
        }
    };
    server
        .stats
        .sessions_started
        .fetch_add(1, Ordering::Relaxed);
    info!(address = %assigned.assignment.address.ip(), offload = session.offload,
        udp = assigned.assignment.udp_session.is_some(), "session up");
    let stopping = || Bye::new(ByeReason::Shutdown, "server is stopping");
    let stop = async {
        tokio::select! {
            bye = stop.recv() => bye.unwrap_or_else(stopping),
            _ = shutdown.cancelled() => stopping(),
        }
    };
    let end = assigned
        .relay(
            inside,
            &mut registered.outbound,
            |p| filter.check(p),
            &registered.counters,
            session,
            udp,
            updates,
            stop,
        )
        .await;
    Some(end)
}

/// Counts and logs a connection that did not become a session.
fn refused(stats: &Stats, e: &SessionError) {
    let why = e.refusal();
    stats.refused(why);
    match e {
        SessionError::NotAdmitted(RefusalReason::TooManyHandshakes) => {
            warn!("too many handshakes in progress; closing connection")
        }
        SessionError::NotAdmitted(RefusalReason::Evicted) => {
            debug!("handshake closed to make room for a newer connection")
        }
        SessionError::NotAdmitted(_) => debug!(reason = why.label(), "connection not admitted"),
        SessionError::Refused { .. } => warn!(error = %e, "client refused"),
        _ => match refused_by_client(e) {
            Some(cause) => info!(error = %e, reason = why.label(),
                "connection closed before a session: {cause}"),
            None => info!(error = %e, reason = why.label(), "connection closed before a session"),
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
