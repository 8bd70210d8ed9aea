//! Steps and checks of the end-to-end tests on a [`Vpn`] fixture: bringing
//! clients up and down, pings, `status --json` on both sides, probing the
//! server with `openssl s_client`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::vpn::{
    bare_ip, counters_moved, net, path_str, Vpn, CORP_NET, LAN_HOST, SERVER_ADDR, SERVER_NAME,
    TUNNEL_NET,
};
use crate::{wait_until, CmdOutput};

impl Vpn {
    /// `twoway up --config NAME.toml --detach` in `ns`.
    pub fn up(&self, ns: &str, config: &Path) -> CmdOutput {
        self.client_cmd(
            ns,
            &["up", "--config", path_str(config), "--detach"],
            Duration::from_secs(60),
        )
    }

    /// `up` must exit 0, and the TUN device must carry an address in `expect`.
    /// Returns that address.
    pub fn bring_up(&self, ns: &str, name: &str, expect: IpNetwork) -> IpAddr {
        let step = format!("`twoway up --detach` for {name} in {ns}");
        let out = self.up(ns, &self.client_config(name));
        self.check(
            out.code() == Some(0),
            &step,
            format_args!("expected exit code 0\n{out}"),
        );
        let found = self.lab.addr_in(ns, net(TUNNEL_NET));
        match found {
            Some(a) if expect.contains(a.addr) => {
                self.passed(&format!("{name} has {} on {} in {ns}", a.addr, a.ifname));
                a.addr
            }
            other => self.fail(
                &format!("{name}'s tunnel address after `up`"),
                format_args!(
                    "expected an address in {expect} on the TUN device, found {other:?}\n{}\n`up` said:\n{out}",
                    self.lab.describe(ns)
                ),
            ),
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

    pub fn parse_json(&self, step: &str, out: &CmdOutput) -> Value {
        self.check(out.success(), step, out);
        match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(e) => self.fail(
                step,
                format_args!("stdout is not one JSON object ({e})\n{out}"),
            ),
        }
    }

    pub fn client_status(&self, ns: &str, name: &str) -> (Value, CmdOutput) {
        let out = self.client_cmd(
            ns,
            &[
                "status",
                "--json",
                "--config",
                path_str(&self.client_config(name)),
            ],
            Duration::from_secs(20),
        );
        let v = self.parse_json(&format!("`twoway status --json` for {name}"), &out);
        (v, out)
    }

    /// `twoway status --json`: state up, the expected address, the policy routes.
    pub fn expect_client_status_up(&self, ns: &str, name: &str, addr: IpAddr) {
        let step = format!("`twoway status --json` for {name} shows the tunnel up");
        let (v, out) = self.client_status(ns, name);
        self.check(
            v["state"] == "up",
            &step,
            format_args!("state is {}, expected \"up\"\n{out}", v["state"]),
        );
        let got = v["address"].as_str().map(bare_ip);
        self.check(
            got == Some(addr.to_string().as_str()),
            &step,
            format_args!("address is {}, expected {addr}\n{out}", v["address"]),
        );
        let has_route = v["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x.as_str() == Some(CORP_NET)));
        self.check(
            has_route,
            &step,
            format_args!("routes do not list {CORP_NET}\n{out}"),
        );
        // Called after a ping went through, so both counters have moved.
        self.check(
            counters_moved(&v),
            &step,
            format_args!("rx_bytes/tx_bytes are not both > 0 after a ping\n{out}"),
        );
    }

    pub fn server_status(&self, step: &str) -> (Vec<Value>, CmdOutput) {
        let config = self.server_config();
        let out = self.lab.exec(
            &self.lab.srv,
            &[
                self.bins.server_str(),
                "status",
                "--json",
                "--config",
                path_str(&config),
            ],
        );
        let v = self.parse_json(step, &out);
        match v["sessions"].as_array() {
            Some(s) => (s.clone(), out),
            None => self.fail(step, format_args!("no `sessions` list\n{out}")),
        }
    }

    pub fn session<'a>(sessions: &'a [Value], identity: &str) -> Option<&'a Value> {
        sessions.iter().find(|s| s["identity"] == identity)
    }

    /// `openssl s_client -connect SERVER -servername vpn.test ARGS` in cli1.
    pub fn openssl(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec![
            "openssl",
            "s_client",
            "-connect",
            SERVER_ADDR,
            "-servername",
            SERVER_NAME,
        ];
        full.extend_from_slice(args);
        self.lab
            .exec_timeout(&self.lab.cli1, &full, Duration::from_secs(20))
    }

    /// An `openssl s_client -quiet` run ended because the server closed the
    /// connection, and printed no application data.
    pub fn expect_closed_without_data(&self, out: &CmdOutput, what: &str) {
        self.check(
            !out.timed_out(),
            &format!("the server closes a connection: {what}"),
            format_args!("the connection stayed open for 20 s\n{out}"),
        );
        self.check(
            out.stdout.trim().is_empty(),
            &format!("no application data for: {what}"),
            out,
        );
    }

    /// `twoway-server status --json` lists exactly one session, of `identity`.
    pub fn expect_only_session(&self, identity: &str) {
        let step = format!("`twoway-server status --json` lists only {identity}");
        let (sessions, out) = self.server_status(&step);
        self.check(
            sessions.len() == 1 && Vpn::session(&sessions, identity).is_some(),
            &step,
            &out,
        );
    }

    /// `twoway down`, then nothing of the tunnel may remain in `ns`.
    pub fn take_down(&self, ns: &str, name: &str) {
        let step = format!("`twoway down` for {name} in {ns}");
        let out = self.client_cmd(
            ns,
            &["down", "--config", path_str(&self.client_config(name))],
            Duration::from_secs(30),
        );
        self.check(
            out.code() == Some(0),
            &step,
            format_args!("expected exit code 0\n{out}"),
        );
        let clean = wait_until(Duration::from_secs(10), || {
            self.lab.addr_in(ns, net(TUNNEL_NET)).is_none()
                && self.lab.routes_overlapping(ns, net(CORP_NET)).is_empty()
                && self.lab.route_get(ns, LAN_HOST).is_none()
                && self.lab.pids(ns).is_empty()
        });
        if !clean {
            self.fail(
                &format!("after `twoway down` for {name}, nothing of the tunnel remains in {ns}"),
                format_args!(
                    "within 10 s: tunnel address {:?}, routes into {CORP_NET}: {:?}, \
                     route get {LAN_HOST}: {:?}, processes left: {:?}\n{}",
                    self.lab.addr_in(ns, net(TUNNEL_NET)),
                    self.lab
                        .routes_overlapping(ns, net(CORP_NET))
                        .iter()
                        .map(|r| r.raw.to_string())
                        .collect::<Vec<_>>(),
                    self.lab.route_get(ns, LAN_HOST),
                    self.lab.pids(ns),
                    self.lab.describe(ns)
                ),
            );
        }
    }
}
