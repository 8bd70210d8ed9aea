//! Operator and fault steps on a [`Vpn`] fixture: short keepalive timing,
//! policy edits, the server's control commands, foreground clients whose exit
//! code a test observes, signals to the server, and kernel counters of a
//! namespace. Used by the fault and operations tests.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::lab::tail;
use crate::toml_files::{self, edit_toml};
use crate::vpn::{path_str, Vpn, RUST_LOG, SERVER_LOG_LINES};
use crate::{proc, wait_for, CmdOutput, ProcHandle};

/// Keepalive of the fault tests: a ping every second, dead after 4 s of silence.
pub const FAST_KEEPALIVE: (u32, u32) = (1, 4);
/// The clients' connect timeout in the fault tests.
pub const FAST_CONNECT_TIMEOUT: u32 = 3;
/// Lines of each other process log in a failure message.
const OTHER_LOG_LINES: usize = 30;

impl Vpn {
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

    /// Set [`FAST_CONNECT_TIMEOUT`] in NAME.toml.
    pub fn fast_client(&self, name: &str) {
        edit_toml(&self.client_config(name), |t| {
            toml_files::set(t, "connect_timeout_secs", i64::from(FAST_CONNECT_TIMEOUT));
        });
    }

    /// A new client NAME issued by the real CA, configured for `server`.
    pub fn issue_client(&self, name: &str, server: &str) -> std::path::PathBuf {
        self.pki_issue(&self.pki, name);
        let config = self.client_config(name);
        self.configure_client(&config, name, server, None);
        self.fast_client(name);
        config
    }

    /// Rewrite server.toml (takes effect at the next start).
    pub fn edit_server_config(&self, edit: impl FnOnce(&mut toml::Table)) {
        edit_toml(&self.server_config(), edit);
    }

    /// Replace the policy file (takes effect at the next reload).
    pub fn write_policy(&self, text: &str) {
        std::fs::write(self.policy_path(), text).expect("write policy.toml");
    }

    /// `twoway-server pki ARGS` on the host.
    pub fn pki(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec!["pki"];
        full.extend_from_slice(args);
        self.server_cmd(&full)
    }

    /// The path of the client binary under test.
    pub fn bins_client(&self) -> &'static str {
        self.bins.client_str()
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

    /// The whole `twoway-server status --json` object.
    pub fn server_status_json(&self, step: &str) -> Value {
        let out = self.server_ctl(&["status", "--json"]);
        self.parse_json(step, &out)
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

    /// Send `signal` to the current server process.
    pub fn signal_server(&self, signal: Signal) {
        let server = self.server.as_ref().expect("the server was started");
        proc::signal(server.pid, signal);
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

    /// Wait for a foreground client to exit; its exit status.
    pub fn wait_exit(&self, p: &ProcHandle, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.lab.exited(p))
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

    /// The `dev` of `ip route get ADDR` in `ns`.
    pub fn route_dev(&self, ns: &str, addr: &str) -> Option<String> {
        self.lab
            .route_get(ns, addr)
            .and_then(|r| r["dev"].as_str().map(String::from))
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

/// Copy `from` into `dir` under the same file name; the new path.
pub fn copy_into(from: &Path, dir: &Path) -> std::path::PathBuf {
    let to = dir.join(from.file_name().expect("file name"));
    std::fs::copy(from, &to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    to
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
