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
use twoway_tests::cut::Cut;
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
    node_at(etcd.endpoint(), name).await
}

/// A node that reaches etcd at `endpoint` (e.g. through a [`Cut`]).
async fn node_at(endpoint: String, name: &str) -> Node {
    let section = ClusterSection {
        etcd: vec![endpoint],
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

/// A fresh etcd with nodes vpn-a and vpn-b on it (etcd lives as long as
/// the first value: bind it to a name, not `_`).
async fn two_nodes() -> (Etcd, Node, Node) {
    let etcd = Etcd::start();
    let a = node(&etcd, "vpn-a").await;
    let b = node(&etcd, "vpn-b").await;
    (etcd, a, b)
}

/// Session `id` of `identity` claimed on `node` under `replace`.
async fn replacing(node: &Node, identity: &str, id: u64) -> Claim {
    node.cluster
        .claim(identity, id, remote(), Duplicate::Replace, 1, false)
        .await
        .unwrap()
}

fn pool() -> Pool {
    pool_of("10.77.0.0/26")
}

fn pool_of(range: &str) -> Pool {
    let reserved = [Ipv4Addr::new(10, 77, 0, 0), Ipv4Addr::new(10, 77, 0, 1)];
    Pool::new(range.parse().unwrap(), reserved)
}

/// A claim that only the store could grant, made while it is away: refused
/// as unreachable.
async fn claim_is_unreachable(
    node: &Node,
    identity: &str,
    id: u64,
    mode: Duplicate,
    max: usize,
    static_address: bool,
) {
    let claim = node
        .cluster
        .claim(identity, id, remote(), mode, max, static_address)
        .await;
    assert!(
        matches!(claim, Err(ClaimError::Unreachable(_))),
        "{claim:?}"
    );
}

fn remote() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

/// Session `id` of `identity` claimed on `node` (one at a time under
/// `duplicate`; `static_address` as the policy says) and registered there
/// with `address` (a pool lease unless `static_address`).
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
        node.cluster
            .register(&claim, address.parse().unwrap(), None, !static_address)
            .await,
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

/// The next stop on `node` comes within `within` and ends session `id` of
/// `identity` for `reason`.
async fn expect_stop(
    node: &mut Node,
    within: Duration,
    (id, identity, reason): (u64, &str, StopReason),
) {
    let stop = next_stop(node, within).await.unwrap_or_else(|| {
        panic!("no stop within {within:?}; expected {reason:?} of {identity}'s session {id}")
    });
    assert_eq!(
        (stop.id, stop.identity.as_str(), stop.reason),
        (id, identity, reason)
    );
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
    let (_etcd, mut a, b) = two_nodes().await;
    let pool = pool();

    // One identity, one address, whichever node asks.
    let on_a = a.cluster.address("alice", &pool, None).await.unwrap();
    let on_b = b.cluster.address("alice", &pool, None).await.unwrap();
    assert_eq!(on_a, on_b);
    assert!(pool.usable(on_a));
    // A returning identity: the claim read its lease, the address costs no
    // further round trip to etcd.
    let returning = replacing(&a, "alice", 90).await;
    let seen = returning.lease_seen().cloned().expect("read by the claim");
    assert_eq!(
        seen.as_ref().map(|(v, _)| v.as_slice()),
        Some(on_a.to_string().as_bytes())
    );
    let before = a.cluster.store().round_trips();
    let again = a.cluster.address("alice", &pool, Some(seen)).await.unwrap();
    assert_eq!(again, on_a);
    assert_eq!(a.cluster.store().round_trips(), before);
    drop(returning);

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
                    cluster
                        .address(&format!("user{i}"), &pool, None)
                        .await
                        .unwrap(),
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
    expect_stop(
        &mut a,
        Duration::from_secs(3),
        (1, "bob", StopReason::Kicked),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.cluster.kick("nobody").await.unwrap(), 0);
    drop(held);

    // Replace: a newer session on b ends the one on a and takes the slot.
    let old = replacing(&a, "carol", 2).await;
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
    let dave = replacing(&a, "dave", 3).await;
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
    let erin = a.cluster.address("erin", &pool, None).await.unwrap();
    let live = registered(&a, "erin", 1, Duplicate::Replace, false, &erin.to_string()).await;

    etcd.kill();
    // A pool client is refused: the store is unreachable.
    claim_is_unreachable(&a, "frank", 2, Duplicate::Replace, 1, false).await;
    assert!(a.cluster.address("frank", &pool, None).await.is_err());
    // A static address goes ahead on this node's word.
    let fixed = registered(&a, "gina", 3, Duplicate::Replace, true, "10.77.0.10").await;
    // But only one session of hers: a second device would need a pool address.
    claim_is_unreachable(&a, "gina", 4, Duplicate::Allow, 2, true).await;

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
    assert_eq!(b.cluster.address("erin", &pool, None).await.unwrap(), erin);
    let frank = b.cluster.address("frank", &pool, None).await.unwrap();
    assert_ne!(frank, erin);
    assert!(next_stop(&mut a, Duration::from_millis(100))
        .await
        .is_none());
    drop((live, fixed));
    a.cancel.cancel();
    let _ = a.task.await;
}

/// Session `id` of `identity` claimed on `node`, leased a pool address there
/// and registered with it, as a server does for a pool client.
async fn pool_session(node: &Node, identity: &str, id: u64, pool: &Pool) -> (Claim, Ipv4Addr) {
    let claim = replacing(node, identity, id).await;
    let address = node
        .cluster
        .address(identity, pool, claim.lease_seen().cloned())
        .await
        .unwrap();
    assert!(
        node.cluster
            .register(&claim, address.into(), None, true)
            .await,
        "{identity} registered at {address}"
    );
    (claim, address)
}

/// Every usable address of `pool`.
fn usable(pool: &Pool) -> Vec<Ipv4Addr> {
    pool.range().iter().filter(|a| pool.usable(*a)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_pool_reclaims_only_leases_without_a_live_session() {
    if skip() {
        return;
    }
    let (_etcd, a, b) = two_nodes().await;
    let pool = pool_of("10.77.0.0/29");
    let usable = usable(&pool);
    assert!(usable.len() >= 3, "{usable:?}");

    // The oldest lease has no session; every other address is held by a live
    // session, on one node or the other.
    let old = a.cluster.address("old", &pool, None).await.unwrap();
    let mut live = Vec::new();
    for i in 1..usable.len() {
        let n = if i % 2 == 0 { &a } else { &b };
        live.push(pool_session(n, &format!("live{i}"), i as u64, &pool).await);
    }
    let taken: BTreeSet<Ipv4Addr> = live.iter().map(|(_, a)| *a).chain([old]).collect();
    assert_eq!(taken.len(), usable.len(), "all distinct: {taken:?}");

    // A new identity takes the one address without a live session.
    let (newer, reclaimed) = pool_session(&b, "new", 100, &pool).await;
    assert_eq!(reclaimed, old);
    // Its old holder, back without a session: nothing is free to take.
    match a.cluster.address("old", &pool, None).await {
        Err(twoway_server::cluster::AddressError::Exhausted(_)) => {}
        other => panic!("expected an exhausted pool, got {other:?}"),
    }
    // Every live session kept its address.
    for (i, (_, address)) in live.iter().enumerate() {
        let n = if (i + 1) % 2 == 0 { &a } else { &b };
        let who = format!("live{}", i + 1);
        assert_eq!(
            n.cluster.address(&who, &pool, None).await.unwrap(),
            *address
        );
    }

    // Once "new" has gone, its lease is the one to take again.
    drop(newer);
    wait_sessions(&b, |s| !s.iter().any(|s| s.identity == "new")).await;
    assert_eq!(a.cluster.address("old", &pool, None).await.unwrap(), old);
    drop(live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_past_its_lease_gives_up_a_reclaimed_address() {
    if skip() {
        return;
    }
    let etcd = Etcd::start();
    let cut = Cut::start(etcd.address()).await;
    let mut a = node_at(cut.url(), "vpn-a").await;
    let b = node(&etcd, "vpn-b").await;
    let pool = pool_of("10.77.0.0/29");

    let (erin_session, erin) = pool_session(&a, "erin", 1, &pool).await;
    let mut rest = Vec::new();
    for i in 1..usable(&pool).len() {
        rest.push(pool_session(&b, &format!("live{i}"), 10 + i as u64, &pool).await);
    }

    // vpn-a loses etcd for longer than its lease (2 s): erin's session
    // leaves etcd, and with the pool full her address goes to zed on vpn-b.
    cut.sever();
    wait_sessions(&b, |s| !s.iter().any(|s| s.identity == "erin")).await;
    let (zed_session, zed) = pool_session(&b, "zed", 99, &pool).await;
    assert_eq!(
        zed, erin,
        "zed takes the only address without a live session"
    );

    // vpn-a is back: it must not write erin's session again at zed's
    // address, but end it (her client reconnects for another address).
    cut.mend();
    expect_stop(
        &mut a,
        Duration::from_secs(20),
        (1, "erin", StopReason::AddressLost),
    )
    .await;
    // Give vpn-a's catch-up a moment more: erin must stay out of etcd.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = b.cluster.sessions().await.unwrap();
    let at: Vec<&str> = sessions
        .iter()
        .filter(|s| s.address == erin.to_string())
        .map(|s| s.identity.as_str())
        .collect();
    assert_eq!(at, ["zed"], "{sessions:?}");
    drop((erin_session, zed_session, rest));
    a.cancel.cancel();
    let _ = a.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kick_before_registration_is_not_lost() {
    if skip() {
        return;
    }
    let (_etcd, mut a, b) = two_nodes().await;
    // Claimed on a, still setting up (no registration yet), kicked from b.
    let claim = replacing(&a, "hank", 5).await;
    assert_eq!(a.cluster.stopped(&claim), None);
    assert_eq!(b.cluster.kick("hank").await.unwrap(), 1);
    expect_stop(
        &mut a,
        Duration::from_secs(3),
        (5, "hank", StopReason::Kicked),
    )
    .await;
    // The server found no session to stop; registration learns of it.
    assert_eq!(a.cluster.stopped(&claim), Some(StopReason::Kicked));
    assert!(
        !a.cluster
            .register(&claim, "10.77.0.20".parse().unwrap(), None, true)
            .await,
        "a kicked session registered"
    );
    drop(claim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replace_waits_for_the_old_session_also_after_compaction() {
    if skip() {
        return;
    }
    let (etcd, mut a, b) = two_nodes().await;
    let old = replacing(&a, "ivy", 6).await;
    // The revision of ivy's session key is history now: no watch can start there.
    etcd.compact();
    let newer = tokio::spawn({
        let cluster = b.cluster.clone();
        async move {
            cluster
                .claim("ivy", 60, remote(), Duplicate::Replace, 1, false)
                .await
        }
    });
    expect_stop(
        &mut a,
        Duration::from_secs(3),
        (6, "ivy", StopReason::Replaced),
    )
    .await;
    // The old session takes a moment to end; until it lets go of the slot
    // (or 3 s pass), the new one waits: never both at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !newer.is_finished(),
        "b took the slot while the old session still held it"
    );
    drop(old);
    let newer = newer
        .await
        .unwrap()
        .expect("b takes the slot once a let go");
    assert_eq!(newer.slot(), "ivy");
    let sessions = b.cluster.sessions().await.unwrap();
    let ivy: Vec<&str> = sessions
        .iter()
        .filter(|s| s.identity == "ivy")
        .map(|s| s.node.as_str())
        .collect();
    assert_eq!(ivy, ["vpn-b"], "{sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ended_sessions_leave_etcd_together_but_never_take_anothers_slot() {
    if skip() {
        return;
    }
    let (_etcd, mut a, b) = two_nodes().await;
    let mut on_a = Vec::new();
    for (i, who) in ["jo", "kim", "lee"].into_iter().enumerate() {
        let claim = replacing(&a, who, 70 + i as u64).await;
        on_a.push(claim);
    }
    // kim's slot goes to vpn-b while her old session on a still holds it
    // (it does not answer the kick: b takes over after the wait).
    let taken = replacing(&b, "kim", 80).await;
    expect_stop(
        &mut a,
        Duration::from_secs(1),
        (71, "kim", StopReason::Replaced),
    )
    .await;
    // All three end on a at once: jo and lee leave etcd, kim's slot stays b's.
    drop(on_a);
    wait_sessions(&b, |s| {
        !s.iter().any(|s| s.identity == "jo" || s.identity == "lee")
    })
    .await;
    let sessions = b.cluster.sessions().await.unwrap();
    let kim: Vec<(&str, u64)> = sessions
        .iter()
        .filter(|s| s.identity == "kim")
        .map(|s| (s.node.as_str(), s.id))
        .collect();
    assert_eq!(kim, [("vpn-b", 80)], "{sessions:?}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_node_of_the_same_name_is_noticed() {
    if skip() {
        return;
    }
    let (etcd, a, b) = two_nodes().await;
    assert!(!a.cluster.name_taken() && !b.cluster.name_taken());
    let twin = node(&etcd, "vpn-a").await;
    assert!(twin.cluster.name_taken(), "a second vpn-a went unnoticed");
    assert!(!a.cluster.name_taken());
}
