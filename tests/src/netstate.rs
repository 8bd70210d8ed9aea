//! Reading the network state of a namespace with `ip -j` (addresses,
//! routes, route lookups), for assertions and failure messages.

use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::proc;

/// An IP address on an interface, from `ip -j addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A route, from `ip -j route`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `None` for the default route.
    pub dst: Option<IpNetwork>,
    pub dev: Option<String>,
    pub gateway: Option<IpAddr>,
    /// The whole JSON object, for messages.
    pub raw: Value,
}

/// `ip -j addr` inside `ns`.
pub fn addrs(ns: &str) -> Vec<IfAddr> {
    parse_addrs(&ip_json(&["-n", ns, "-j", "addr", "show"]))
}

/// The first address inside `net` on any interface of `ns`.
pub fn addr_in(ns: &str, net: IpNetwork) -> Option<IfAddr> {
    addrs(ns).into_iter().find(|a| net.contains(a.addr))
}

/// IPv4 routes of every table in `ns` (`ip -4 -j route show table all`).
pub fn routes(ns: &str) -> Vec<Route> {
    parse_routes(&ip_json(&[
        "-n", ns, "-4", "-j", "route", "show", "table", "all",
    ]))
}

/// Routes in `ns` whose destination overlaps `net` (default routes excluded).
pub fn routes_overlapping(ns: &str, net: IpNetwork) -> Vec<Route> {
    routes(ns)
        .into_iter()
        .filter(|r| r.dst.is_some_and(|d| overlaps(d, net)))
        .collect()
}

/// `ip route get ADDR` in `ns`: the route the kernel would use, if any.
pub fn route_get(ns: &str, addr: &str) -> Option<Value> {
    let out = proc::run(
        &["ip", "-n", ns, "-j", "route", "get", addr],
        Duration::from_secs(10),
    );
    if !out.success() {
        return None;
    }
    serde_json::from_str::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
}

/// A readable dump of addresses and routes of `ns`, for failure messages.
pub fn describe(ns: &str) -> String {
    let a = proc::run(&["ip", "-n", ns, "-br", "addr"], Duration::from_secs(10));
    let r = proc::run(
        &["ip", "-n", ns, "route", "show", "table", "all"],
        Duration::from_secs(10),
    );
    format!(
        "[{ns}] addresses:\n{}\n[{ns}] routes (all tables):\n{}",
        a.stdout.trim_end(),
        r.stdout.trim_end()
    )
}

fn ip_json(args: &[&str]) -> Value {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    let out = proc::run(&full, Duration::from_secs(10));
    assert!(out.success(), "reading network state failed:\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`{}` printed invalid JSON ({e}):\n{}",
            out.command, out.stdout
        )
    })
}

fn parse_addrs(v: &Value) -> Vec<IfAddr> {
    let mut found = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let ifname = link["ifname"].as_str().unwrap_or_default();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            if let (Ok(addr), Ok(prefix)) = (local.parse(), u8::try_from(prefix)) {
                found.push(IfAddr {
                    ifname: ifname.to_string(),
                    addr,
                    prefix,
                });
            }
        }
    }
    found
}

fn parse_routes(v: &Value) -> Vec<Route> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| Route {
            dst: r["dst"].as_str().and_then(parse_dst),
            dev: r["dev"].as_str().map(String::from),
            gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
            raw: r.clone(),
        })
        .collect()
}

/// `ip` prints host routes without a prefix length and `default` for 0/0.
fn parse_dst(s: &str) -> Option<IpNetwork> {
    if s == "default" {
        return None;
    }
    s.parse::<IpNetwork>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNetwork::from))
}

/// Whether two networks share any address.
pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let addrs: Value = serde_json::from_str(
            r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
                {"ifname":"tun0","addr_info":[{"family":"inet","local":"198.18.77.10","prefixlen":24},
                                              {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#,
        )
        .unwrap();
        let a = parse_addrs(&addrs);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].ifname, "tun0");
        assert_eq!(a[1].addr, "198.18.77.10".parse::<IpAddr>().unwrap());
        assert_eq!(a[1].prefix, 24);

        let routes: Value = serde_json::from_str(
            r#"[{"dst":"default","gateway":"198.19.0.1","dev":"eth0"},
                {"dst":"198.19.0.0/24","dev":"tun0"},
                {"type":"local","dst":"198.18.1.1","dev":"eth0","table":"local"}]"#,
        )
        .unwrap();
        let r = parse_routes(&routes);
        assert!(r[0].dst.is_none());
        assert_eq!(r[0].gateway, Some("198.19.0.1".parse().unwrap()));
        let corp: IpNetwork = "198.19.0.0/24".parse().unwrap();
        assert!(overlaps(r[1].dst.unwrap(), corp));
        assert_eq!(r[2].dst, Some("198.18.1.1/32".parse().unwrap()));
        assert!(!overlaps(r[2].dst.unwrap(), corp));
    }
}
