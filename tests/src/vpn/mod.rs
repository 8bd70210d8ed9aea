//! The fixture of the end-to-end tests: a [`Lab`] with a PKI made by the real
//! `twoway-server pki` commands, server and client configs rewritten for the
//! lab, and the server process. Most tests begin with [`Vpn::started`].
//!
//! The fixture's methods are grouped by what they drive: `files.rs` the PKI,
//! the configs and the policy; `server.rs` the server process and its control
//! commands; `client.rs` the client binary inside a namespace; `network.rs`
//! the lab's extra topology and what the kernel reports (routes, pings,
//! counters). This file holds the fixture itself and how a step fails.
//!
//! Every failing step panics through [`Vpn::fail`] with the name of the step,
//! the output of the command and the tail of the server log; dropping the
//! fixture removes the lab (processes, namespaces, devices), then the files.

mod client;
mod files;
mod network;
mod server;

use std::cell::RefCell;
use std::fmt::Display;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::lab::tail;
use crate::toml_files;
use crate::{bins, proc, require_root_or_skip, Bins, CmdOutput, Lab, ProcHandle};

pub use client::counters_moved;
pub use files::{base_policy, copy_into, list_dir, path_str, read, toml_path, toml_str};
pub use network::{
    http_get, snmp6_counter, snmp_counter, CLIENT_PROTO, GATEWAY, INTERNET_HOST, LAN_HOST6,
    LAN_NEIGHBOUR, SERVER_PUBLIC, SERVER_PUBLIC_ADDR, TUNNEL_NET6,
};

/// The name in the server certificate (`pki init --name`).
pub const SERVER_NAME: &str = "vpn.test";
/// The server seen from cli1.
pub const SERVER_ADDR: &str = "198.18.1.2:4433";
/// The server seen from cli2.
pub const SERVER_ADDR_CLI2: &str = "198.18.2.2:4433";
/// `tunnel.network` of the lab's server.
pub const TUNNEL_NET: &str = "198.18.77.0/24";
/// `tunnel.pool` of the lab's server.
pub const TUNNEL_POOL: &str = "198.18.77.128/25";
/// alice's static address in the policy.
pub const ALICE_ADDR: &str = "198.18.77.10";
/// The corporate network behind the server, routed to every client.
pub const CORP_NET: &str = "198.19.0.0/24";
/// A host on the corporate network (the `lan` namespace).
pub const LAN_HOST: &str = "198.19.0.2";
/// Log levels for both binaries: ours verbose, dependencies quiet.
pub const RUST_LOG: &str =
    "info,twoway=debug,twoway_server=debug,twoway_client=debug,twoway_common=debug";
/// Lines of the server log in a failure message.
pub const SERVER_LOG_LINES: usize = 80;
/// Lines of each other process log in a failure message.
const OTHER_LOG_LINES: usize = 30;
/// Keepalive of the fault tests: a ping every second, dead after 4 s of silence.
pub const FAST_KEEPALIVE: (u32, u32) = (1, 4);
/// The clients' connect timeout in the fault tests.
pub const FAST_CONNECT_TIMEOUT: u32 = 3;

/// A network literal of the tests.
pub fn net(s: &str) -> IpNetwork {
    s.parse().expect("network literal")
}

/// alice's static address ([`ALICE_ADDR`]) as a /32, for [`Vpn::bring_up`].
pub fn alice_net() -> IpNetwork {
    net(&format!("{ALICE_ADDR}/32"))
}

/// `198.18.77.10/24` or `198.18.77.10` -> `198.18.77.10`.
pub fn bare_ip(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

/// Panic unless every tool is on PATH.
pub fn require_tools(tools: &[&str]) {
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
pub struct Vpn {
    // Field order: the lab (and the processes in it) goes before the files.
    pub lab: Lab,
    pub(crate) bins: &'static Bins,
    /// The current server process, once started.
    pub server: Option<ProcHandle>,
    server_starts: usize,
    last_step: RefCell<String>,
    /// The PKI folder `D` of `pki init`, holding server.toml and client configs.
    pub pki: PathBuf,
    tmp: tempfile::TempDir,
}

impl Vpn {
    /// The prologue of most tests: skip (or, under CI, fail) without root,
    /// then [`Vpn::setup_fast`] and start the server. `None`: skipped.
    pub fn started(test: &str) -> Option<Vpn> {
        let mut vpn = Vpn::prepared(test)?;
        vpn.start_server();
        Some(vpn)
    }

    /// [`Vpn::started`] without starting the server, for a test that changes
    /// server.toml first.
    pub fn prepared(test: &str) -> Option<Vpn> {
        require_root_or_skip(test).then(Vpn::setup_fast)
    }

    /// [`Vpn::prepared`] with the binaries' default timing (keepalive and
    /// connect timeout as an operator gets them), for the core tests.
    pub fn prepared_default(test: &str) -> Option<Vpn> {
        require_root_or_skip(test).then(Vpn::setup)
    }

    /// [`Vpn::started`] with the binaries' default timing.
    pub fn started_default(test: &str) -> Option<Vpn> {
        let mut vpn = Vpn::prepared_default(test)?;
        vpn.start_server();
        Some(vpn)
    }

    /// Lab, `pki init`, server.toml and policy.toml for the test, clients
    /// issued (alice for cli1, bob for cli2). The server is not started.
    pub fn setup() -> Vpn {
        require_tools(&["ip", "ping", "openssl"]);
        let bins = bins();
        let lab = Lab::new();
        let tmp = crate::temp_dir("twoway-e2e-");
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

    /// [`Vpn::setup`] with [`FAST_KEEPALIVE`] on the server and
    /// [`FAST_CONNECT_TIMEOUT`] in alice's and bob's configs, so losses are
    /// noticed and recovered within seconds.
    pub fn setup_fast() -> Vpn {
        let vpn = Vpn::setup();
        vpn.edit_server_config(|t| {
            toml_files::set(t, "keepalive.interval_secs", i64::from(FAST_KEEPALIVE.0));
            toml_files::set(t, "keepalive.timeout_secs", i64::from(FAST_KEEPALIVE.1));
        });
        for name in ["alice", "bob"] {
            vpn.fast_client(name);
        }
        vpn
    }

    pub fn tmp(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn server_config(&self) -> PathBuf {
        self.pki.join("server.toml")
    }

    pub fn client_config(&self, name: &str) -> PathBuf {
        self.pki.join(format!("{name}.toml"))
    }

    /// Panic with the step, what went wrong, and the server's log.
    pub fn fail(&self, step: &str, detail: impl Display) -> ! {
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
        msg.push_str(&self.other_logs());
        panic!("{msg}");
    }

    pub fn check(&self, ok: bool, step: &str, detail: impl Display) {
        if !ok {
            self.fail(step, detail);
        }
        self.passed(step);
    }

    /// Progress on stderr (shown with --nocapture), once per distinct step.
    pub fn passed(&self, step: &str) {
        let mut last = self.last_step.borrow_mut();
        if *last != step {
            eprintln!("[{}] ok: {step}", self.lab.id);
            *last = step.to_string();
        }
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

    /// The tails of every process log but the current server's (which
    /// [`Vpn::fail`] shows at length), and of detached clients' logs.
    pub(crate) fn other_logs(&self) -> String {
        let server_log = self.server.as_ref().map(|s| s.log.clone());
        let mut files: Vec<_> = [self.lab.log_dir().to_path_buf(), self.tmp("run")]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter(|p| Some(p) != server_log.as_ref())
            .collect();
        files.sort();
        let mut text = String::new();
        for f in files {
            let lines = if server_log.is_some() {
                OTHER_LOG_LINES
            } else {
                SERVER_LOG_LINES
            };
            text.push_str(&format!(
                "--- {} (last {lines} lines) ---\n{}\n",
                f.display(),
                tail(&proc::read_lossy(&f), lines)
            ));
        }
        text
    }
}
