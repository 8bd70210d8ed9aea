//! A small version of the load test (scripts/load.sh runs the large one against
//! a real server): an in-process server on loopback with a memory device that
//! answers pings, 50 sessions of 50 identities held with echo traffic, none
//! lost; then 50 complete handshakes of the same (returning) identities.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use twoway_common::inside::memory;
use twoway_server::config::ServerConfig;
use twoway_server::leases::LeaseStore;
use twoway_server::server::Server;
use twoway_tests::load::{self, icmp, mint, Client, HandshakesOptions, SessionsOptions};

const SESSIONS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_held_with_echo_and_fifty_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    // Every connection comes from 127.0.0.1: lift the per-source limits.
    let pki_dir = twoway_tests::loopback::make_pki(
        dir.path(),
        "[limits]\nconnections_per_source_per_sec = 10000\n\
         connection_burst_per_source = 10000\nhandshakes_per_source = 256\n",
    );
    let config = ServerConfig::load(&pki_dir.join("server.toml")).unwrap();
    let gateway = config.tunnel.server_address();
    let server = Arc::new(Server::new(config).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (inside, mut device) = memory::pair(256);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(
        server
            .clone()
            .serve(listener, Arc::new(inside), shutdown.clone()),
    );
    // The server's "kernel": answer echo requests to its own tunnel address.
    let answered = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(p) = device.written.recv().await {
            if p.len() >= 20 && p[16..20] == gateway.octets() {
                if let Some(reply) = icmp::reply_to(&p) {
                    n += 1;
                    let _ = device.inject.send(Bytes::from(reply)).await;
                }
            }
        }
        n
    });

    let target = mint::Target {
        server: addr.clone(),
        server_name: "vpn.test".into(),
    };
    let clients: Vec<Client> = mint::mint(
        &pki_dir,
        "load",
        SESSIONS,
        &target,
        &dir.path().join("clients"),
    )
    .unwrap()
    .iter()
    .map(|p| Client::load(p, None).unwrap())
    .collect();

    let report = load::sessions(
        &clients,
        &SessionsOptions {
            sessions: SESSIONS,
            concurrency: 16,
            idle: Duration::from_millis(200),
            hold: Duration::from_millis(1500),
            echo_interval: Duration::from_millis(250),
            phase_file: None,
        },
    )
    .await;
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert_eq!(n("sessions_established"), SESSIONS as u64, "{report}");
    assert_eq!(n("sessions_lost"), 0, "{report}");
    assert_eq!(n("sessions_held"), SESSIONS as u64, "{report}");
    assert_eq!(n("sessions_without_echo_reply"), 0, "{report}");
    assert!(n("echo_replies_received") >= SESSIONS as u64, "{report}");
    assert!(report["closed_in_time"].as_bool().unwrap(), "{report}");

    // Returning clients: their leases exist, so the lease file is not
    // rewritten for each handshake (writing it is atomic: a new inode).
    let lease_file = LeaseStore::new(&server.config().state.dir)
        .path()
        .to_owned();
    let inode = || std::fs::metadata(&lease_file).unwrap().ino();
    let before = inode();
    let report = load::handshakes(
        &clients,
        &HandshakesOptions {
            handshakes: SESSIONS,
            concurrency: 8,
        },
    )
    .await;
    assert_eq!(
        report["handshakes_completed"].as_u64(),
        Some(SESSIONS as u64),
        "{report}"
    );
    assert_eq!(inode(), before, "the lease file was rewritten");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
    answered.abort();
}
