//! Assign: what a session is given. Its addresses (static, or from the pool
//! and persisted), routes, DNS, MTU and keepalive; the UDP channel and live
//! updates when its client asked for them; and the filter its packets pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ipnetwork::IpNetwork;
use tokio::sync::watch;
use tracing::warn;
use twoway_common::message::{Assignment, RefuseCode};
use twoway_common::message::{FEATURE_OFFLOAD, FEATURE_UDP, FEATURE_UPDATE};
use twoway_common::outside::udp::keys::REKEY_AFTER;
use twoway_common::outside::udp::{self, Role, UdpPath, UdpSecret};
use twoway_common::relay::{self, UdpInput, Updates};

use super::claim::Claimed;
use super::SessionError;
use crate::filter::SourceFilter;
use crate::policy::Grant;
use crate::pool::PoolExhausted;
use crate::server::{pushed, unix_now, Server};
use crate::udp::Registration;

/// The lease file is rewritten for a returning client (whose lease only gets a
/// new last-used time) only when the last write is this many seconds old.
const LEASE_REFRESH_SECS: u64 = 60;

/// What the session is offered, not yet sent: its assignment and the
/// channels that come with it.
#[derive(Debug)]
pub(super) struct Offer {
    /// The session and its slot.
    pub claimed: Claimed,
    /// What the client will be sent.
    pub assignment: Assignment,
    /// The checks its packets must pass before they go inside.
    pub filter: SourceFilter,
    /// Its place at the UDP endpoint and its end of the UDP channel.
    pub udp: Option<(Registration, relay::Udp)>,
    /// Where a reload pushes a changed grant, and the relay's end of it.
    pub updates: (Option<watch::Sender<Bytes>>, Updates),
}

/// Why no assignment could be made.
#[derive(Debug, thiserror::Error)]
enum Unassigned {
    /// No address is free in the pool.
    #[error("{0}")]
    Pool(#[from] PoolExhausted),
    /// An address and prefix that do not make a network (a bug).
    #[error("{0}")]
    Address(#[from] ipnetwork::IpNetworkError),
}

/// Makes the assignment for `claimed` under its grant (extra devices of an
/// identity get a pool address of their own, remembered per slot).
pub(super) async fn assign(
    server: &Server,
    mut claimed: Claimed,
    inside_offload: bool,
) -> Result<Offer, SessionError> {
    let client = &claimed.granted.client;
    if claimed.lease_key() != client.identity {
        claimed.granted.grant.for_extra_device();
    }
    let offload = inside_offload && client.offers(FEATURE_OFFLOAD);
    let leased = server
        .cluster_address(claimed.cluster.as_ref(), &claimed.granted.grant)
        .await;
    let leased = match leased {
        Ok(a) => a,
        Err(r) => {
            let client = claimed.granted.client;
            return Err(client.refuse_as(r.reason, r.code, r.message).await);
        }
    };
    let made = assignment(
        server,
        claimed.lease_key(),
        &claimed.granted.grant,
        leased,
        offload,
    );
    let mut assignment = match made {
        Ok(a) => a,
        Err(e) => {
            let code = match e {
                Unassigned::Pool(_) => RefuseCode::PoolExhausted,
                Unassigned::Address(_) => RefuseCode::Internal,
            };
            return Err(claimed.granted.client.refuse(code, e.to_string()).await);
        }
    };
    let udp = udp_channel(server, &claimed, &mut assignment);
    // A client that can take a changed grant live gets it pushed on
    // reload; any other is sent a Bye and reconnects.
    let updates = if claimed.granted.client.offers(FEATURE_UPDATE) {
        assignment.features.push(FEATURE_UPDATE.to_owned());
        let (tx, rx) = watch::channel(Bytes::new());
        (Some(tx), Updates::Send(rx))
    } else {
        (None, Updates::Off)
    };
    let filter = filter(server, &assignment, &claimed.granted.grant);
    Ok(Offer {
        claimed,
        assignment,
        filter,
        udp,
        updates,
    })
}

/// The assignment for `key` (the lease key) under `grant`; `leased` is the
/// pool address the cluster leased, if the server is a node of one.
fn assignment(
    server: &Server,
    key: &str,
    grant: &Grant,
    leased: Option<Ipv4Addr>,
    offload: bool,
) -> Result<Assignment, Unassigned> {
    let t = &server.config.tunnel;
    let address = match grant.address.or(leased) {
        Some(a) => a,
        None => pool_address(server, key)?,
    };
    let address6 = match (t.network6, grant.address6) {
        (Some(n6), Some(a6)) => Some((n6, a6)),
        // Without a static one, the IPv6 address mirrors the IPv4 host part.
        (Some(n6), None) => {
            let host = u32::from(address) & !u32::from(t.network.mask());
            Some((
                n6,
                Ipv6Addr::from(u128::from(n6.network()) | u128::from(host)),
            ))
        }
        _ => None,
    };
    let granted = pushed(&grant.access);
    let mut gateways = vec![IpAddr::V4(t.server_address())];
    gateways.extend(t.server_address6().map(IpAddr::V6));
    Ok(Assignment {
        address: IpNetwork::new(IpAddr::V4(address), t.network.prefix())?,
        address6: address6
            .map(|(n6, a6)| IpNetwork::new(IpAddr::V6(a6), n6.prefix()))
            .transpose()?,
        gateways,
        // The lists an Update carries when a reload changes them.
        routes: granted.routes,
        dns: granted.dns,
        search: granted.search,
        mtu: t.mtu,
        keepalive_secs: server.config.keepalive.interval_secs,
        timeout_secs: server.config.keepalive.timeout_secs,
        features: if offload {
            vec![FEATURE_OFFLOAD.to_owned()]
        } else {
            vec![]
        },
        udp_session: None,
        udp_secret: None,
    })
}

/// `key`'s address from the pool: its lease, or a free address.
fn pool_address(server: &Server, key: &str) -> Result<Ipv4Addr, PoolExhausted> {
    let mut pool = server.pool.lock().unwrap_or_else(|e| e.into_inner());
    let now = unix_now();
    let had = pool.leases().get(key).map(|l| l.address);
    let router = server.registry.router();
    let a = pool.assign(key, now, |a| router.contains(IpAddr::V4(a)))?;
    // A new or moved lease is written at once. A returning client only
    // refreshes its last-used time, which rides along with the next write: a
    // crash loses at most LEASE_REFRESH_SECS of such refreshes (they only
    // order evictions from a full pool), and handshakes do not each pay a
    // file write and two fsyncs.
    let saved_at = server.leases_saved_at.load(Ordering::Relaxed);
    if had != Some(a) || now.saturating_sub(saved_at) >= LEASE_REFRESH_SECS {
        match server.leases.save(pool.leases()) {
            Ok(()) => server.leases_saved_at.store(now, Ordering::Relaxed),
            Err(e) => tracing::error!(file = %server.leases.path().display(), error = %e,
                "cannot save leases; this address may not survive a restart"),
        }
    }
    Ok(a)
}

/// The UDP channel, when both ends want it: fresh secrets sent inside this
/// TLS session (in `assignment`), and a number the endpoint routes its
/// datagrams by. Without random secrets (the RNG failed) the session stays
/// on TCP.
fn udp_channel(
    server: &Server,
    claimed: &Claimed,
    assignment: &mut Assignment,
) -> Option<(Registration, relay::Udp)> {
    let client = &claimed.granted.client;
    let endpoint = server.udp().filter(|_| client.offers(FEATURE_UDP))?;
    let Some((secret, seal, open)) = UdpSecret::generate(REKEY_AFTER) else {
        warn!("no random bytes for UDP keys; this session stays on TCP");
        return None;
    };
    let (registration, input) = endpoint.register();
    let number = registration.number;
    assignment.features.push(FEATURE_UDP.to_owned());
    assignment.udp_session = Some(number);
    assignment.udp_secret = Some(secret);
    let path = UdpPath::new(endpoint.socket(), None)
        .with_tcp(client.tcp_handle(&server.config.tunnel.congestion));
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

/// The checks this session's packets must pass before they go inside.
fn filter(server: &Server, assignment: &Assignment, grant: &Grant) -> SourceFilter {
    let t = &server.config.tunnel;
    SourceFilter {
        address: match assignment.address.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => t.server_address(),
        },
        address6: assignment.address6.and_then(|a| match a.ip() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }),
        network: t.network,
        network6: t.network6,
        gateways: assignment.gateways.clone(),
        client_to_client: Arc::new(AtomicBool::new(grant.client_to_client)),
    }
}
