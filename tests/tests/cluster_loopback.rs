//! Two real servers over loopback that are nodes of one etcd (started by
//! the test), with real client connections: the same pool address on either
//! node, a newer session on one node replacing the older on the other,
//! status from either node, and etcd going away (a pool client refused as
//! "cluster store unreachable" and counted, a static client admitted, live
//! sessions untouched) and coming back.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use twoway_client::config::ClientConfig;
use twoway_client::connect::{connect, Connection};
use twoway_common::inside::memory;
use twoway_server::cluster::Cluster;
use twoway_server::config::ServerConfig;
use twoway_server::pki;
use twoway_server::server::Server;
use twoway_tests::etcd::{self, Etcd};
use twoway_tests::eventually;

struct Node {
    server: Arc<Server>,
    port: u16,
    shutdown: CancellationToken,
}

async fn node(pki_dir: &Path, etcd: &Etcd, name: &str) -> Node {
    let base = std::fs::read_to_string(pki_dir.join("server.toml")).unwrap();
    let text = base
        .replace("server.sock", &format!("server-{name}.sock"))
        .replace("/state", &format!("/state-{name}"));
    let path = pki_dir.join(format!("server-{name}.toml"));
    let log = pki_dir.join("hooks.log");
    let cluster = format!(
        "\n[cluster]\netcd = [\"{}\"]\nnode = \"{name}\"\nlease_ttl_secs = 3\n\
         [hooks]\nsession_up = 'echo \"$TWOWAY_HOOK $TWOWAY_IDENTITY $TWOWAY_ADDRESS $TWOWAY_NODE\" >> {log}'\n\
         session_down = 'echo \"$TWOWAY_HOOK $TWOWAY_IDENTITY $TWOWAY_ADDRESS $TWOWAY_NODE\" >> {log}'\n",
        etcd.endpoint(),
        log = log.display()
    );
    std::fs::write(&path, text + &cluster).unwrap();
    let config = ServerConfig::load(&path).unwrap();
    let server = Arc::new(Server::new(config.clone()).unwrap());
    let (cluster, stops) = Cluster::start(&config.cluster, &path).await.unwrap();
    let shutdown = CancellationToken::new();
    server.enable_cluster(cluster.clone(), stops);
    tokio::spawn(cluster.clone().run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.store().reachable() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (inside, peer) = memory::pair(64);
    std::mem::forget(peer);
    tokio::spawn(
        server
            .clone()
            .serve(listener, Arc::new(inside), shutdown.clone()),
    );
    Node {
        server,
        port,
        shutdown,
    }
}

async fn connect_to(pki_dir: &Path, n: &Node, identity: &str) -> Result<Connection, String> {
    let mut c = ClientConfig::load(&pki_dir.join(format!("{identity}.toml"))).unwrap();
    c.server = format!("127.0.0.1:{}", n.port).into();
    let tls = twoway_client::credentials::load(&c).unwrap().tls;
    connect(&c, tls).await.map_err(|e| e.to_string())
}

fn address(c: &Connection) -> IpAddr {
    c.assignment.address.ip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_addresses_status_and_survive_etcd_restarts() {
    if !etcd::available() {
        assert!(
            !twoway_tests::in_ci(),
            "etcd is not installed (etcd-server)"
        );
        return eprintln!("skipped: etcd is not installed");
    }
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = twoway_tests::loopback::make_pki(dir.path(), "");
    std::fs::write(
        pki_dir.join("policy.toml"),
        "[[client]]\nidentity = \"static\"\naddress = \"198.18.77.10\"\n",
    )
    .unwrap();
    for identity in ["alice", "bob", "static"] {
        pki::issue(&pki::IssueOptions {
            dir: pki_dir.clone(),
            identity: identity.into(),
            days: 30,
            out: None,
        })
        .unwrap();
    }
    let a = node(&pki_dir, &etcd, "vpn-a").await;
    let b = node(&pki_dir, &etcd, "vpn-b").await;

    // alice on a, then on b: the same address; her session on a is replaced.
    let on_a = connect_to(&pki_dir, &a, "alice").await.unwrap();
    let first = address(&on_a);
    let on_b = connect_to(&pki_dir, &b, "alice").await.unwrap();
    assert_eq!(address(&on_b), first);
    eventually(
        Duration::from_secs(3),
        Duration::from_millis(50),
        || async {
            if a.server.sessions().is_empty() {
                Ok(())
            } else {
                Err("the session on vpn-a was not replaced within 3 s".to_string())
            }
        },
    )
    .await;

    // The hooks moved alice's address from a to b (each node's in order; the
    // two nodes' hooks are separate processes).
    let mut want = vec![
        format!("session_up alice {first} vpn-a"),
        format!("session_down alice {first} vpn-a"),
        format!("session_up alice {first} vpn-b"),
    ];
    want.sort();
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let text = std::fs::read_to_string(pki_dir.join("hooks.log")).unwrap_or_default();
            let mut got: Vec<String> = text.lines().map(str::to_owned).collect();
            got.sort();
            if got == want {
                Ok(())
            } else {
                Err(format!("hooks: {got:?}, want {want:?}"))
            }
        },
    )
    .await;

    // Status from a lists b's session, with its node.
    let (sessions, missing) = a.server.cluster_sessions().await;
    assert!(missing.is_none());
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].node.as_deref(), Some("vpn-b"));
    assert_eq!(sessions[0].address, first.to_string());

    // etcd goes away.
    etcd.kill();
    let refused = connect_to(&pki_dir, &a, "bob").await.unwrap_err();
    assert!(refused.contains("cluster store unreachable"), "{refused}");
    assert_eq!(
        a.server.stats.refusals().get("cluster-unreachable"),
        Some(&1)
    );
    // Counted once: not also as a busy refusal.
    assert_eq!(a.server.stats.refusals().get("refused-busy"), None);
    let fixed = connect_to(&pki_dir, &a, "static").await.unwrap();
    assert_eq!(address(&fixed).to_string(), "198.18.77.10");
    // alice's session on b lives on.
    assert_eq!(b.server.sessions().len(), 1);

    // etcd comes back: b still sees a's static session, once; bob connects.
    etcd.restart();
    let sessions = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let (sessions, missing) = b.server.cluster_sessions().await;
            if missing.is_none() && sessions.iter().any(|s| s.identity == "static") {
                Ok(sessions)
            } else {
                Err(format!("vpn-a did not catch up: {sessions:?} {missing:?}"))
            }
        },
    )
    .await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let bob = connect_to(&pki_dir, &a, "bob").await.unwrap();
    assert_ne!(address(&bob), first);

    // Twenty clients with both nodes in their list, from a random entry on:
    // spread over both nodes, all addresses distinct.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let identity = format!("user{i}");
        pki::issue(&pki::IssueOptions {
            dir: pki_dir.clone(),
            identity: identity.clone(),
            days: 30,
            out: None,
        })
        .unwrap();
        let mut c = ClientConfig::load(&pki_dir.join(format!("{identity}.toml"))).unwrap();
        c.server = vec![
            format!("127.0.0.1:{}", a.port),
            format!("127.0.0.1:{}", b.port),
        ]
        .into();
        c.server_order = twoway_client::servers::ServerOrder::Random;
        let tls = twoway_client::credentials::load(&c).unwrap().tls;
        tasks.push(tokio::spawn(async move { connect(&c, tls).await.unwrap() }));
    }
    let mut many = Vec::new();
    for t in tasks {
        many.push(t.await.unwrap());
    }
    let distinct: std::collections::BTreeSet<IpAddr> = many.iter().map(address).collect();
    assert_eq!(distinct.len(), 20);
    assert!(!distinct.contains(&first) && !distinct.contains(&address(&bob)));
    let (sessions, _) = a.server.cluster_sessions().await;
    let on = |node: &str| {
        sessions
            .iter()
            .filter(|s| s.node.as_deref() == Some(node))
            .count()
    };
    assert_eq!(on("vpn-a") + on("vpn-b"), 23, "{sessions:?}");
    assert!(
        on("vpn-a") > 1 && on("vpn-b") > 1,
        "not spread: {sessions:?}"
    );
    drop((on_a, on_b, fixed, bob, many));
    a.shutdown.cancel();
    b.shutdown.cancel();
}
