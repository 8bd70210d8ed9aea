//! Additions to the [`Vpn`] lab for the client networking tests: a laptop
//! whose default gateway is the server host, the server's "public" address
//! behind that gateway, an "internet" host reachable only through the tunnel,
//! IPv6 on the links, and checks of routes, leaks and leftovers.
//!
//! ```text
//!  cli1 eth0 198.18.1.1, fd18:1::1 ── default via 198.18.1.2 / fd18:1::2
//!  srv  cli1 198.18.1.2, fd18:1::2   lo 198.18.3.2 (the address clients dial)
//!       lan  198.19.0.1, fd19::1     forwards v4 and v6; refuses cli1 -> 198.18.200.0/24
//!  lan  eth0 198.19.0.2, fd19::2     lo 198.18.200.1 (the "internet")
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::toml_files::{self, edit_toml};
use crate::vpn::{path_str, toml_str, Vpn};
use crate::{proc, CmdOutput};

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

    /// Replace the policy (the file server.toml names).
    pub fn replace_policy(&self, text: &str) {
        let path = match toml_str(&self.server_config(), "policy") {
            Some(p) => self.pki.join(p),
            None => self.pki.join("policy.toml"),
        };
        std::fs::write(path, text).expect("write policy.toml");
    }

    /// Set keys of a client's config (`("tunnel.allow_lan", true.into())`).
    pub fn set_client_keys(&self, name: &str, keys: &[(&str, toml::Value)]) {
        edit_toml(&self.client_config(name), |t| {
            for (k, v) in keys {
                toml_files::set(t, k, v.clone());
            }
        });
    }

    /// The state file of a client (next to its control socket).
    pub fn client_state_file(&self, name: &str) -> PathBuf {
        self.tmp(&format!("run/{name}.state"))
    }

    /// The device `ip route get ADDR` picks in `ns`; `None` when no route.
    pub fn route_get_dev(&self, ns: &str, addr: &str) -> Option<String> {
        self.lab
            .route_get(ns, addr)
            .and_then(|v| v["dev"].as_str().map(String::from))
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

    /// `ping -c 1` (v4 or v6) from `ns`, three tries.
    pub fn pings(&self, ns: &str, addr: &str) -> bool {
        self.lab.ping(ns, addr)
    }

    /// `twoway status --json` of `name` in `ns`.
    pub fn client_status_json(&self, ns: &str, name: &str) -> Value {
        self.client_status(ns, name).0
    }

    /// `twoway down` for `name` in `ns`.
    pub fn twoway_down(&self, ns: &str, name: &str) -> CmdOutput {
        self.client_cmd(
            ns,
            &["down", "--config", path_str(&self.client_config(name))],
            Duration::from_secs(30),
        )
    }

    /// SIGKILL every process in `ns` (the detached client) and wait until gone.
    pub fn kill_clients(&self, ns: &str) {
        let pids = self.lab.pids(ns);
        self.check(!pids.is_empty(), "find the client process", "no process");
        for pid in &pids {
            proc::signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let gone = crate::wait_until(Duration::from_secs(10), || {
            pids.iter().all(|p| !proc::pid_alive(*p))
        });
        self.check(gone, "the killed client is gone", format_args!("{pids:?}"));
        let no_tun = crate::wait_until(Duration::from_secs(10), || {
            !self
                .lab
                .exec(ns, &["ip", "-o", "link"])
                .stdout
                .contains(": tw-")
        });
        self.check(
            no_tun,
            "the TUN device went with the process",
            self.lab.describe(ns),
        );
    }
}

/// Read a file, empty if missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
