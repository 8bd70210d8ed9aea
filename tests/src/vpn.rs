//! The fixture of the end-to-end tests: a [`Lab`] with a PKI made by the real
//! `twoway-server pki` commands, server and client configs rewritten for the
//! lab, and the server process. The checks built on it are in `vpn_checks.rs`.
//!
//! Every failing step panics through [`Vpn::fail`] with the name of the step,
//! the output of the command and the tail of the server log; dropping the
//! fixture removes the lab (processes, namespaces, devices), then the files.

use std::cell::RefCell;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::toml_files::{self, edit_toml};
use crate::{bins, proc, tcp_connects, wait_until, Bins, CmdOutput, Lab, ProcHandle};

pub const SERVER_NAME: &str = "vpn.test";
pub const SERVER_ADDR: &str = "198.18.1.2:4433";
/// The server seen from cli2.
pub const SERVER_ADDR_CLI2: &str = "198.18.2.2:4433";
pub const TUNNEL_NET: &str = "198.18.77.0/24";
pub const TUNNEL_POOL: &str = "198.18.77.128/25";
pub const ALICE_ADDR: &str = "198.18.77.10";
pub const CORP_NET: &str = "198.19.0.0/24";
pub const LAN_HOST: &str = "198.19.0.2";
/// Log levels for both binaries: ours verbose, dependencies quiet.
pub const RUST_LOG: &str =
    "info,twoway=debug,twoway_server=debug,twoway_client=debug,twoway_common=debug";
pub const SERVER_LOG_LINES: usize = 80;

pub fn net(s: &str) -> IpNetwork {
    s.parse().expect("network literal")
}

/// `198.18.77.10/24` or `198.18.77.10` -> `198.18.77.10`.
pub fn bare_ip(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

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
    /// Lab, `pki init`, server.toml and policy.toml for the test, clients
    /// issued (alice for cli1, bob for cli2). The server is not started.
    pub fn setup() -> Vpn {
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

    /// A server subcommand on the host (PKI commands need no namespace).
    pub(crate) fn server_cmd(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec![self.bins.server_str()];
        full.extend_from_slice(args);
        proc::run_with_env(&full, &[("RUST_LOG", RUST_LOG)], proc::DEFAULT_TIMEOUT)
    }

    /// The client binary inside `ns`.
    pub fn client_cmd(&self, ns: &str, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut full = vec![self.bins.client_str()];
        full.extend_from_slice(args);
        self.lab
            .exec_env(ns, &full, &[("RUST_LOG", RUST_LOG)], timeout)
    }

    pub fn pki_init(&self, dir: &Path, step: &str) {
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

    pub fn pki_issue(&self, dir: &Path, name: &str) {
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
        std::fs::write(self.policy_path(), base_policy("")).expect("write policy.toml");
    }

    /// The policy file named by server.toml.
    pub fn policy_path(&self) -> PathBuf {
        match toml_str(&self.server_config(), "policy") {
            Some(p) => self.pki.join(p),
            None => self.pki.join("policy.toml"),
        }
    }

    /// Make an issued client config usable in the lab: its own control socket,
    /// the server address as seen from its namespace, optionally another CA.
    pub fn configure_client(&self, config: &Path, name: &str, server: &str, ca: Option<&Path>) {
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

    /// A client of a foreign CA: `pki init` with the same server name in
    /// another folder, `pki issue NAME` there. Its config trusts the REAL CA,
    /// so the server certificate verifies and only the client's is at issue.
    pub fn foreign_client(&self, name: &str) -> PathBuf {
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

    pub fn start_server(&mut self) {
        self.start_server_env(&[]);
    }

    /// [`Vpn::start_server`] with extra environment variables (e.g. NOTIFY_SOCKET).
    pub fn start_server_env(&mut self, env: &[(&str, &str)]) {
        self.server_starts += 1;
        let name = format!("server-{}", self.server_starts);
        let config = self.server_config();
        let mut env = env.to_vec();
        env.push(("RUST_LOG", RUST_LOG));
        let handle = self.lab.spawn_env(
            &self.lab.srv,
            &name,
            &[self.bins.server_str(), "run", "--config", path_str(&config)],
            &env,
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
    pub fn stop_server(&mut self) {
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

    /// The exit status of the server if it has exited.
    pub fn server_exited(&self) -> Option<std::process::ExitStatus> {
        self.server.as_ref().and_then(|s| self.lab.exited(s))
    }
}

/// The policy of the tests: no client-to-client traffic, the corporate
/// network routed, alice at a static address; `extra` is appended.
pub fn base_policy(extra: &str) -> String {
    format!(
        "client_to_client = false\n\n[defaults]\nroutes = [\"{CORP_NET}\"]\n\n\
         [[client]]\nidentity = \"alice\"\naddress = \"{ALICE_ADDR}\"\n{extra}"
    )
}

/// `rx_bytes` and `tx_bytes` are both numbers above zero.
pub fn counters_moved(v: &Value) -> bool {
    ["rx_bytes", "tx_bytes"]
        .iter()
        .all(|k| v[k].as_u64().is_some_and(|n| n > 0))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A path from a config file, resolved against the file's folder.
pub fn toml_path(config: &Path, key: &str) -> PathBuf {
    let value =
        toml_str(config, key).unwrap_or_else(|| panic!("{} has no `{key}`", config.display()));
    config.parent().expect("config folder").join(value)
}

pub fn toml_str(path: &Path, key: &str) -> Option<String> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    toml_files::get(&table, key)?.as_str().map(String::from)
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
