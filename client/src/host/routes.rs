//! Routes as twoway installs them with the `ip` tool, and the kernel's routing
//! table as `ip -j` prints it. Argument building and parsing are pure and
//! unit-tested; only [`read_snapshot`] runs the tool (through `tool.rs`).
//!
//! Every route twoway adds carries the routing protocol number [`PROTO`], so
//! `ip route show proto 119` lists them and path lookups can leave them out.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tool::{ip_json, HostError};

/// The `proto` of every route twoway installs (0x77, unused by routing daemons).
pub const PROTO: u8 = 119;

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Directly out of a device (the TUN device, or on-link on the outer device).
    Dev(String),
    /// Through a gateway on a device.
    Via {
        /// The next hop.
        gateway: IpAddr,
        /// Its device.
        dev: String,
    },
    /// Nowhere: the sender gets "network unreachable" at once.
    Unreachable,
}

/// One route twoway installs in the main table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination network.
    pub dst: IpNetwork,
    /// Where it leads.
    pub target: Target,
    /// Explicit metric; `None` leaves the kernel default (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

/// As `ip route` writes it: `10.99.0.0/24 via 192.0.2.1 dev eth0 metric 5`.
impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Dev(dev) => write!(f, "{} dev {dev}", self.dst)?,
            Target::Via { gateway, dev } => write!(f, "{} via {gateway} dev {dev}", self.dst)?,
            Target::Unreachable => write!(f, "unreachable {}", self.dst)?,
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

impl RouteSpec {
    /// A route out of `dev`.
    pub fn dev(dst: IpNetwork, dev: &str) -> Self {
        Self {
            dst,
            target: Target::Dev(dev.to_owned()),
            metric: None,
        }
    }

    /// A route through `gateway` on `dev`.
    pub fn via(dst: IpNetwork, gateway: IpAddr, dev: &str) -> Self {
        Self {
            dst,
            target: Target::Via {
                gateway,
                dev: dev.to_owned(),
            },
            metric: None,
        }
    }

    /// An unreachable route.
    pub fn unreachable(dst: IpNetwork) -> Self {
        Self {
            dst,
            target: Target::Unreachable,
            metric: None,
        }
    }

    /// The metric the kernel gives this route.
    pub fn effective_metric(&self) -> u32 {
        self.metric
            .unwrap_or(if self.dst.is_ipv4() { 0 } else { 1024 })
    }

    /// The device this route uses, if any.
    pub fn device(&self) -> Option<&str> {
        match &self.target {
            Target::Dev(d) | Target::Via { dev: d, .. } => Some(d),
            Target::Unreachable => None,
        }
    }
}

/// What to do with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// Add, or update if present.
    Replace,
    /// Remove exactly this route (type, gateway, device, protocol and metric must match).
    Delete,
}

/// `ip` arguments to add (replace) or delete `spec`. Pure.
pub fn route_args(action: RouteAction, spec: &RouteSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![
        if spec.dst.is_ipv4() { "-4" } else { "-6" }.into(),
        "route".into(),
        match action {
            RouteAction::Replace => "replace",
            RouteAction::Delete => "del",
        }
        .into(),
    ];
    if spec.target == Target::Unreachable {
        a.push("unreachable".into());
    }
    a.push(spec.dst.to_string());
    match &spec.target {
        Target::Dev(dev) => a.extend(["dev".into(), dev.clone()]),
        Target::Via { gateway, dev } => {
            a.extend(["via".into(), gateway.to_string(), "dev".into(), dev.clone()])
        }
        Target::Unreachable => {}
    }
    a.extend(["proto".into(), PROTO.to_string()]);
    if let Some(m) = spec.metric {
        a.extend(["metric".into(), m.to_string()]);
    }
    a
}

/// A route of the kernel's main table, from `ip -j route show table main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination (`default` becomes 0.0.0.0/0 or ::/0).
    pub dst: IpNetwork,
    /// `unicast`, `unreachable`, `blackhole`, ...
    pub kind: String,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Device, if any.
    pub dev: Option<String>,
    /// Routing protocol: `kernel`, `boot`, `static`, `dhcp`, `119`, ...
    pub protocol: String,
    /// `link`, `host` or `global`.
    pub scope: String,
    /// Metric (the kernel's default when `ip` omits it).
    pub metric: u32,
    /// Flags such as `linkdown` or `dead`.
    pub flags: Vec<String>,
}

impl KernelRoute {
    /// Whether twoway installed this route.
    pub fn is_ours(&self) -> bool {
        self.protocol == PROTO.to_string()
    }

    /// Whether the route is usable (its device has a carrier and is not dead).
    pub fn is_alive(&self) -> bool {
        !self.flags.iter().any(|f| f == "linkdown" || f == "dead")
    }

    /// Whether this kernel route is `spec`, as installed.
    pub fn matches(&self, spec: &RouteSpec) -> bool {
        if self.dst != spec.dst || !self.is_ours() || self.metric != spec.effective_metric() {
            return false;
        }
        match &spec.target {
            Target::Unreachable => self.kind == "unreachable",
            Target::Dev(dev) => {
                self.kind == "unicast" && self.gateway.is_none() && self.dev.as_ref() == Some(dev)
            }
            Target::Via { gateway, dev } => {
                self.kind == "unicast"
                    && self.gateway == Some(*gateway)
                    && self.dev.as_ref() == Some(dev)
            }
        }
    }
}

/// Parses `ip -j -4|-6 route show table main`. Pure.
pub fn parse_routes(json: &Value, ipv6: bool) -> Vec<KernelRoute> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    json.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let dst = match r["dst"].as_str()? {
                "default" if ipv6 => "::/0".parse().ok()?,
                "default" => "0.0.0.0/0".parse().ok()?,
                s => s
                    .parse::<IpNetwork>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNetwork::from))?,
            };
            Some(KernelRoute {
                dst,
                kind: text(&r["type"]).unwrap_or_else(|| "unicast".into()),
                gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
                dev: text(&r["dev"]),
                protocol: text(&r["protocol"]).unwrap_or_else(|| "boot".into()),
                scope: text(&r["scope"]).unwrap_or_else(|| "global".into()),
                metric: r["metric"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(if ipv6 { 1024 } else { 0 }),
                flags: r["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            })
        })
        .collect()
}

/// Parses the local addresses out of `ip -j addr show`. Pure.
pub fn parse_addresses(json: &Value) -> Vec<IpAddr> {
    json.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect()
}

/// The host's routes (main table, both families) and addresses right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// IPv4 and IPv6 routes of the main table.
    pub routes: Vec<KernelRoute>,
    /// Every local address.
    pub addresses: Vec<IpAddr>,
}

/// Reads routes and addresses with `ip -j`.
pub async fn read_snapshot() -> Result<Snapshot, HostError> {
    let mut routes = parse_routes(
        &ip_json(&["-j", "-4", "route", "show", "table", "main"]).await?,
        false,
    );
    routes.extend(parse_routes(
        &ip_json(&["-j", "-6", "route", "show", "table", "main"]).await?,
        true,
    ));
    let addresses = parse_addresses(&ip_json(&["-j", "addr", "show"]).await?);
    Ok(Snapshot { routes, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn routes_display_as_ip_route_writes_them() {
        let mut r = RouteSpec::dev(net("10.99.0.0/24"), "tw-alice");
        assert_eq!(r.to_string(), "10.99.0.0/24 dev tw-alice");
        r.target = Target::Via {
            gateway: "192.0.2.1".parse().unwrap(),
            dev: "eth0".into(),
        };
        r.metric = Some(5);
        assert_eq!(
            r.to_string(),
            "10.99.0.0/24 via 192.0.2.1 dev eth0 metric 5"
        );
        r.target = Target::Unreachable;
        assert_eq!(r.to_string(), "unreachable 10.99.0.0/24 metric 5");
    }

    #[test]
    fn builds_family_specific_arguments() {
        assert_eq!(
            route_args(
                RouteAction::Replace,
                &RouteSpec::dev(net("10.99.0.0/24"), "tw-alice")
            ),
            [
                "-4",
                "route",
                "replace",
                "10.99.0.0/24",
                "dev",
                "tw-alice",
                "proto",
                "119"
            ]
        );
        assert_eq!(
            route_args(
                RouteAction::Delete,
                &RouteSpec::dev(net("fd99::/64"), "tw-alice")
            ),
            [
                "-6",
                "route",
                "del",
                "fd99::/64",
                "dev",
                "tw-alice",
                "proto",
                "119"
            ]
        );
    }

    #[test]
    fn builds_gateway_and_unreachable_arguments() {
        let via = RouteSpec::via(
            net("203.0.113.10/32"),
            "192.168.1.1".parse().unwrap(),
            "wlan0",
        );
        assert_eq!(
            route_args(RouteAction::Replace, &via),
            [
                "-4",
                "route",
                "replace",
                "203.0.113.10/32",
                "via",
                "192.168.1.1",
                "dev",
                "wlan0",
                "proto",
                "119"
            ]
        );
        let mut block = RouteSpec::unreachable(net("::/1"));
        block.metric = Some(4242);
        assert_eq!(
            route_args(RouteAction::Delete, &block),
            [
                "-6",
                "route",
                "del",
                "unreachable",
                "::/1",
                "proto",
                "119",
                "metric",
                "4242"
            ]
        );
    }

    #[test]
    fn parses_ip_json_and_matches_installed_routes() {
        let v4: Value = serde_json::from_str(
            r#"[{"type":"unreachable","dst":"0.0.0.0/1","protocol":"119","metric":4242,"flags":[]},
                {"dst":"default","gateway":"198.18.9.2","dev":"eth0","flags":[]},
                {"dst":"198.18.9.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"198.18.9.1","flags":["linkdown"]},
                {"dst":"198.18.10.5","gateway":"198.18.9.2","dev":"eth0","protocol":"119","flags":[]}]"#,
        )
        .unwrap();
        let r = parse_routes(&v4, false);
        assert_eq!(r.len(), 4);
        assert_eq!(r[1].dst, net("0.0.0.0/0"));
        assert_eq!(r[1].protocol, "boot");
        assert!(!r[2].is_alive() && r[2].scope == "link");
        assert_eq!(r[3].dst, net("198.18.10.5/32"));
        let mut block = RouteSpec::unreachable(net("0.0.0.0/1"));
        assert!(!r[0].matches(&block), "metric differs");
        block.metric = Some(4242);
        assert!(r[0].matches(&block));
        let host = RouteSpec::via(net("198.18.10.5/32"), "198.18.9.2".parse().unwrap(), "eth0");
        assert!(r[3].matches(&host));
        assert!(!r[1].matches(&host));

        let v6: Value = serde_json::from_str(
            r#"[{"type":"unreachable","dst":"::/1","dev":"lo","protocol":"119","metric":1024,"flags":[]},
                {"dst":"default","gateway":"fe80::1","dev":"eth0","protocol":"ra","metric":100,"flags":[]}]"#,
        )
        .unwrap();
        let r = parse_routes(&v6, true);
        assert!(r[0].matches(&RouteSpec::unreachable(net("::/1"))));
        assert_eq!(r[1].dst, net("::/0"));
        assert_eq!(r[1].metric, 100);
    }

    #[test]
    fn parses_addresses() {
        let v: Value = serde_json::from_str(
            r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8}]},
                {"ifname":"eth0","addr_info":[{"local":"198.18.1.1","prefixlen":24},{"local":"fe80::1","prefixlen":64}]}]"#,
        )
        .unwrap();
        let a = parse_addresses(&v);
        assert_eq!(a.len(), 3);
        assert!(a.contains(&"198.18.1.1".parse().unwrap()));
    }
}
