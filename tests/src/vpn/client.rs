//! The client of a [`Vpn`] lab: the `twoway` binary inside a namespace,
//! detached (`up --detach`, `down`) or in the foreground as a lab process,
//! and its `status --json`.

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::vpn::path_str;
use crate::{proc, wait_for, wait_until, CmdOutput, ProcHandle};

use super::{alice_net, bare_ip, net, Vpn, CORP_NET, LAN_HOST, RUST_LOG, TUNNEL_NET, TUNNEL_POOL};

impl Vpn {
    /// The path of the client binary under test.
    pub fn bins_client(&self) -> &'static str {
        self.bins.client_str()
    }

    /// The client binary inside `ns`.
    pub fn client_cmd(&self, ns: &str, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut full = vec![self.bins.client_str()];
        full.extend_from_slice(args);
        self.lab
            .exec_env(ns, &full, &[("RUST_LOG", RUST_LOG)], timeout)
    }

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

    /// alice up in cli1 at her static address, and a ping from her to the
    /// LAN host through the tunnel: where most tests begin.
    pub fn alice_up(&self) -> IpAddr {
        let cli1 = &self.lab.cli1;
        let addr = self.bring_up(cli1, "alice", alice_net());
        self.expect_ping(cli1, LAN_HOST, "alice pings the lan host");
        addr
    }

    /// alice up in cli1 at her static address and bob in cli2 from the pool,
    /// each pinging the LAN host: where the two-client tests begin. Returns
    /// their addresses.
    pub fn alice_and_bob_up(&self) -> (IpAddr, IpAddr) {
        let (cli1, cli2) = (&self.lab.cli1, &self.lab.cli2);
        let alice = self.bring_up(cli1, "alice", alice_net());
        let bob = self.bring_up(cli2, "bob", net(TUNNEL_POOL));
        self.expect_ping(cli1, LAN_HOST, "alice pings the lan host");
        self.expect_ping(cli2, LAN_HOST, "bob pings the lan host");
        (alice, bob)
    }

    /// [`Vpn::take_down`], then [`Vpn::stop_server`]: the clean end that
    /// most tests check.
    pub fn take_down_and_stop(&mut self, ns: &str, name: &str) {
        self.take_down(ns, name);
        self.stop_server();
    }

    /// The clean end of the two-client tests: alice down in cli1, bob in
    /// cli2, then [`Vpn::stop_server`].
    pub fn take_both_down_and_stop(&mut self) {
        let (cli1, cli2) = (self.lab.cli1.clone(), self.lab.cli2.clone());
        self.take_down(&cli1, "alice");
        self.take_down(&cli2, "bob");
        self.stop_server();
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

    /// `twoway down` for `name` in `ns`.
    pub fn twoway_down(&self, ns: &str, name: &str) -> CmdOutput {
        self.client_cmd(
            ns,
            &["down", "--config", path_str(&self.client_config(name))],
            Duration::from_secs(30),
        )
    }

    /// `twoway up --config NAME.toml` in the foreground inside `ns`, as a lab
    /// process whose exit code the test can observe. Waits until it is up.
    pub fn spawn_client(&self, ns: &str, name: &str) -> ProcHandle {
        let config = self.client_config(name);
        let handle = self.lab.spawn_env(
            ns,
            &format!("{name}-up"),
            &[self.bins.client_str(), "up", "--config", path_str(&config)],
            &[("RUST_LOG", RUST_LOG)],
        );
        self.wait_client_state(
            ns,
            name,
            "up",
            Duration::from_secs(20),
            &format!("`twoway up` (foreground) for {name} in {ns} comes up"),
        );
        handle
    }

    /// Wait for a foreground client to exit; its exit status.
    pub fn wait_exit(&self, p: &ProcHandle, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.lab.exited(p))
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

    /// `twoway status --json` for NAME, or `None` while it does not answer.
    pub fn client_state(&self, ns: &str, name: &str) -> Option<Value> {
        let config = self.client_config(name);
        let out = self.client_cmd(
            ns,
            &["status", "--json", "--config", path_str(&config)],
            Duration::from_secs(10),
        );
        if !out.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Poll NAME's `status --json` until `state` is `want`; returns the status
    /// and how long it took. Fails the step after `timeout`.
    pub fn wait_client_state(
        &self,
        ns: &str,
        name: &str,
        want: &str,
        timeout: Duration,
        step: &str,
    ) -> (Value, Duration) {
        let start = Instant::now();
        let mut last = None;
        let found = wait_for(timeout, || {
            let v = self.client_state(ns, name);
            let hit = v.as_ref().is_some_and(|v| v["state"] == want);
            last = v.clone();
            hit.then_some(v).flatten()
        });
        match found {
            Some(v) => {
                self.passed(step);
                (v, start.elapsed())
            }
            None => self.fail(
                step,
                format_args!(
                    "state is not {want:?} after {timeout:?}; last status: {}\n{}",
                    last.map_or_else(|| "no answer".to_string(), |v| v.to_string()),
                    self.lab.describe(ns)
                ),
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

    /// `twoway status --json` of `name` in `ns`.
    pub fn client_status_json(&self, ns: &str, name: &str) -> Value {
        self.client_status(ns, name).0
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

    /// The TUN device of a running client, from its status.
    pub fn client_device(&self, ns: &str, name: &str) -> String {
        let step = format!("{name}'s status names its TUN device");
        let v = self.client_state(ns, name);
        match v.as_ref().and_then(|v| v["device"].as_str()) {
            Some(d) => d.to_string(),
            None => self.fail(&step, format_args!("status: {v:?}")),
        }
    }
}

/// `rx_bytes` and `tx_bytes` are both numbers above zero.
pub fn counters_moved(v: &Value) -> bool {
    ["rx_bytes", "tx_bytes"]
        .iter()
        .all(|k| v[k].as_u64().is_some_and(|n| n > 0))
}
