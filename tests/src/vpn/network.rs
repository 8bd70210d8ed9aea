//! The network of a [`Vpn`] lab beyond the core topology of `lab.rs`, and
//! what the kernel reports: a laptop whose default gateway is the server host,
//! the server's "public" address behind that gateway, an "internet" host
//! reachable only through the tunnel, IPv6 on the links; routes, pings,
//! /proc/net/snmp counters and a plain HTTP GET from inside a namespace.
//!
//! ```text
//!  cli1 eth0 198.18.1.1, fd18:1::1 ── default via 198.18.1.2 / fd18:1::2
//!  srv  cli1 198.18.1.2, fd18:1::2   lo 198.18.3.2 (the address clients dial)
//!       lan  198.19.0.1, fd19::1     forwards v4 and v6; refuses cli1 -> 198.18.200.0/24
//!  lan  eth0 198.19.0.2, fd19::2     lo 198.18.200.1 (the "internet")
//! ```

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::proc;

use super::Vpn;

/// The server's address behind the laptop's gateway.
pub const SERVER_PUBLIC: &str = "198.18.3.2";
/// `SERVER_PUBLIC:4433`.
pub const SERVER_PUBLIC_ADDR: &str = "198.18.3.2:4433";
/// The laptop's gateway (the server host's address on the laptop link).
pub const GATEWAY: &str = "198.18.1.2";
/// An "internet" host: reachable from the laptop only through the tunnel.
pub const INTERNET_HOST: &str = "198.18.200.1";
/// An address on the laptop's own subnet.
pub const LAN_NEIGHBOUR: &str = "198.18.1.3";
/// The corporate host's IPv6 address.
pub const LAN_HOST6: &str = "fd19::2";
/// The IPv6 tunnel network.
pub const TUNNEL_NET6: &str = "fd77::/64";
/// The routing protocol number the client marks its routes with.
pub const CLIENT_PROTO: &str = "119";

impl Vpn {
    /// Run setup commands in `ns`; each must succeed.
    pub fn setup_in(&self, ns: &str, commands: &[&[&str]]) {
        for args in commands {
            let out = self.lab.exec(ns, args);
            self.check(out.success(), "extend the lab topology", &out);
        }
    }

    /// The topology of the module documentation on top of the core lab.
    pub fn add_gateway_topology(&self) {
        let (cli1, srv, lan) = (&self.lab.cli1, &self.lab.srv, &self.lab.lan);
        self.setup_in(
            srv,
            &[
                &["ip", "addr", "add", "198.18.3.2/32", "dev", "lo"],
                &["ip", "addr", "add", "198.18.1.3/24", "dev", "cli1"],
                &["ip", "route", "add", "198.18.200.0/24", "via", "198.19.0.2"],
                // Only tunnelled traffic may reach the internet host.
                &[
                    "ip",
                    "rule",
                    "add",
                    "iif",
                    "cli1",
                    "to",
                    "198.18.200.0/24",
                    "prohibit",
                ],
            ],
        );
        self.setup_in(
            lan,
            &[&["ip", "addr", "add", "198.18.200.1/32", "dev", "lo"]],
        );
        self.setup_in(cli1, &[&["ip", "route", "add", "default", "via", GATEWAY]]);
    }

    /// IPv6 on the corporate link and (with `laptop`) on the laptop link with
    /// a v6 default route for the laptop; the server host forwards IPv6.
    pub fn add_ipv6(&self, laptop: bool) {
        let (cli1, srv, lan) = (&self.lab.cli1, &self.lab.srv, &self.lab.lan);
        self.setup_in(
            srv,
            &[
                &[
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
                ],
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "fd19::1/64",
                    "dev",
                    "lan",
                    "nodad",
                ],
            ],
        );
        self.setup_in(
            lan,
            &[
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "fd19::2/64",
                    "dev",
                    "eth0",
                    "nodad",
                ],
                &["ip", "-6", "route", "add", "default", "via", "fd19::1"],
            ],
        );
        if laptop {
            self.setup_in(
                srv,
                &[&[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "fd18:1::2/64",
                    "dev",
                    "cli1",
                    "nodad",
                ]],
            );
            self.setup_in(
                cli1,
                &[
                    &[
                        "ip",
                        "-6",
                        "addr",
                        "add",
                        "fd18:1::1/64",
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                    &["ip", "-6", "route", "add", "default", "via", "fd18:1::2"],
                ],
            );
        }
    }

    pub fn expect_ping(&self, ns: &str, addr: &str, step: &str) {
        if !self.lab.ping(ns, addr) {
            self.fail(
                step,
                format_args!(
                    "no reply from {addr} in {ns}\n{}\n{}",
                    self.lab.describe(ns),
                    self.lab.describe(&self.lab.srv)
                ),
            );
        }
        self.passed(step);
    }

    /// The `dev` of `ip route get ADDR` in `ns`.
    pub fn route_dev(&self, ns: &str, addr: &str) -> Option<String> {
        self.lab
            .route_get(ns, addr)
            .and_then(|r| r["dev"].as_str().map(String::from))
    }

    /// `ip route get ADDR` in `ns` must use `dev` (and `via`, if given).
    pub fn expect_route_via(&self, ns: &str, addr: &str, dev: &str, via: Option<&str>, step: &str) {
        let got = self.lab.route_get(ns, addr);
        let ok = got.as_ref().is_some_and(|v| {
            v["dev"] == dev && via.is_none_or(|g| v["gateway"].as_str() == Some(g))
        });
        self.check(
            ok,
            step,
            format_args!(
                "ip route get {addr}: {got:?}, expected dev {dev} via {via:?}\n{}",
                self.describe6(ns)
            ),
        );
    }

    /// `ip route get ADDR` in `ns` must fail (unreachable: nothing leaks).
    pub fn expect_unrouted(&self, ns: &str, addr: &str, step: &str) {
        let got = self.lab.route_get(ns, addr);
        self.check(
            got.is_none(),
            step,
            format_args!(
                "ip route get {addr}: {got:?}, expected unreachable\n{}",
                self.describe6(ns)
            ),
        );
    }

    /// Routes of both families in all tables, for messages.
    pub fn describe6(&self, ns: &str) -> String {
        let v6 = proc::run(
            &["ip", "-n", ns, "-6", "route", "show", "table", "main"],
            Duration::from_secs(10),
        );
        format!(
            "{}\n[{ns}] IPv6 routes:\n{}",
            self.lab.describe(ns),
            v6.stdout.trim_end()
        )
    }

    /// Routes the client installed (protocol 119) in `ns`, both families.
    pub fn installed_routes(&self, ns: &str) -> Vec<String> {
        ["-4", "-6"]
            .iter()
            .flat_map(|family| {
                proc::run(
                    &[
                        "ip",
                        "-n",
                        ns,
                        family,
                        "route",
                        "show",
                        "table",
                        "all",
                        "proto",
                        CLIENT_PROTO,
                    ],
                    Duration::from_secs(10),
                )
                .stdout
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// One counter of /proc/net/snmp in `ns` (e.g. `Icmp`, `InEchos`): the
/// kernel's own count of what reached that namespace.
pub fn snmp_counter(ns: &str, group: &str, field: &str) -> Option<u64> {
    let out = proc::run(
        &["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
        Duration::from_secs(10),
    );
    parse_snmp(&out.stdout, group, field)
}

/// One counter of /proc/net/snmp6 in `ns` (e.g. `Udp6NoPorts`).
pub fn snmp6_counter(ns: &str, field: &str) -> Option<u64> {
    let out = proc::run(
        &["ip", "netns", "exec", ns, "cat", "/proc/net/snmp6"],
        Duration::from_secs(10),
    );
    out.stdout.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == field).then(|| words.next()?.parse().ok())?
    })
}

/// /proc/net/snmp holds pairs of lines: `Group: names...` then `Group: values...`.
fn parse_snmp(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// `GET /metrics` over plain HTTP from inside `ns`; the body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    crate::in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_snmp_pairs() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Icmp: InMsgs InErrors InEchos\nIcmp: 7 0 3\n\
                    IcmpMsg: InType8\nIcmpMsg: 3\n";
        assert_eq!(parse_snmp(text, "Icmp", "InEchos"), Some(3));
        assert_eq!(parse_snmp(text, "Ip", "Forwarding"), Some(1));
        assert_eq!(parse_snmp(text, "Icmp", "OutEchos"), None);
        assert_eq!(parse_snmp(text, "Tcp", "InSegs"), None);
    }
}
