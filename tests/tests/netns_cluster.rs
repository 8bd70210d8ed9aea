//! Two real `twoway-server` nodes sharing one etcd, in network namespaces:
//! the lab of twoway_tests::lab (cli1, cli2, node A in `srv`, the corporate
//! host `lan`) plus a second node B linked to both laptops and to `lan`.
//! etcd runs in `lan`; the corporate host has no default route back, only
//! the /32 routes the nodes' session hooks add and remove, so a ping from a
//! laptop answers only if the hooks pointed its address at the right node.
//!
//! ```text
//!  cli1 ── 198.18.1.0/24 ── A (srv) ── 198.19.0.0/24 ──┐
//!       └─ 198.18.3.0/24 ── B (srvb) ─ 198.19.1.0/24 ── lan (198.19.0.2, 198.19.1.2, etcd)
//!  cli2 ── 198.18.2.0/24 ── A;  198.18.4.0/24 ── B
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use twoway_tests::toml_files::{self, edit_toml};
use twoway_tests::vpn::{net, path_str, Vpn, ALICE_ADDR, LAN_HOST, TUNNEL_POOL};
use twoway_tests::{proc, require_root_or_skip, wait_until, ProcHandle};

const ETCD_A: &str = "http://198.19.0.2:2379";
const ETCD_B: &str = "http://198.19.1.2:2379";

fn sh(args: &[&str]) {
    let out = proc::run(args, Duration::from_secs(10));
    assert!(out.success(), "{}: {out}", args.join(" "));
}

/// Node B's namespace; deleted on drop (the lab stops the processes in it).
struct NodeB {
    ns: String,
}

impl Drop for NodeB {
    fn drop(&mut self) {
        let _ = proc::run(&["ip", "netns", "del", &self.ns], Duration::from_secs(10));
    }
}

fn add_node_b(vpn: &Vpn) -> NodeB {
    let lab = &vpn.lab;
    let b = NodeB {
        ns: format!("{}-srvb", lab.id),
    };
    sh(&["ip", "netns", "add", &b.ns]);
    sh(&["ip", "-n", &b.ns, "link", "set", "lo", "up"]);
    for (peer, dev, peer_addr, b_addr) in [
        (&lab.cli1, "cli1", "198.18.3.1/24", "198.18.3.2/24"),
        (&lab.cli2, "cli2", "198.18.4.1/24", "198.18.4.2/24"),
        (&lab.lan, "lan", "198.19.1.2/24", "198.19.1.1/24"),
    ] {
        sh(&[
            "ip", "-n", peer, "link", "add", "eth1", "type", "veth", "peer", "name", dev, "netns",
            &b.ns,
        ]);
        sh(&["ip", "-n", peer, "addr", "add", peer_addr, "dev", "eth1"]);
        sh(&["ip", "-n", peer, "link", "set", "eth1", "up"]);
        sh(&["ip", "-n", &b.ns, "addr", "add", b_addr, "dev", dev]);
        sh(&["ip", "-n", &b.ns, "link", "set", dev, "up"]);
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &b.ns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
    ]);
    // B reaches the whole corporate network (198.19.0.2 too) through lan.
    sh(&[
        "ip",
        "-n",
        &b.ns,
        "route",
        "add",
        "198.19.0.0/24",
        "via",
        "198.19.1.2",
    ]);
    // The way back from the corporate host is only what the hooks add.
    sh(&["ip", "-n", &lab.lan, "route", "del", "default"]);
    b
}

fn start_etcd(vpn: &Vpn, data: &Path, n: usize) -> ProcHandle {
    let h = vpn.lab.spawn(
        &vpn.lab.lan,
        &format!("etcd-{n}"),
        &[
            "etcd",
            "--name",
            "lab",
            "--data-dir",
            path_str(data),
            "--listen-client-urls",
            &format!("{ETCD_A},{ETCD_B}"),
            "--advertise-client-urls",
            ETCD_A,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "lab=http://127.0.0.1:2380",
        ],
    );
    let healthy = wait_until(Duration::from_secs(20), || {
        vpn.lab
            .exec(
                &vpn.lab.lan,
                &["etcdctl", "--endpoints", ETCD_A, "endpoint", "health"],
            )
            .success()
    });
    assert!(healthy, "etcd did not start:\n{}", vpn.lab.log_tail(&h, 30));
    h
}

/// server.toml of a node: `[cluster]` and hooks that point the corporate
/// host's route for the client's address at this node.
fn node_config(vpn: &Vpn, path: &Path, node: &str, etcd: &str, via: &str) {
    if path != vpn.server_config() {
        std::fs::copy(vpn.server_config(), path).unwrap();
    }
    let lan = &vpn.lab.lan;
    edit_toml(path, |t| {
        toml_files::set(
            t,
            "control.socket",
            path_str(&vpn.tmp(&format!("run/{node}.sock"))),
        );
        toml_files::set(t, "state.dir", path_str(&vpn.tmp(&format!("state-{node}"))));
        toml_files::set(t, "cluster.node", node);
        toml_files::set(t, "cluster.etcd", toml::Value::Array(vec![etcd.into()]));
        toml_files::set(t, "cluster.lease_ttl_secs", 3i64);
        toml_files::set(
            t,
            "hooks.session_up",
            format!("ip netns exec {lan} ip route replace $TWOWAY_ADDRESS/32 via {via}"),
        );
        toml_files::set(
            t,
            "hooks.session_down",
            format!("ip netns exec {lan} ip route del $TWOWAY_ADDRESS/32 via {via} || true"),
        );
    });
}

/// A copy of client `name`'s config that connects to node B at `server`.
fn via_b(vpn: &Vpn, name: &str, server: &str) -> PathBuf {
    let path = vpn.pki.join(format!("{name}-b.toml"));
    std::fs::copy(vpn.client_config(name), &path).unwrap();
    edit_toml(&path, |t| {
        toml_files::set(t, "server", server);
        toml_files::set(
            t,
            "control.socket",
            path_str(&vpn.tmp(&format!("run/{name}-b.sock"))),
        );
    });
    path
}

fn status(vpn: &Vpn, config: &Path) -> Vec<Value> {
    let out = vpn.lab.exec(
        &vpn.lab.srv,
        &[
            vpn.bins_server(),
            "status",
            "--json",
            "--config",
            path_str(config),
        ],
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("status: {out}"));
    v["sessions"].as_array().cloned().unwrap_or_default()
}

fn on_node<'a>(sessions: &'a [Value], identity: &str) -> Option<(&'a str, &'a str)> {
    sessions
        .iter()
        .find(|s| s["identity"] == identity)
        .map(|s| {
            (
                s["node"].as_str().unwrap_or(""),
                s["address"].as_str().unwrap_or(""),
            )
        })
}

#[test]
fn two_nodes_one_etcd() {
    if !require_root_or_skip("two_nodes_one_etcd") {
        return;
    }
    if !twoway_tests::etcd::available() {
        assert!(
            !twoway_tests::in_ci(),
            "etcd is not installed (etcd-server)"
        );
        return eprintln!("skipped: etcd is not installed");
    }
    let mut vpn = Vpn::setup();
    let node_b = add_node_b(&vpn);
    vpn.pki_issue(&vpn.pki, "carol");
    vpn.configure_client(
        &vpn.client_config("carol"),
        "carol",
        "198.18.1.2:4433",
        None,
    );
    let data = vpn.tmp("etcd");
    let etcd = start_etcd(&vpn, &data, 1);
    let a_config = vpn.server_config();
    node_config(&vpn, &a_config, "vpn-a", ETCD_A, "198.19.0.1");
    let b_config = vpn.pki.join("server-b.toml");
    node_config(&vpn, &b_config, "vpn-b", ETCD_B, "198.19.1.1");
    vpn.start_server();
    let b = vpn.lab.spawn_env(
        &node_b.ns,
        "server-b",
        &[vpn.bins_server(), "run", "--config", path_str(&b_config)],
        &[("RUST_LOG", twoway_tests::vpn::RUST_LOG)],
    );
    let listening = wait_until(Duration::from_secs(20), || {
        twoway_tests::tcp_connects(
            &vpn.lab.cli1,
            "198.18.3.2:4433".parse().unwrap(),
            Duration::from_millis(500),
        )
    });
    assert!(
        listening,
        "node B does not listen:\n{}",
        vpn.lab.log_tail(&b, 40)
    );
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());

    // bob (pool) on A: the hooks route his address to A.
    let bob = vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob pings the corporate host through node A",
    );
    // Status from both nodes lists him, on vpn-a.
    for config in [&a_config, &b_config] {
        let sessions = status(&vpn, config);
        assert_eq!(
            on_node(&sessions, "bob"),
            Some(("vpn-a", bob.to_string().as_str())),
            "status from {}: {sessions:?}",
            config.display()
        );
    }
    vpn.passed("status on both nodes lists bob on vpn-a");

    // bob again, through B: the same address, and the route moved to B.
    vpn.take_down(&cli2, "bob");
    let bob_b = via_b(&vpn, "bob", "198.18.4.2:4433");
    let out = vpn.up(&cli2, &bob_b);
    assert_eq!(out.code(), Some(0), "bob up via B: {out}");
    let again = vpn.lab.addr_in(&cli2, net(TUNNEL_POOL)).map(|a| a.addr);
    assert_eq!(again, Some(bob), "bob's address through node B");
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob pings the corporate host through node B",
    );

    // Kick on A ends bob's session on B within 3 s; a second kick finds nobody.
    let started = Instant::now();
    let kick_bob_on_a = || {
        vpn.lab.exec(
            &vpn.lab.srv,
            &[
                vpn.bins_server(),
                "kick",
                "bob",
                "--config",
                path_str(&a_config),
            ],
        )
    };
    let kick = kick_bob_on_a();
    assert_eq!(kick.code(), Some(0), "kick bob on A: {kick}");
    let gone = wait_until(Duration::from_secs(3), || {
        on_node(&status(&vpn, &b_config), "bob").is_none()
    });
    assert!(
        gone,
        "bob still on B {:?} after the kick on A",
        started.elapsed()
    );
    vpn.passed("kick on A ends bob's session on B within 3 s");
    let kick = kick_bob_on_a();
    assert_eq!(kick.code(), Some(1), "a second kick: {kick}");
    let _ = vpn.client_cmd(
        &cli2,
        &["down", "--config", path_str(&bob_b)],
        Duration::from_secs(30),
    );

    // carol (pool) through B while etcd runs; then etcd dies.
    let carol_b = via_b(&vpn, "carol", "198.18.3.2:4433");
    let out = vpn.up(&cli1, &carol_b);
    assert_eq!(out.code(), Some(0), "carol up via B: {out}");
    vpn.lab.stop(&etcd, Duration::from_secs(1));
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "carol's session on B works while etcd is down",
    );
    // A new pool client is refused; a static one (alice) connects.
    let out = vpn.up(&cli2, &vpn.client_config("bob"));
    assert_ne!(
        out.code(),
        Some(0),
        "bob (pool) must be refused without etcd: {out}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("cluster store unreachable"),
        "bob's refusal names the reason: {out}"
    );
    let _ = vpn.client_cmd(
        &cli2,
        &["down", "--config", path_str(&vpn.client_config("bob"))],
        Duration::from_secs(30),
    );
    vpn.configure_client(
        &vpn.client_config("alice"),
        "alice",
        "198.18.2.2:4433",
        None,
    );
    let alice = vpn.bring_up(&cli2, "alice", format!("{ALICE_ADDR}/32").parse().unwrap());
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "alice (static) pings through node A while etcd is down",
    );

    // etcd back: B's status shows alice on vpn-a again; bob connects.
    let _etcd = start_etcd(&vpn, &data, 2);
    let caught_up = wait_until(Duration::from_secs(20), || {
        on_node(&status(&vpn, &b_config), "alice")
            .is_some_and(|(n, a)| n == "vpn-a" && a == alice.to_string())
    });
    assert!(
        caught_up,
        "node A did not register alice after etcd came back: {:?}",
        status(&vpn, &b_config)
    );
    vpn.passed("after etcd returns, B sees alice on A");
    let sessions = status(&vpn, &a_config);
    assert_eq!(
        sessions.len(),
        2,
        "alice and carol, once each: {sessions:?}"
    );
}
