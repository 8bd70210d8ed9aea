//! The server of a [`Vpn`] lab: starting and stopping its process, signals,
//! its control commands (`status`, `reload`), and probing it with
//! `openssl s_client`.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::vpn::path_str;
use crate::{proc, tcp_connects, wait_until, CmdOutput};

use super::{Vpn, RUST_LOG, SERVER_ADDR, SERVER_NAME};

impl Vpn {
    /// A server subcommand on the host (PKI commands need no namespace).
    pub(crate) fn server_cmd(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec![self.bins.server_str()];
        full.extend_from_slice(args);
        proc::run_with_env(&full, &[("RUST_LOG", RUST_LOG)], proc::DEFAULT_TIMEOUT)
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

    /// Send `signal` to the current server process.
    pub fn signal_server(&self, signal: Signal) {
        let server = self.server.as_ref().expect("the server was started");
        proc::signal(server.pid, signal);
    }

    /// The path of the server binary under test.
    pub fn bins_server(&self) -> &'static str {
        self.bins.server_str()
    }

    /// `twoway-server ARGS --config server.toml` inside srv.
    pub fn server_ctl(&self, args: &[&str]) -> CmdOutput {
        let config = self.server_config();
        let mut full = vec![self.bins.server_str()];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--config", path_str(&config)]);
        self.lab.exec_env(
            &self.lab.srv,
            &full,
            &[("RUST_LOG", RUST_LOG)],
            Duration::from_secs(30),
        )
    }

    /// `twoway-server reload` must succeed.
    pub fn reload(&self, step: &str) -> CmdOutput {
        let out = self.server_ctl(&["reload"]);
        self.check(
            out.success(),
            step,
            format_args!("expected exit code 0\n{out}"),
        );
        out
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

    /// The whole `twoway-server status --json` object.
    pub fn server_status_json(&self, step: &str) -> Value {
        let out = self.server_ctl(&["status", "--json"]);
        self.parse_json(step, &out)
    }

    pub fn session<'a>(sessions: &'a [Value], identity: &str) -> Option<&'a Value> {
        sessions.iter().find(|s| s["identity"] == identity)
    }

    /// The server's session of `identity`, if listed.
    pub fn session_of(&self, identity: &str) -> Option<Value> {
        let (sessions, _) = self.server_status("`twoway-server status --json`");
        Vpn::session(&sessions, identity).cloned()
    }

    /// Wait until the server lists no session of `identity`.
    pub fn wait_session_gone(&self, identity: &str, timeout: Duration, step: &str) {
        let gone = crate::wait_until(timeout, || self.session_of(identity).is_none());
        let (_, out) = self.server_status(step);
        self.check(
            gone,
            step,
            format_args!("{identity} is still listed after {timeout:?}\n{out}"),
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

    /// `dropped.REASON` of the server's `status --json`.
    pub fn dropped(&self, reason: &str) -> u64 {
        let step = format!("`twoway-server status --json` has a `dropped.{reason}` counter");
        let v = self.server_status_json(&step);
        match v["dropped"][reason].as_u64() {
            Some(n) => n,
            None => self.fail(&step, format_args!("status: {v}")),
        }
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
}
