//! The cluster store against a real etcd started by the test (Debian's
//! etcd-server): leases shared by two nodes, racing nodes never sharing an
//! address, the duplicate rule and kicks across nodes, a dead node's
//! sessions expiring, and etcd going away and coming back.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use twoway_server::cluster::{Claim, ClaimError, Cluster, ClusterSection, Stop, StopReason};
use twoway_server::policy::Duplicate;
use twoway_server::pool::Pool;
use twoway_tests::etcd::{self, Etcd};
use twoway_tests::eventually;

fn skip() -> bool {
    if etcd::available() {
        return false;
    }
    assert!(
        !twoway_tests::in_ci(),
        "etcd is not installed (etcd-server)"
    );
    eprintln!("skipped: etcd is not installed");
    true
}

struct Node {
    cluster: Arc<Cluster>,
    stops: mpsc::UnboundedReceiver<Stop>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn node(etcd: &Etcd, name: &str) -> Node {
    let section = ClusterSection {
        etcd: vec![etcd.endpoint()],
        node: name.into(),
        lease_ttl_secs: 2,
        ..ClusterSection::default()
    };
    let (cluster, stops) = Cluster::start(&section, Path::new("server.toml"))
        .await
        .expect("cluster");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(cluster.clone().run(cancel.clone()));
    // Until the lease is granted, claims for pool clients are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.store().reachable() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Node {
        cluster,
        stops,
        cancel,
        task,
    }
}

fn pool() -> Pool {
    let reserved = [Ipv4Addr::new(10, 77, 0, 0), Ipv4Addr::new(10, 77, 0, 1)];
    Pool::new("10.77.0.0/26".parse().unwrap(), reserved)
}

fn remote() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

/// Session `id` of `identity` claimed on `node` (one at a time under
/// `duplicate`; `static_address` as the policy says) and registered there
/// with `address`.
async fn registered(
    node: &Node,
    identity: &str,
    id: u64,
    duplicate: Duplicate,
    static_address: bool,
    address: &str,
) -> Claim {
    let claim = node
        .cluster
        .claim(identity, id, remote(), duplicate, 1, static_address)
        .await
        .unwrap();
    assert!(
        node.cluster.register(&claim, address.into(), None).await,
        "{identity} registered at {address}"
    );
    claim
}

async fn next_stop(node: &mut Node, within: Duration) -> Option<Stop> {
    tokio::time::timeout(within, node.stops.recv())
        .await
        .ok()
        .flatten()
}

async fn wait_sessions(
    node: &Node,
    done: impl Fn(&[twoway_server::cluster::SessionRecord]) -> bool,
) {
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let sessions = node.cluster.sessions().await.unwrap();
            if done(&sessions) {
                Ok(())
            } else {
                Err(format!("{sessions:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_share_leases_sessions_and_kicks() {
    if skip() {
        return;
    }
    let etcd = Etcd::start();
    let mut a = node(&etcd, "vpn-a").await;
    let b = node(&etcd, "vpn-b").await;
    let pool = pool();

    // One identity, one address, whichever node asks.
    let on_a = a.cluster.address("alice", &pool).await.unwrap();
    let on_b = b.cluster.address("alice", &pool).await.unwrap();
    assert_eq!(on_a, on_b);
    assert!(pool.usable(on_a));

    // Twenty identities, asked for on both nodes at once: all distinct, and
    // each the same on both.
    let mut tasks = Vec::new();
    for i in 0..20 {
        for n in [&a, &b] {
            let cluster = n.cluster.clone();
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                (
                    i,
                    cluster.address(&format!("user{i}"), &pool).await.unwrap(),
                )
            }));
        }
    }
    let mut by_identity = std::collections::BTreeMap::new();
    for t in tasks {
        let (i, address) = t.await.unwrap();
        let prev = by_identity.insert(i, address);
        assert!(
            prev.is_none_or(|p| p == address),
            "user{i} got two addresses"
        );
    }
    let distinct: BTreeSet<Ipv4Addr> = by_identity.values().copied().collect();
    assert_eq!(distinct.len(), 20, "{by_identity:?}");
    assert!(!distinct.contains(&on_a));

    // Refuse: a session on a keeps b from admitting the identity.
    let held = registered(&a, "bob", 1, Duplicate::Refuse, false, "10.77.0.5").await;
    match b
        .cluster
        .claim("bob", 7, remote(), Duplicate::Refuse, 1, false)
        .await
    {
        Err(ClaimError::Held { node, .. }) => assert_eq!(node, "vpn-a"),
        other => panic!("expected Held, got {other:?}"),
    }
    // Allow 2: b gets the second slot, with its own lease key.
    let second = b
        .cluster
        .claim("bob", 8, remote(), Duplicate::Allow, 2, false)
        .await
        .unwrap();
    assert_eq!(second.slot(), "bob\u{1}2");

    // Status on either node lists both nodes' sessions, each with its node.
    let sessions = b.cluster.sessions().await.unwrap();
    let nodes: BTreeSet<(String, String)> = sessions
        .iter()
        .map(|s| (s.identity.clone(), s.node.clone()))
        .collect();
    assert!(
        nodes.contains(&("bob".into(), "vpn-a".into())),
        "{sessions:?}"
    );
    assert!(
        nodes.contains(&("bob".into(), "vpn-b".into())),
        "{sessions:?}"
    );
    assert!(sessions.iter().any(|s| s.address == "10.77.0.5"));
    drop(second);
    // Its slot is let go in the background, at once.
    wait_sessions(&b, |s| {
        s.iter().filter(|s| s.identity == "bob").count() == 1
    })
    .await;

    // Kick on b ends the session on a within 3 s; kicking nobody counts 0.
    let started = Instant::now();
    assert_eq!(b.cluster.kick("bob").await.unwrap(), 1);
    let stop = next_stop(&mut a, Duration::from_secs(3))
        .await
        .expect("kick arrives on a");
    assert_eq!(
        (stop.id, stop.identity.as_str(), stop.reason),
        (1, "bob", StopReason::Kicked)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.cluster.kick("nobody").await.unwrap(), 0);
    drop(held);

    // Replace: a newer session on b ends the one on a and takes the slot.
    let old = a
        .cluster
        .claim("carol", 2, remote(), Duplicate::Replace, 1, false)
        .await
        .unwrap();
    let cluster_a = a.cluster.clone();
    let newer = tokio::spawn({
        let cluster = b.cluster.clone();
        async move {
            cluster
                .claim("carol", 9, remote(), Duplicate::Replace, 1, false)
                .await
        }
    });
    let stop = next_stop(&mut a, Duration::from_secs(3))
        .await
        .expect("replace arrives on a");
    assert_eq!((stop.id, stop.reason), (2, StopReason::Replaced));
    drop(old); // the session on a ends, letting go of the slot
    let newer = newer.await.unwrap().expect("b takes the slot");
    assert_eq!(newer.slot(), "carol");
    let sessions = cluster_a.sessions().await.unwrap();
    let carol: Vec<_> = sessions.iter().filter(|s| s.identity == "carol").collect();
    assert_eq!(carol.len(), 1, "{sessions:?}");
    assert_eq!(carol[0].node, "vpn-b");

    // A node that dies without a word: its sessions vanish with its lease.
    let dave = a
        .cluster
        .claim("dave", 3, remote(), Duplicate::Replace, 1, false)
        .await
        .unwrap();
    std::mem::forget(dave);
    a.task.abort();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let sessions = b.cluster.sessions().await.unwrap();
            if !sessions.iter().any(|s| s.node == "vpn-a") {
                Ok(())
            } else {
                Err(format!("vpn-a's sessions outlived its lease: {sessions:?}"))
            }
        },
    )
    .await;
    b.cancel.cancel();
    let _ = b.task.await;
    drop(newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_away_then_back() {
    if skip() {
        return;
    }
    let mut etcd = Etcd::start();
    let mut a = node(&etcd, "vpn-a").await;
    let b = node(&etcd, "vpn-b").await;
    let pool = pool();
    let erin = a.cluster.address("erin", &pool).await.unwrap();
    let live = registered(&a, "erin", 1, Duplicate::Replace, false, &erin.to_string()).await;

    etcd.kill();
    // A pool client is refused: the store is unreachable.
    let refused = a
        .cluster
        .claim("frank", 2, remote(), Duplicate::Replace, 1, false)
        .await;
    assert!(
        matches!(refused, Err(ClaimError::Unreachable(_))),
        "{refused:?}"
    );
    assert!(a.cluster.address("frank", &pool).await.is_err());
    // A static address goes ahead on this node's word.
    let fixed = registered(&a, "gina", 3, Duplicate::Replace, true, "10.77.0.10").await;

    etcd.restart();
    // The node catches up: gina is registered, erin still there, once each.
    let sessions = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            if let Ok(sessions) = b.cluster.sessions().await {
                let names: Vec<&str> = sessions.iter().map(|s| s.identity.as_str()).collect();
                if names.contains(&"gina") && names.contains(&"erin") {
                    return Ok(sessions);
                }
            }
            Err("vpn-a did not catch up after etcd came back".to_string())
        },
    )
    .await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    // No lease lost or doubled: erin keeps her address; a new identity gets another.
    assert_eq!(b.cluster.address("erin", &pool).await.unwrap(), erin);
    let frank = b.cluster.address("frank", &pool).await.unwrap();
    assert_ne!(frank, erin);
    assert!(next_stop(&mut a, Duration::from_millis(100))
        .await
        .is_none());
    drop((live, fixed));
    a.cancel.cancel();
    let _ = a.task.await;
}
