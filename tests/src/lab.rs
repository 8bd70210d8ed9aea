//! A throw-away network topology made of network namespaces and veth pairs.
//!
//! ```text
//!  cli1 (198.18.1.1) ──┐
//!                      ├── srv (198.18.1.2 | 198.18.2.2 | 198.19.0.1, ip_forward=1) ── lan (198.19.0.2)
//!  cli2 (198.18.2.1) ──┘
//! ```
//!
//! The laptops (`cli1`, `cli2`) have no route to the corporate network
//! 198.19.0.0/24: they can only reach `lan` through the tunnel. Every name is
//! unique per lab (`tw<pid>x<counter>-<role>`), so tests can run in parallel.
//! Dropping the lab (also while unwinding from a panic) stops every process it
//! started and every process still living in its namespaces, then deletes the
//! namespaces, which deletes their veth and TUN devices.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::netstate::{self, IfAddr, Route};
use crate::proc::{self, CmdOutput, DEFAULT_TIMEOUT};

/// Grace period between SIGTERM and SIGKILL when tearing down.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Prefix of every namespace a lab creates; followed by `<pid>x<counter>-`.
const NS_PREFIX: &str = "tw";

/// `ip netns add/del` race on the first mount of /run/netns; serialise them.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process started by [`Lab::spawn`]; the lab owns the child itself.
#[derive(Debug, Clone)]
pub struct ProcHandle {
    pub pid: u32,
    /// A short label, used in messages and in the log file name.
    pub name: String,
    pub ns: String,
    /// stdout and stderr of the process, interleaved.
    pub log: PathBuf,
}

/// How [`Lab::stop`] ended a process.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    /// True if it exited on its own or on SIGTERM within the grace period.
    pub graceful: bool,
}

struct Tracked {
    handle: ProcHandle,
    child: Child,
}

/// See the module documentation.
pub struct Lab {
    /// `tw<pid>x<counter>`: the prefix of all names of this lab.
    pub id: String,
    pub cli1: String,
    pub cli2: String,
    pub srv: String,
    pub lan: String,
    created: Vec<String>,
    procs: Mutex<Vec<Tracked>>,
    logs: tempfile::TempDir,
}

impl Lab {
    /// Build the topology. Panics (after cleaning up) if any step fails.
    pub fn new() -> Lab {
        remove_stale_labs();
        let id = format!(
            "{NS_PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            cli1: format!("{id}-cli1"),
            cli2: format!("{id}-cli2"),
            srv: format!("{id}-srv"),
            lan: format!("{id}-lan"),
            id,
            created: Vec::new(),
            procs: Mutex::new(Vec::new()),
            logs: tempfile::Builder::new()
                .prefix("twoway-lab-")
                .tempdir()
                .expect("tempdir for lab logs"),
        };
        // From here on a panic drops `lab`, which removes what was created.
        for ns in [&lab.cli1, &lab.cli2, &lab.srv, &lab.lan].map(String::clone) {
            {
                let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                must(&["ip", "netns", "add", &ns]);
            }
            lab.created.push(ns.clone());
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (cli1, cli2, srv, lan) = (&lab.cli1, &lab.cli2, &lab.srv, &lab.lan);
        // Create each pair inside a namespace so no name ever exists in the
        // host namespace (parallel labs would collide there).
        must(&[
            "ip", "-n", cli1, "link", "add", "eth0", "type", "veth", "peer", "name", "cli1",
            "netns", srv,
        ]);
        must(&[
            "ip", "-n", cli2, "link", "add", "eth0", "type", "veth", "peer", "name", "cli2",
            "netns", srv,
        ]);
        must(&[
            "ip", "-n", srv, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
            lan,
        ]);
        for (ns, dev, addr) in [
            (cli1, "eth0", "198.18.1.1/24"),
            (cli2, "eth0", "198.18.2.1/24"),
            (srv, "cli1", "198.18.1.2/24"),
            (srv, "cli2", "198.18.2.2/24"),
            (srv, "lan", "198.19.0.1/24"),
            (lan, "eth0", "198.19.0.2/24"),
        ] {
            must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&[
            "ip",
            "-n",
            lan,
            "route",
            "add",
            "default",
            "via",
            "198.19.0.1",
        ]);
        must(&[
            "ip",
            "netns",
            "exec",
            srv,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        lab
    }

    /// The four namespace names.
    pub fn namespaces(&self) -> [&str; 4] {
        [&self.cli1, &self.cli2, &self.srv, &self.lan]
    }

    /// A folder that lives as long as the lab (logs of spawned processes).
    pub fn log_dir(&self) -> &std::path::Path {
        self.logs.path()
    }

    /// Run a command inside `ns` and wait for it (at most 60 s).
    pub fn exec<S: AsRef<str>>(&self, ns: &str, args: &[S]) -> CmdOutput {
        self.exec_timeout(ns, args, DEFAULT_TIMEOUT)
    }

    /// Run a command inside `ns`, killing it after `timeout`.
    pub fn exec_timeout<S: AsRef<str>>(
        &self,
        ns: &str,
        args: &[S],
        timeout: Duration,
    ) -> CmdOutput {
        self.exec_env(ns, args, &[], timeout)
    }

    /// Run a command inside `ns` with extra environment variables.
    pub fn exec_env<S: AsRef<str>>(
        &self,
        ns: &str,
        args: &[S],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> CmdOutput {
        proc::run_with_env(&netns_exec(ns, args), env, timeout)
    }

    /// Start a long-running process inside `ns`; the lab stops it on drop.
    /// Its stdout and stderr go to [`ProcHandle::log`].
    pub fn spawn<S: AsRef<str>>(&self, ns: &str, name: &str, args: &[S]) -> ProcHandle {
        self.spawn_env(ns, name, args, &[])
    }

    /// Like [`Lab::spawn`], with extra environment variables.
    pub fn spawn_env<S: AsRef<str>>(
        &self,
        ns: &str,
        name: &str,
        args: &[S],
        env: &[(&str, &str)],
    ) -> ProcHandle {
        let full = netns_exec(ns, args);
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let log = self.logs.path().join(format!("{}-{name}.log", procs.len()));
        let file = File::create(&log).expect("create process log");
        let mut cmd = Command::new(&full[0]);
        cmd.args(&full[1..])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log file"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {name} (`{}`): {e}", proc::display_args(&full))
        });
        // `ip netns exec` execs the program, so this is the program's PID.
        let handle = ProcHandle {
            pid: child.id(),
            name: name.to_string(),
            ns: ns.to_string(),
            log,
        };
        procs.push(Tracked {
            handle: handle.clone(),
            child,
        });
        handle
    }

    /// The exit status if `p` has exited, `None` while it runs.
    pub fn exited(&self, p: &ProcHandle) -> Option<ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let t = procs.iter_mut().find(|t| t.handle.pid == p.pid)?;
        t.child.try_wait().ok().flatten()
    }

    /// SIGTERM `p`, wait up to `grace`, then SIGKILL it.
    pub fn stop(&self, p: &ProcHandle, grace: Duration) -> Stopped {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = procs.iter_mut().find(|t| t.handle.pid == p.pid) else {
            return Stopped {
                status: None,
                graceful: false,
            };
        };
        let (status, graceful) = proc::terminate_child(&mut t.child, grace);
        Stopped { status, graceful }
    }

    /// Everything `p` wrote so far.
    pub fn log(&self, p: &ProcHandle) -> String {
        proc::read_lossy(&p.log)
    }

    /// The last `lines` lines `p` wrote, for failure messages.
    pub fn log_tail(&self, p: &ProcHandle, lines: usize) -> String {
        tail(&self.log(p), lines)
    }

    /// One ICMP echo from `ns` to `addr`, waiting 1 s for the reply.
    pub fn ping_once(&self, ns: &str, addr: &str) -> bool {
        self.exec_timeout(
            ns,
            &["ping", "-n", "-c", "1", "-W", "1", addr],
            Duration::from_secs(5),
        )
        .success()
    }

    /// Whether `addr` answers a ping from `ns` within three tries.
    pub fn ping(&self, ns: &str, addr: &str) -> bool {
        (0..3).any(|_| self.ping_once(ns, addr))
    }

    /// PIDs of every process living in `ns`.
    pub fn pids(&self, ns: &str) -> Vec<u32> {
        proc::run(&["ip", "netns", "pids", ns], Duration::from_secs(10))
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// `ip -j addr` inside `ns`.
    pub fn addrs(&self, ns: &str) -> Vec<IfAddr> {
        netstate::addrs(ns)
    }

    /// The first address inside `net` on any interface of `ns`.
    pub fn addr_in(&self, ns: &str, net: IpNetwork) -> Option<IfAddr> {
        netstate::addr_in(ns, net)
    }

    /// IPv4 routes of every table in `ns` (`ip -4 -j route show table all`).
    pub fn routes(&self, ns: &str) -> Vec<Route> {
        netstate::routes(ns)
    }

    /// Routes in `ns` whose destination overlaps `net` (default routes excluded).
    pub fn routes_overlapping(&self, ns: &str, net: IpNetwork) -> Vec<Route> {
        netstate::routes_overlapping(ns, net)
    }

    /// `ip route get ADDR` in `ns`: the route the kernel would use, if any.
    pub fn route_get(&self, ns: &str, addr: &str) -> Option<Value> {
        netstate::route_get(ns, addr)
    }

    /// A readable dump of addresses and routes of `ns`, for failure messages.
    pub fn describe(&self, ns: &str) -> String {
        netstate::describe(ns)
    }

    fn teardown(&mut self) {
        let mut procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &procs {
            proc::signal(t.handle.pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for t in &mut procs {
            let left = deadline.saturating_duration_since(Instant::now());
            proc::terminate_child(&mut t.child, left);
        }
        for ns in self.created.drain(..).rev() {
            remove_namespace(&ns);
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `ip netns exec NS args...`
fn netns_exec<S: AsRef<str>>(ns: &str, args: &[S]) -> Vec<String> {
    ["ip", "netns", "exec", ns]
        .into_iter()
        .map(String::from)
        .chain(args.iter().map(|a| a.as_ref().to_string()))
        .collect()
}

/// Run a setup command; panic with its output if it fails.
fn must(args: &[&str]) {
    let out = proc::run(args, Duration::from_secs(30));
    assert!(out.success(), "lab setup step failed:\n{out}");
}

/// Stop every process in `ns`, then delete it. Never panics.
fn remove_namespace(ns: &str) {
    let pids: Vec<u32> = proc::run(&["ip", "netns", "pids", ns], Duration::from_secs(10))
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if !pids.is_empty() {
        proc::terminate_pids(&pids, STOP_GRACE);
    }
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = proc::run(&["ip", "netns", "del", ns], Duration::from_secs(30));
    if !out.success() {
        eprintln!("twoway lab: could not delete namespace {ns}:\n{out}");
    }
}

/// Names of all named network namespaces.
pub fn list_namespaces() -> Vec<String> {
    proc::run(&["ip", "netns", "list"], Duration::from_secs(10))
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Namespaces left by a test process that was killed before its labs could
/// clean up (`tw<pid>x<n>-...` whose pid is gone): remove them.
fn remove_stale_labs() {
    for ns in list_namespaces() {
        let Some(owner) = lab_owner_pid(&ns) else {
            continue;
        };
        if owner != std::process::id() && !proc::pid_alive(owner) {
            eprintln!("twoway lab: removing stale namespace {ns} (test process {owner} is gone)");
            remove_namespace(&ns);
        }
    }
}

/// The PID in a lab namespace name `tw<pid>x<n>-<role>`.
fn lab_owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(NS_PREFIX)?;
    let (id, role) = rest.split_once('-')?;
    let (pid, n) = id.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) || role.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_only_for_lab_names() {
        assert_eq!(lab_owner_pid("tw123x4-cli1"), Some(123));
        assert_eq!(lab_owner_pid("tw-cli"), None);
        assert_eq!(lab_owner_pid("twx1-srv"), None);
        assert_eq!(lab_owner_pid("tw12x-srv"), None);
        assert_eq!(lab_owner_pid("tw12x3"), None);
        assert_eq!(lab_owner_pid("other"), None);
    }
}
