//! A private etcd for the cluster tests: Debian's `etcd` binary on
//! 127.0.0.1 with free ports and a temporary data folder, killed by its PID
//! when dropped (also when the test fails).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd server started by a test.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether the `etcd` binary is installed (Debian's etcd-server).
pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        let mut etcd = Self {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    /// The client URL, for `[cluster] etcd`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
    }

    /// Where it listens for clients.
    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log file");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (apt-get install etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let healthy = Command::new("etcdctl")
                .args(["--endpoints", &client, "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if healthy {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy:\n{log}");
    }

    /// Compacts etcd's history up to now (as an operator's auto-compaction
    /// does): a watch from an older revision is then refused.
    pub fn compact(&self) {
        let etcdctl = |args: &[&str]| {
            let out = Command::new("etcdctl")
                .args(["--endpoints", &self.endpoint()])
                .args(args)
                .env("ETCDCTL_API", "3")
                .output()
                .expect("etcdctl runs");
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
            out.stdout
        };
        let put = etcdctl(&["put", "/test/compact", "x", "-w", "json"]);
        let reply: serde_json::Value = serde_json::from_slice(&put).expect("etcdctl's JSON");
        let revision = reply["header"]["revision"].as_i64().expect("a revision");
        etcdctl(&["compact", &revision.to_string()]);
    }

    /// Kills etcd (SIGKILL, by PID), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
