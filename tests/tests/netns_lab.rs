//! Self-test of the network-namespace lab: the topology routes what it should,
//! isolates what it should, and leaves nothing behind.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use twoway_tests::lab::list_namespaces;
use twoway_tests::{proc, require_root_or_skip, tcp_connects, wait_for_tcp, Lab};

fn assert_gone(names: &[String]) {
    let left = list_namespaces();
    for n in names {
        assert!(
            !left.contains(n),
            "namespace {n} is still there after the lab was dropped"
        );
    }
}

#[test]
fn lab_topology_routes_and_isolates() {
    if !require_root_or_skip("lab_topology_routes_and_isolates") {
        return;
    }
    let lab = Lab::new();
    let names: Vec<String> = lab.namespaces().iter().map(|s| s.to_string()).collect();
    for (ns, addr, what) in [
        (&lab.cli1, "198.18.1.2", "cli1 -> srv"),
        (&lab.cli2, "198.18.2.2", "cli2 -> srv"),
        (&lab.lan, "198.19.0.1", "lan -> srv"),
        (&lab.srv, "198.19.0.2", "srv -> lan"),
    ] {
        assert!(
            lab.ping(ns, addr),
            "{what} ({addr}) does not answer a ping\n{}",
            lab.describe(ns)
        );
    }
    // The laptops reach the corporate network only through a tunnel.
    for ns in [&lab.cli1, &lab.cli2] {
        assert!(
            !lab.ping_once(ns, "198.19.0.2"),
            "{ns} reaches lan without a tunnel"
        );
        assert!(
            lab.route_get(ns, "198.19.0.2").is_none(),
            "{ns} has a route to lan\n{}",
            lab.describe(ns)
        );
    }
    // The JSON readers see the addresses the lab set.
    let a = lab
        .addr_in(&lab.cli1, "198.18.1.0/24".parse().unwrap())
        .expect("cli1 address");
    assert_eq!(
        (a.ifname.as_str(), a.addr.to_string().as_str(), a.prefix),
        ("eth0", "198.18.1.1", 24)
    );
    assert!(lab
        .routes_overlapping(&lab.cli1, "198.19.0.0/24".parse().unwrap())
        .is_empty());
    assert!(!lab
        .routes_overlapping(&lab.lan, "198.19.0.0/24".parse().unwrap())
        .is_empty());

    // A TCP listener in srv is reachable from cli1 (exercises the setns probe),
    // and a spawned process is stopped when the lab goes.
    let listener = lab.spawn(&lab.srv, "listener", &["sleep", "600"]);
    let addr: SocketAddr = "198.18.1.2:4433".parse().unwrap();
    assert!(
        !tcp_connects(&lab.cli1, addr, Duration::from_millis(500)),
        "nothing listens yet"
    );
    let tcp_listener = which("python3").map(|py| {
        lab.spawn(
            &lab.srv,
            "tcp-listener",
            &[py.as_str(), "-c", "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',4433))\ns.listen()\ntime.sleep(600)"],
        )
    });
    if tcp_listener.is_some() {
        assert!(
            wait_for_tcp(&lab.cli1, addr, Duration::from_secs(10)),
            "listener in srv not reachable from cli1"
        );
    }
    assert!(lab.exited(&listener).is_none());
    let stopped = lab.stop(&listener, Duration::from_secs(5));
    assert!(stopped.graceful, "sleep did not stop on SIGTERM");
    // A process that is not our child (daemonized) is also removed with the namespace.
    let out = lab.exec(
        &lab.cli2,
        &["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
    );
    let orphan: u32 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid:\n{out}"));
    assert!(proc::pid_alive(orphan));
    assert_eq!(lab.pids(&lab.cli2), vec![orphan]);

    drop(lab);
    assert_gone(&names);
    assert!(
        !proc::pid_alive(orphan),
        "daemonized process {orphan} survived the lab"
    );
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    if !require_root_or_skip("lab_is_removed_when_a_test_panics") {
        return;
    }
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new();
        names = lab.namespaces().iter().map(|s| s.to_string()).collect();
        lab.spawn(&lab.srv, "sleeper", &["sleep", "600"]);
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 4);
    assert_gone(&names);
}

fn which(prog: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}
