//! End-to-end tests of the real `twoway-server` and `twoway` binaries in
//! network namespaces (see twoway_tests::lab for the topology), driven only
//! through the command-line and configuration contract of DESIGN.md.
//!
//! Every test builds its own lab and PKI, so they run in parallel. A failing
//! step panics with the name of the step, the output of the command and the
//! tail of the server log; the lab is removed either way.

use std::cell::RefCell;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;
use twoway_tests::toml_files::{self, edit_toml};
use twoway_tests::{
    bins, proc, require_root_or_skip, tcp_connects, wait_for, wait_until, Bins, CmdOutput, Lab,
    ProcHandle,
};

const SERVER_NAME: &str = "vpn.test";
const SERVER_ADDR: &str = "198.18.1.2:4433";
/// The server seen from cli2.
const SERVER_ADDR_CLI2: &str = "198.18.2.2:4433";
const TUNNEL_NET: &str = "198.18.77.0/24";
const TUNNEL_POOL: &str = "198.18.77.128/25";
const ALICE_ADDR: &str = "198.18.77.10";
const CORP_NET: &str = "198.19.0.0/24";
const LAN_HOST: &str = "198.19.0.2";
/// Log levels for both binaries: ours verbose, dependencies quiet.
const RUST_LOG: &str =
    "info,twoway=debug,twoway_server=debug,twoway_client=debug,twoway_common=debug";
const SERVER_LOG_LINES: usize = 80;

fn net(s: &str) -> IpNetwork {
    s.parse().expect("network literal")
}

/// `198.18.77.10/24` or `198.18.77.10` -> `198.18.77.10`.
fn bare_ip(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
        assert!(
            found,
            "`{tool}` is not installed; the network-namespace tests need iproute2, \
             iputils-ping and openssl (.ci/run installs them)"
        );
    }
}

/// A lab with a PKI, configs and (once started) a server in `srv`.
struct Vpn {
    // Field order: the lab (and the processes in it) goes before the files.
    lab: Lab,
    bins: &'static Bins,
    server: Option<ProcHandle>,
    server_starts: usize,
    last_step: RefCell<String>,
    /// The PKI folder `D` of `pki init`, holding server.toml and client configs.
    pki: PathBuf,
    tmp: tempfile::TempDir,
}

impl Vpn {
    /// Lab, `pki init`, server.toml and policy.toml for the test, clients
    /// issued (alice for cli1, bob for cli2). The server is not started.
    fn new() -> Vpn {
        require_tools(&["ip", "ping", "openssl"]);
        let bins = bins();
        let lab = Lab::new();
        let tmp = tempfile::Builder::new()
            .prefix("twoway-e2e-")
            .tempdir()
            .expect("tempdir");
        for dir in ["run", "state"] {
            std::fs::create_dir_all(tmp.path().join(dir)).expect("create dir");
        }
        let pki = tmp.path().join("pki");
        let vpn = Vpn {
            lab,
            bins,
            server: None,
            server_starts: 0,
            last_step: RefCell::new(String::new()),
            pki,
            tmp,
        };
        vpn.pki_init(&vpn.pki, "pki init (the real CA)");
        vpn.configure_server();
        for (name, server) in [("alice", SERVER_ADDR), ("bob", SERVER_ADDR_CLI2)] {
            vpn.pki_issue(&vpn.pki, name);
            vpn.configure_client(&vpn.pki.join(format!("{name}.toml")), name, server, None);
        }
        vpn
    }

    fn tmp(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn server_config(&self) -> PathBuf {
        self.pki.join("server.toml")
    }

    fn client_config(&self, name: &str) -> PathBuf {
        self.pki.join(format!("{name}.toml"))
    }

    /// Panic with the step, what went wrong, and the server's log.
    fn fail(&self, step: &str, detail: impl Display) -> ! {
        let mut msg = format!("STEP FAILED: {step}\n{detail}\n");
        if let Some(server) = &self.server {
            let state = match self.lab.exited(server) {
                Some(status) => format!("exited: {status}"),
                None => "running".to_string(),
            };
            msg.push_str(&format!(
                "--- server log ({}, {state}; last {SERVER_LOG_LINES} lines) ---\n{}\n",
                server.name,
                self.lab.log_tail(server, SERVER_LOG_LINES)
            ));
        }
        panic!("{msg}");
    }

    fn check(&self, ok: bool, step: &str, detail: impl Display) {
        if !ok {
            self.fail(step, detail);
        }
        self.passed(step);
    }

    /// Progress on stderr (shown with --nocapture), once per distinct step.
    fn passed(&self, step: &str) {
        let mut last = self.last_step.borrow_mut();
        if *last != step {
            eprintln!("[{}] ok: {step}", self.lab.id);
            *last = step.to_string();
        }
    }

    /// A server subcommand on the host (PKI commands need no namespace).
    fn server_cmd(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec![self.bins.server_str()];
        full.extend_from_slice(args);
        proc::run_with_env(&full, &[("RUST_LOG", RUST_LOG)], proc::DEFAULT_TIMEOUT)
    }

    /// The client binary inside `ns`.
    fn client_cmd(&self, ns: &str, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut full = vec![self.bins.client_str()];
        full.extend_from_slice(args);
        self.lab
            .exec_env(ns, &full, &[("RUST_LOG", RUST_LOG)], timeout)
    }

    fn pki_init(&self, dir: &Path, step: &str) {
        let out = self.server_cmd(&[
            "pki",
            "init",
            "--dir",
            path_str(dir),
            "--name",
            SERVER_NAME,
            "--ip",
            "198.18.1.2",
        ]);
        self.check(out.success(), step, &out);
        for f in [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "crl.pem",
            "server.toml",
        ] {
            self.check(
                dir.join(f).is_file(),
                step,
                format_args!("`pki init` did not write {f} in {}\n{out}", dir.display()),
            );
        }
    }

    fn pki_issue(&self, dir: &Path, name: &str) {
        let step = format!("pki issue {name}");
        let out = self.server_cmd(&["pki", "issue", "--dir", path_str(dir), name]);
        self.check(out.success(), &step, &out);
        let config = dir.join(format!("{name}.toml"));
        self.check(
            config.is_file(),
            &step,
            format_args!("`pki issue` did not write {}\n{out}", config.display()),
        );
    }

    /// Point the example server.toml at this test's paths and tunnel network,
    /// and write the policy.
    fn configure_server(&self) {
        let step = "edit server.toml written by pki init";
        let path = self.server_config();
        let original = std::fs::read_to_string(&path).unwrap_or_default();
        edit_toml(&path, |t| {
            for key in [
                "listen",
                "control.socket",
                "state.dir",
                "tunnel.network",
                "tunnel.pool",
            ] {
                if toml_files::get(t, key).is_none() {
                    self.fail(
                        step,
                        format_args!("server.toml has no `{key}` (DESIGN.md names it)\n{original}"),
                    );
                }
            }
            toml_files::set(t, "listen", "0.0.0.0:4433");
            toml_files::set(t, "control.socket", path_str(&self.tmp("run/server.sock")));
            toml_files::set(t, "state.dir", path_str(&self.tmp("state")));
            toml_files::set(t, "tunnel.network", TUNNEL_NET);
            toml_files::set(t, "tunnel.pool", TUNNEL_POOL);
            // Keep every address of the test inside 198.18.0.0/15: no IPv6 in the tunnel.
            if let Some(tunnel) = t.get_mut("tunnel").and_then(|v| v.as_table_mut()) {
                tunnel.remove("network6");
            }
        });
        let policy = format!(
            "client_to_client = false\n\n[defaults]\nroutes = [\"{CORP_NET}\"]\n\n\
             [[client]]\nidentity = \"alice\"\naddress = \"{ALICE_ADDR}\"\n"
        );
        let policy_path = match toml_str(&path, "policy") {
            Some(p) => self.pki.join(p),
            None => self.pki.join("policy.toml"),
        };
        std::fs::write(&policy_path, policy).expect("write policy.toml");
    }

    /// Make an issued client config usable in the lab: its own control socket,
    /// the server address as seen from its namespace, optionally another CA.
    fn configure_client(&self, config: &Path, name: &str, server: &str, ca: Option<&Path>) {
        let step = format!("edit {name}.toml written by pki issue");
        let original = std::fs::read_to_string(config).unwrap_or_default();
        edit_toml(config, |t| {
            for key in [
                "server",
                "server_name",
                "tls.ca",
                "tls.cert",
                "tls.key",
                "control.socket",
            ] {
                if toml_files::get(t, key).is_none() {
                    self.fail(
                        &step,
                        format_args!("{name}.toml has no `{key}` (DESIGN.md names it)\n{original}"),
                    );
                }
            }
            let server_name = toml_files::get(t, "server_name").and_then(|v| v.as_str());
            if server_name != Some(SERVER_NAME) {
                self.fail(
                    &step,
                    format_args!("server_name is {server_name:?}, expected {SERVER_NAME:?} (the --name of pki init)\n{original}"),
                );
            }
            toml_files::set(t, "server", server);
            toml_files::set(
                t,
                "control.socket",
                path_str(&self.tmp(&format!("run/{name}.sock"))),
            );
            if let Some(ca) = ca {
                toml_files::set(t, "tls.ca", path_str(ca));
            }
        });
    }

    fn start_server(&mut self) {
        self.server_starts += 1;
        let name = format!("server-{}", self.server_starts);
        let config = self.server_config();
        let handle = self.lab.spawn_env(
            &self.lab.srv,
            &name,
            &[self.bins.server_str(), "run", "--config", path_str(&config)],
            &[("RUST_LOG", RUST_LOG)],
        );
        self.server = Some(handle.clone());
        let step = format!("start the server ({name}) and wait until it accepts on {SERVER_ADDR}");
        let addr: SocketAddr = SERVER_ADDR.parse().expect("addr");
        let listening = wait_until(Duration::from_secs(20), || {
            self.lab.exited(&handle).is_some()
                || tcp_connects(&self.lab.cli1, addr, Duration::from_millis(500))
        });
        if let Some(status) = self.lab.exited(&handle) {
            self.fail(&step, format_args!("the server exited: {status}"));
        }
        self.check(
            listening,
            &step,
            "nothing accepted TCP connections within 20 s",
        );
    }

    /// SIGTERM the server and expect a graceful exit with code 0.
    fn stop_server(&mut self) {
        let Some(server) = self.server.clone() else {
            return;
        };
        let stopped = self.lab.stop(&server, Duration::from_secs(10));
        let step = format!("stop the server ({}) with SIGTERM", server.name);
        self.check(
            stopped.graceful,
            &step,
            "it did not exit within 10 s of SIGTERM (killed)",
        );
        self.check(
            stopped.status.is_some_and(|s| s.success()),
            &step,
            format_args!("it exited with {:?}, expected exit code 0", stopped.status),
        );
    }

    /// `twoway up --config NAME.toml --detach` in `ns`.
    fn up(&self, ns: &str, config: &Path) -> CmdOutput {
        self.client_cmd(
            ns,
            &["up", "--config", path_str(config), "--detach"],
            Duration::from_secs(60),
        )
    }

    /// `up` must exit 0, and the TUN device must carry an address in `expect`.
    /// Returns that address.
    fn bring_up(&self, ns: &str, name: &str, expect: IpNetwork) -> IpAddr {
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

    fn expect_ping(&self, ns: &str, addr: &str, step: &str) {
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

    fn parse_json(&self, step: &str, out: &CmdOutput) -> Value {
        self.check(out.success(), step, out);
        match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(e) => self.fail(
                step,
                format_args!("stdout is not one JSON object ({e})\n{out}"),
            ),
        }
    }

    fn client_status(&self, ns: &str, name: &str) -> (Value, CmdOutput) {
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
    fn expect_client_status_up(&self, ns: &str, name: &str, addr: IpAddr) {
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

    fn server_status(&self, step: &str) -> (Vec<Value>, CmdOutput) {
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

    fn session<'a>(sessions: &'a [Value], identity: &str) -> Option<&'a Value> {
        sessions.iter().find(|s| s["identity"] == identity)
    }

    /// A client of a foreign CA: `pki init` with the same server name in
    /// another folder, `pki issue NAME` there. Its config trusts the REAL CA,
    /// so the server certificate verifies and only the client's is at issue.
    fn foreign_client(&self, name: &str) -> PathBuf {
        let foreign = self.tmp("foreign");
        self.pki_init(
            &foreign,
            "pki init (a foreign CA with the same server name)",
        );
        self.pki_issue(&foreign, name);
        let config = foreign.join(format!("{name}.toml"));
        let real_ca = self.pki.join("ca.pem");
        self.configure_client(&config, name, SERVER_ADDR, Some(&real_ca));
        config
    }

    /// `openssl s_client -connect SERVER -servername vpn.test ARGS` in cli1.
    fn openssl(&self, args: &[&str]) -> CmdOutput {
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
    fn expect_closed_without_data(&self, out: &CmdOutput, what: &str) {
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
    fn expect_only_session(&self, identity: &str) {
        let step = format!("`twoway-server status --json` lists only {identity}");
        let (sessions, out) = self.server_status(&step);
        self.check(
            sessions.len() == 1 && Vpn::session(&sessions, identity).is_some(),
            &step,
            &out,
        );
    }

    /// `twoway down`, then nothing of the tunnel may remain in `ns`.
    fn take_down(&self, ns: &str, name: &str) {
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

/// `rx_bytes` and `tx_bytes` are both numbers above zero.
fn counters_moved(v: &Value) -> bool {
    ["rx_bytes", "tx_bytes"]
        .iter()
        .all(|k| v[k].as_u64().is_some_and(|n| n > 0))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A path from a config file, resolved against the file's folder.
fn toml_path(config: &Path, key: &str) -> PathBuf {
    let value =
        toml_str(config, key).unwrap_or_else(|| panic!("{} has no `{key}`", config.display()));
    config.parent().expect("config folder").join(value)
}

fn toml_str(path: &Path, key: &str) -> Option<String> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    toml_files::get(&table, key)?.as_str().map(String::from)
}

/// Two laptops through one server: addresses from the policy and the pool,
/// routes to the corporate network, status on both sides, `down` cleaning up,
/// leases surviving a server restart, and a client reconnecting by itself.
#[test]
fn tunnel_lifecycle_two_clients_and_restart() {
    if !require_root_or_skip("tunnel_lifecycle_two_clients_and_restart") {
        return;
    }
    let mut vpn = Vpn::new();
    vpn.start_server();
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());

    // alice: a fixed address from the policy.
    let alice = vpn.bring_up(&cli1, "alice", format!("{ALICE_ADDR}/32").parse().unwrap());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice (cli1) pings the lan host through the tunnel",
    );
    vpn.expect_client_status_up(&cli1, "alice", alice);

    // bob: an address from the pool.
    let bob = vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob (cli2) pings the lan host through the tunnel",
    );
    vpn.expect_client_status_up(&cli2, "bob", bob);

    // The server lists both sessions.
    let step = "`twoway-server status --json` lists alice and bob";
    let (sessions, out) = vpn.server_status(step);
    for (who, addr, from) in [("alice", alice, "198.18.1.1"), ("bob", bob, "198.18.2.1")] {
        let Some(s) = Vpn::session(&sessions, who) else {
            vpn.fail(
                step,
                format_args!("no session with identity {who:?}\n{out}"),
            );
        };
        vpn.check(
            s["address"].as_str().map(bare_ip) == Some(addr.to_string().as_str()),
            step,
            format_args!(
                "{who}'s address is {}, expected {addr}\n{out}",
                s["address"]
            ),
        );
        vpn.check(
            counters_moved(s),
            step,
            format_args!("{who}'s rx_bytes/tx_bytes are not both > 0 after pings\n{out}"),
        );
        vpn.check(
            s["remote"].as_str().is_some_and(|r| r.contains(from)),
            step,
            format_args!(
                "{who}'s remote is {}, expected {from}:PORT\n{out}",
                s["remote"]
            ),
        );
    }

    // client_to_client = false: alice cannot reach bob's tunnel address.
    vpn.check(
        !vpn.lab.ping_once(&cli1, &bob.to_string()),
        "alice cannot ping bob's tunnel address (client_to_client = false)",
        format_args!(
            "{bob} answered a ping from cli1\n{}",
            vpn.lab.describe(&cli1)
        ),
    );

    // bob goes down: no address, route or process remains; the session ends.
    vpn.take_down(&cli2, "bob");
    let step = "the server drops bob's session after `twoway down`";
    let gone = wait_until(Duration::from_secs(10), || {
        Vpn::session(&vpn.server_status(step).0, "bob").is_none()
    });
    let (_, out) = vpn.server_status(step);
    vpn.check(
        gone,
        step,
        format_args!("bob is still listed after 10 s\n{out}"),
    );
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice still pings the lan host after bob left",
    );

    // Restart the server: bob gets the same pool address (leases persist).
    vpn.stop_server();
    vpn.start_server();
    let bob_again = vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.check(
        bob_again == bob,
        "bob gets the same pool address after a server restart (leases persist)",
        format_args!(
            "first {bob}, now {bob_again}\nstate dir: {:?}",
            list_dir(&vpn.tmp("state"))
        ),
    );
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob pings the lan host after the server restart",
    );

    // alice was never taken down: her client reconnects by itself.
    let step = "alice's client reconnects by itself after the server restart";
    let reconnected = wait_until(Duration::from_secs(60), || {
        let (v, _) = vpn.client_status(&cli1, "alice");
        v["state"] == "up" && vpn.lab.ping_once(&cli1, LAN_HOST)
    });
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        reconnected,
        step,
        format_args!(
            "not up and pinging within 60 s; state {}\n{out}\n{}",
            v["state"],
            vpn.lab.describe(&cli1)
        ),
    );

    vpn.take_down(&cli1, "alice");
    vpn.take_down(&cli2, "bob");
    vpn.stop_server();
}

/// `openssl s_client` as a misbehaving client: TLS 1.2 gets no handshake;
/// TLS 1.3 without a client certificate, or with one from a foreign CA, gets
/// no application data and is closed. The server then still serves alice.
#[test]
fn refuses_old_tls_and_unauthenticated_clients() {
    if !require_root_or_skip("refuses_old_tls_and_unauthenticated_clients") {
        return;
    }
    let mut vpn = Vpn::new();
    vpn.start_server();
    let cli1 = vpn.lab.cli1.clone();
    let real_ca = vpn.pki.join("ca.pem");
    let ca = path_str(&real_ca);

    let out = vpn.openssl(&["-tls1_2", "-CAfile", ca]);
    vpn.check(
        !out.timed_out() && !out.success() && !out.stdout.contains("New, TLSv1.2"),
        "a TLS 1.2 handshake (openssl s_client -tls1_2) fails",
        &out,
    );

    // -quiet prints only application data on stdout and waits for the
    // server to close the connection.
    let out = vpn.openssl(&["-quiet", "-tls1_3", "-CAfile", ca]);
    vpn.expect_closed_without_data(&out, "TLS 1.3 without a client certificate");

    let mallory = vpn.foreign_client("mallory");
    let (cert, key) = (
        toml_path(&mallory, "tls.cert"),
        toml_path(&mallory, "tls.key"),
    );
    let out = vpn.openssl(&[
        "-quiet",
        "-tls1_3",
        "-CAfile",
        ca,
        "-cert",
        path_str(&cert),
        "-key",
        path_str(&key),
    ]);
    vpn.expect_closed_without_data(&out, "TLS 1.3 with a client certificate from a foreign CA");

    // The server carries on and serves a real client.
    if let Some(status) = vpn.server.as_ref().and_then(|s| vpn.lab.exited(s)) {
        vpn.fail(
            "the server survives refused clients",
            format_args!("it exited: {status}"),
        );
    }
    vpn.bring_up(&cli1, "alice", format!("{ALICE_ADDR}/32").parse().unwrap());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice pings the lan host after the refused clients",
    );
    vpn.expect_only_session("alice");
    vpn.take_down(&cli1, "alice");
    vpn.stop_server();
}

/// `twoway up` with a client certificate from another CA (same server name)
/// exits 3 and leaves nothing behind; alice's session is undisturbed.
#[test]
fn refuses_foreign_client_certificate() {
    if !require_root_or_skip("refuses_foreign_client_certificate") {
        return;
    }
    let mut vpn = Vpn::new();
    vpn.start_server();
    let cli1 = vpn.lab.cli1.clone();
    vpn.bring_up(&cli1, "alice", format!("{ALICE_ADDR}/32").parse().unwrap());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice (cli1) pings the lan host through the tunnel",
    );
    let mut before = vpn.lab.pids(&cli1);
    before.sort_unstable();

    let mallory = vpn.foreign_client("mallory");
    let out = vpn.up(&cli1, &mallory);
    vpn.check(
        out.code() == Some(3),
        "mallory (certificate from a foreign CA) is refused with exit code 3",
        format_args!("expected exit code 3 (authentication refused)\n{out}"),
    );
    let mut after = vpn.lab.pids(&cli1);
    after.sort_unstable();
    vpn.check(
        after == before,
        "a refused client leaves no process behind",
        format_args!("processes in cli1 before: {before:?}, after: {after:?}"),
    );

    if let Some(status) = vpn.server.as_ref().and_then(|s| vpn.lab.exited(s)) {
        vpn.fail(
            "the server survives a refused client",
            format_args!("it exited: {status}"),
        );
    }
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice still pings the lan host after mallory was refused",
    );
    vpn.expect_client_status_up(&cli1, "alice", ALICE_ADDR.parse().unwrap());
    vpn.expect_only_session("alice");
    vpn.take_down(&cli1, "alice");
    vpn.stop_server();
}

/// `up` against a server that is not there exits 4, within a bounded time:
/// an address nobody answers for, and a host that refuses the port.
#[test]
fn unreachable_server_exits_4() {
    if !require_root_or_skip("unreachable_server_exits_4") {
        return;
    }
    let vpn = Vpn::new();
    let cli1 = vpn.lab.cli1.clone();
    let config = vpn.client_config("alice");
    for (server, what) in [
        ("198.18.1.3:4433", "no host at that address"),
        (SERVER_ADDR, "the server host is up but nothing listens"),
    ] {
        vpn.configure_client(&config, "alice", server, None);
        let step = format!("`twoway up --detach` against {server} ({what}) exits 4 within 35 s");
        let out = vpn.up(&cli1, &config);
        vpn.check(
            out.code() == Some(4),
            &step,
            format_args!("expected exit code 4\n{out}"),
        );
        vpn.check(
            out.elapsed <= Duration::from_secs(35),
            &step,
            format_args!("took too long\n{out}"),
        );
        let left = wait_for(Duration::from_secs(5), || {
            let p = vpn.lab.pids(&cli1);
            p.is_empty().then_some(())
        });
        vpn.check(
            left.is_some(),
            "a client that could not connect leaves no process behind",
            format_args!("processes in cli1: {:?}", vpn.lab.pids(&cli1)),
        );
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
