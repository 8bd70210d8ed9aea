//! Which routes the client wants, computed from the assignment, the server's
//! address and the host's routing table. Pure and unit-tested; `system.rs`
//! applies the result.
//!
//! Full tunnel (a pushed `0.0.0.0/0` or `::/0`) works as OpenVPN's `def1`:
//! the two halves `0.0.0.0/1` + `128.0.0.0/1` (`::/1` + `8000::/1`) go into
//! the TUN device, beating the default route without replacing it, and a host
//! route pins the server's address to the path it had before (the outer
//! path). Unreachable "backstop" halves with a high metric stay under the TUN
//! routes, so if the device vanishes (a crash, a reconfiguration) traffic
//! fails instead of leaking. A family that is not tunnelled while the other
//! is gets unreachable halves (IPv6 does not leak around an IPv4 full tunnel),
//! and so do pushed IPv6 routes when the server gave no IPv6 address.
//! Without `allow_lan`, the directly connected subnets of the outer device
//! are split into halves into the tunnel too (the gateway keeps a host route).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use twoway_common::message::Assignment;

use crate::host::routes::{KernelRoute, RouteSpec, Snapshot};

/// Metric of the unreachable halves under the full-tunnel routes.
pub const BACKSTOP_METRIC: u32 = 4242;

/// How the host reaches the server without the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterPath {
    /// Next hop, `None` when the server is on the link.
    pub gateway: Option<IpAddr>,
    /// Outgoing device.
    pub dev: String,
}

/// As `ip route` writes it: `via 192.0.2.1 dev eth0`, or `dev eth0` on the link.
impl std::fmt::Display for OuterPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gateway {
            Some(g) => write!(f, "via {g} dev {}", self.dev),
            None => write!(f, "dev {}", self.dev),
        }
    }
}

/// An outer path for a log line: its `ip route` form, or `none`.
pub fn describe(path: Option<&OuterPath>) -> String {
    path.map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// What the client wants installed, in installation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Routes, in the order they must be added.
    pub routes: Vec<RouteSpec>,
    /// The path to the server outside the tunnel, if there is one.
    pub outer: Option<OuterPath>,
    /// Whether everything (of some family) goes through the tunnel.
    pub full_tunnel: bool,
}

/// Inputs of [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// What the server assigned.
    pub assignment: &'a Assignment,
    /// The TUN device name.
    pub tun: &'a str,
    /// The server's IP address (the one connected to).
    pub server: IpAddr,
    /// Keep directly connected subnets outside a full tunnel.
    pub allow_lan: bool,
    /// The host's routes and addresses now.
    pub snapshot: &'a Snapshot,
}

/// Whether `assignment` sends everything of some family through the tunnel.
pub fn full_tunnel(assignment: &Assignment) -> bool {
    assignment.routes.iter().any(|r| r.prefix() == 0)
}

/// The two halves of `net` (`None` for a host route).
pub fn halves(net: IpNetwork) -> Option<[IpNetwork; 2]> {
    let max = if net.is_ipv4() { 32 } else { 128 };
    let p = net.prefix();
    if p >= max {
        return None;
    }
    let lower = IpNetwork::new(net.network(), p + 1).ok()?;
    let upper_ip = match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) | (1u32 << (31 - p))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | (1u128 << (127 - p))).into()),
    };
    Some([lower, IpNetwork::new(upper_ip, p + 1).ok()?])
}

/// `0.0.0.0/0` or `::/0`.
fn all(v6: bool) -> Option<IpNetwork> {
    let any = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    IpNetwork::new(any, 0).ok()
}

/// The two halves of everything in one family.
fn all_halves(v6: bool) -> Vec<IpNetwork> {
    all(v6).and_then(halves).map(Vec::from).unwrap_or_default()
}

fn is_link_local(net: &IpNetwork) -> bool {
    matches!(net.network(), IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// Whether a kernel route can carry traffic to the server outside the tunnel.
fn outer_candidate(r: &KernelRoute, tun: &str) -> bool {
    r.kind == "unicast" && !r.is_ours() && r.is_alive() && r.dev.as_deref() != Some(tun)
}

/// The route the kernel would use for `server` if twoway had installed
/// nothing: longest prefix, then lowest metric, among live unicast routes of
/// the main table that are not ours and not on the TUN device.
pub fn outer_path(snapshot: &Snapshot, server: IpAddr, tun: &str) -> Option<OuterPath> {
    snapshot
        .routes
        .iter()
        .filter(|r| outer_candidate(r, tun) && r.dst.contains(server) && r.dev.is_some())
        .max_by(|a, b| {
            a.dst
                .prefix()
                .cmp(&b.dst.prefix())
                .then(b.metric.cmp(&a.metric))
        })
        .map(|r| OuterPath {
            gateway: r.gateway,
            dev: r.dev.clone().unwrap_or_default(),
        })
}

/// Directly connected subnets of `dev` in one family (not link-local).
pub fn lan_subnets(snapshot: &Snapshot, dev: &str, v6: bool) -> Vec<IpNetwork> {
    snapshot
        .routes
        .iter()
        .filter(|r| {
            r.dev.as_deref() == Some(dev)
                && r.kind == "unicast"
                && r.gateway.is_none()
                && !r.is_ours()
                && r.dst.is_ipv6() == v6
                && r.dst.prefix() > 0
                && halves(r.dst).is_some()
                && !is_link_local(&r.dst)
                && (v6 || r.scope == "link")
        })
        .map(|r| r.dst)
        .collect()
}

/// The routes the client wants. See the module documentation.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let a = input.assignment;
    let has6 = a.address6.is_some();
    let full = |v6: bool| {
        a.routes
            .iter()
            .any(|r| r.is_ipv6() == v6 && r.prefix() == 0)
    };
    let (full4, full6) = (full(false), full(true));
    let tun = |dst| RouteSpec::dev(dst, input.tun);
    let mut inner = Vec::new();
    for r in &a.routes {
        let parts = if r.prefix() == 0 {
            halves(*r).map(Vec::from).unwrap_or_default()
        } else {
            vec![*r]
        };
        for dst in parts {
            inner.push(if r.is_ipv6() && !has6 {
                RouteSpec::unreachable(dst)
            } else {
                tun(dst)
            });
        }
    }
    let tunnelled = |v6: bool| if v6 { full6 && has6 } else { full4 };
    let mut blocked = Vec::new();
    for v6 in [false, true] {
        let covered = if v6 { full6 } else { full4 };
        if (full4 || full6) && !covered {
            // The other family is tunnelled: this one must not leak around it.
            blocked.extend(all_halves(v6).into_iter().map(RouteSpec::unreachable));
        }
        if tunnelled(v6) {
            blocked.extend(all_halves(v6).into_iter().map(|dst| RouteSpec {
                metric: Some(BACKSTOP_METRIC),
                ..RouteSpec::unreachable(dst)
            }));
        }
    }
    let outer = outer_path(input.snapshot, input.server, input.tun);
    let pinned = inner
        .iter()
        .chain(&blocked)
        .any(|r| r.dst.contains(input.server));
    let mut routes = Vec::new();
    let mut lan = Vec::new();
    if pinned {
        let host = IpNetwork::from(input.server);
        match &outer {
            Some(path) => {
                if !input.allow_lan && (full4 || full6) {
                    for v6 in [false, true] {
                        let into = |dst| {
                            if tunnelled(v6) {
                                tun(dst)
                            } else {
                                RouteSpec::unreachable(dst)
                            }
                        };
                        for subnet in lan_subnets(input.snapshot, &path.dev, v6) {
                            if let Some(gw) = path.gateway.filter(|g| subnet.contains(*g)) {
                                routes.push(RouteSpec::dev(IpNetwork::from(gw), &path.dev));
                            }
                            lan.extend(halves(subnet).into_iter().flatten().map(into));
                        }
                    }
                }
                routes.push(match path.gateway {
                    Some(gateway) => RouteSpec::via(host, gateway, &path.dev),
                    None => RouteSpec::dev(host, &path.dev),
                });
            }
            // No way to the server: fail fast rather than loop into the tunnel.
            None => routes.push(RouteSpec::unreachable(host)),
        }
    }
    routes.extend(inner);
    routes.extend(lan);
    routes.extend(blocked);
    Plan {
        routes,
        outer,
        full_tunnel: full4 || full6,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
