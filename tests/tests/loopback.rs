//! End-to-end over loopback without root: a real server (TLS, policy, pool,
//! router) and real client connections, with in-memory TUN devices, each
//! relayed by hand here; loopback_session.rs runs the client's own session
//! loop instead.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use twoway_client::config::ClientConfig;
use twoway_client::connect::connect;
use twoway_client::error::EXIT_AUTH;
use twoway_common::inside::memory::{self, MemoryPeer};
use twoway_common::ippacket::build;
use twoway_common::message::FEATURE_UPDATE;
use twoway_common::message::{self, Bye, ByeReason, Hello, Update, PROTOCOL_VERSION};
use twoway_common::outside::tcp::record::frame::{self, FrameType};
use twoway_common::relay::{self, Counters, Keepalive, RelayEnd, Updates};
use twoway_server::pki;
use twoway_server::server::Server;

use twoway_tests::loopback::{client_config, issue, start, start_with, tls, Setup};

const WAIT: Duration = Duration::from_secs(5);

/// A connected client relaying through an in-memory device.
struct TestClient {
    device: MemoryPeer,
    address: Ipv4Addr,
    /// The features the server enabled.
    features: Vec<String>,
    /// The payload of the latest Update frame the relay received.
    updates: watch::Receiver<Bytes>,
    stop: CancellationToken,
    end: tokio::task::JoinHandle<RelayEnd>,
}

async fn client(s: &Setup, identity: &str) -> TestClient {
    let c = client_config(s, identity);
    let conn = connect(&c, tls(&c)).await.unwrap();
    let address = match conn.assignment.address.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("v6 address"),
    };
    let features = conn.assignment.features.clone();
    let (inside, device) = memory::pair(64);
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let (update_tx, updates) = watch::channel(Bytes::new());
    let end = tokio::spawn(async move {
        let (tx, mut rx) = twoway_common::queue::channel(64, 1 << 20);
        let inside = Arc::new(inside);
        let reader = {
            let inside = inside.clone();
            tokio::spawn(async move {
                twoway_common::inside::reader::to_queue(&*inside, tx, 2000).await
            })
        };
        let session = relay::Session {
            keepalive: Keepalive {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(60),
            },
            offload: false,
        };
        let counters = Counters::default();
        let stopping = async move {
            stop2.cancelled().await;
            Bye::new(ByeReason::Shutdown, "test done")
        };
        let end = relay::relay(
            conn.outside,
            &*inside,
            &mut rx,
            |_| Ok(()),
            &counters,
            session,
            None,
            Updates::Receive(update_tx),
            stopping,
        )
        .await;
        reader.abort();
        end
    });
    TestClient {
        device,
        address,
        features,
        updates,
        stop,
        end,
    }
}

impl TestClient {
    /// Puts `packet` into the client's device, as the laptop would.
    async fn send(&self, packet: &[u8]) {
        self.device
            .inject
            .send(Bytes::copy_from_slice(packet))
            .await
            .unwrap();
    }
}

/// The relay ends, within [`WAIT`], with the server's Bye for `reason`.
async fn expect_bye(end: tokio::task::JoinHandle<RelayEnd>, reason: ByeReason) {
    match tokio::time::timeout(WAIT, end).await.unwrap().unwrap() {
        RelayEnd::PeerBye(b) => assert_eq!(b.reason, reason),
        other => panic!("expected a Bye, got {other:?}"),
    }
}

/// `c` sends a packet to `dst`; the server's device gets it as sent.
async fn reaches_the_server(c: &TestClient, s: &mut Setup, dst: Ipv4Addr, payload: &[u8]) {
    let packet = build::ipv4(c.address, dst, payload);
    c.send(&packet).await;
    assert_eq!(
        recv(&mut s.server_inside.written).await.as_deref(),
        Some(&packet[..])
    );
}

async fn recv(rx: &mut mpsc::Receiver<Bytes>) -> Option<Bytes> {
    tokio::time::timeout(WAIT, rx.recv()).await.ok().flatten()
}

#[tokio::test]
async fn packets_cross_both_ways_with_static_and_pool_addresses() {
    let mut s = start("[defaults]\nroutes = [\"198.19.0.0/24\"]\n[[client]]\nidentity = \"alice\"\naddress = \"198.18.77.10\"\n").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let mut alice = client(&s, "alice").await;
    let bob = client(&s, "bob").await;
    assert_eq!(alice.address, Ipv4Addr::new(198, 18, 77, 10));
    assert!(
        s.server.config().tunnel.pool.contains(bob.address),
        "bob {} not from the pool",
        bob.address
    );

    // Client → corporate network: arrives on the server's device.
    reaches_the_server(&alice, &mut s, Ipv4Addr::new(198, 19, 0, 2), b"hello corp").await;

    // Corporate network → client: the router picks alice's session.
    let down = build::ipv4(Ipv4Addr::new(198, 19, 0, 2), alice.address, b"hello alice");
    s.inject(&down).await;
    assert_eq!(
        recv(&mut alice.device.written).await.as_deref(),
        Some(&down[..])
    );

    // A forged source and a packet to another client never reach the device.
    let forged = build::ipv4(
        Ipv4Addr::new(198, 18, 77, 99),
        Ipv4Addr::new(198, 19, 0, 2),
        b"forged",
    );
    let to_bob = build::ipv4(alice.address, bob.address, b"psst");
    alice.send(&forged).await;
    alice.send(&to_bob).await;
    reaches_the_server(&alice, &mut s, Ipv4Addr::new(198, 19, 0, 2), b"marker").await;

    let status = s.server.sessions();
    assert_eq!(status.len(), 2);
    assert!(status
        .iter()
        .any(|x| x.identity == "alice" && x.address == "198.18.77.10"));

    // A server stop says Bye to every client.
    s.shutdown.cancel();
    expect_bye(alice.end, ByeReason::Shutdown).await;
    bob.stop.cancel();
}

#[tokio::test]
async fn pool_address_is_kept_across_reconnect_and_restart() {
    let s = start("").await;
    issue(&s.pki, "bob");
    let first = client(&s, "bob").await;
    first.stop.cancel();
    let _ = first.end.await;
    let second = client(&s, "bob").await;
    assert_eq!(second.address, first.address);
    second.stop.cancel();
    let _ = second.end.await;
    // A new server on the same state folder hands out the same address.
    s.shutdown.cancel();
    let restarted = Arc::new(Server::new(s.server.config().clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = client_config(&s, "bob");
    c.server = format!("127.0.0.1:{}", listener.local_addr().unwrap().port()).into();
    let (inside, _device) = memory::pair(8);
    let shutdown = CancellationToken::new();
    tokio::spawn(restarted.serve(listener, Arc::new(inside), shutdown.clone()));
    let conn = connect(&c, tls(&c)).await.unwrap();
    assert_eq!(conn.assignment.address.ip(), IpAddr::V4(first.address));
    shutdown.cancel();
}

#[tokio::test]
async fn foreign_ca_and_disallowed_identity_are_refused_as_authentication() {
    let s = start("allow_unlisted = false\n[[client]]\nidentity = \"alice\"\n").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "carol");
    // carol's certificate is valid, but policy does not list her.
    let c = client_config(&s, "carol");
    let err = connect(&c, tls(&c)).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_AUTH, "{err:?}");

    // mallory's certificate comes from another CA.
    let other = tempfile::tempdir().unwrap();
    let other_pki = other.path().join("pki");
    pki::init(&pki::InitOptions {
        dir: other_pki.clone(),
        name: "vpn.test".into(),
        ips: vec![],
        port: 4433,
        days: 30,
    })
    .unwrap();
    issue(&other_pki, "mallory");
    let mut m = ClientConfig::load(&other_pki.join("mallory.toml")).unwrap();
    m.server = format!("127.0.0.1:{}", s.port).into();
    m.tls.ca = Some(s.pki.join("ca.pem"));
    let err = connect(&m, tls(&m)).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_AUTH, "{err:?}");
    assert_eq!(err.exit_code(), 3);

    // After both refusals the server still serves.
    let alice = client(&s, "alice").await;
    alice.stop.cancel();
}

#[tokio::test]
async fn a_server_whose_certificate_does_not_verify_is_skipped_for_the_next() {
    // A node of another CA (a misconfigured node, or someone else's server).
    let stranger = start("").await;
    let s = start("").await;
    issue(&s.pki, "alice");
    let mut c = client_config(&s, "alice");
    let alone = format!("127.0.0.1:{}", stranger.port);
    c.server = vec![alone.clone(), format!("127.0.0.1:{}", s.port)].into();
    let connected = connect(&c, tls(&c)).await;
    assert!(connected.is_ok(), "the second server: {connected:?}");
    drop(connected);

    // Alone, that server is an authentication failure (exit 3, no retry).
    c.server = alone.into();
    let err = connect(&c, tls(&c)).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_AUTH, "{err:?}");
}

#[tokio::test]
async fn the_session_limit_holds_and_frees_with_the_session() {
    let s = start_with("", "[limits]\nmax_sessions = 1\n").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let alice = client(&s, "alice").await;
    let c = client_config(&s, "bob");
    let err = connect(&c, tls(&c)).await.unwrap_err();
    assert!(err.to_string().contains("Busy"), "{err}");
    assert_eq!(err.exit_code(), 4, "busy is worth retrying");
    // alice again (a laptop back from sleep) replaces her own session, full
    // server or not.
    let alice2 = client(&s, "alice").await;
    match alice.end.await.unwrap() {
        RelayEnd::PeerBye(bye) => assert_eq!(bye.reason, ByeReason::Replaced),
        other => panic!("old session ended with {other:?}"),
    }
    // Once alice leaves, her place is free.
    alice2.stop.cancel();
    let _ = alice2.end.await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect(&c, tls(&c)).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("Busy"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("still refused after alice left: {e}"),
        }
    }
}

#[tokio::test]
async fn revoked_certificate_is_refused_and_reload_cuts_the_live_session() {
    let s = start("").await;
    issue(&s.pki, "alice");
    let alice = client(&s, "alice").await;
    pki::revoke(&s.pki, "alice").unwrap();
    assert_eq!(s.server.reload().unwrap().closed.len(), 1);
    expect_bye(alice.end, ByeReason::Revoked).await;
    let c = client_config(&s, "alice");
    let err = connect(&c, tls(&c)).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_AUTH, "{err:?}");
}

/// A reload that makes a live session's pool address another identity's
/// static address ends that session (its client reconnects for another
/// address), so the two never share it; the owner then gets it.
#[tokio::test]
async fn a_pool_address_that_a_reload_makes_static_is_given_up() {
    let s = start("").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let alice = client(&s, "alice").await;
    let taken = alice.address;
    s.write_policy(&format!(
        "[[client]]\nidentity = \"bob\"\naddress = \"{taken}\"\n"
    ));
    let reloaded = s.server.reload().unwrap();
    assert_eq!(reloaded.closed.len(), 1, "{reloaded:?}");
    expect_bye(alice.end, ByeReason::PolicyChanged).await;
    let bob = client(&s, "bob").await;
    assert_eq!(bob.address, taken);
    let alice = client(&s, "alice").await;
    assert_ne!(alice.address, taken);
}

/// A reload that revokes the certificate after the TLS handshake checked it
/// and before the Hello arrives: the grant checks the CRL in force again and
/// refuses, rather than registering a session under the new snapshot.
#[tokio::test]
async fn a_certificate_revoked_between_handshake_and_hello_is_refused() {
    let s = start("").await;
    issue(&s.pki, "alice");
    let mut tls_stream = tls_connected(&s, "alice").await;
    pki::revoke(&s.pki, "alice").unwrap();
    s.server.reload().unwrap();
    let answer = hello_and_answer(&mut tls_stream, &[]).await;
    assert_eq!(answer.kind, FrameType::Refuse, "a session was granted");
    let refusal: message::Refusal = message::decode(&answer.payload).unwrap();
    assert_eq!(refusal.code, message::RefuseCode::Revoked, "{refusal:?}");
    assert!(s.server.sessions().is_empty());
}

/// `identity`'s TLS connection to the server, handshake done, nothing sent.
async fn tls_connected(
    s: &Setup,
    identity: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let c = client_config(s, identity);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let name = twoway_common::tls::server_name("vpn.test").unwrap();
    tokio_rustls::TlsConnector::from(tls(&c))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Sends a Hello announcing `features`; returns the server's first frame.
async fn hello_and_answer(
    tls_stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    features: &[&str],
) -> frame::Frame {
    let mut out = BytesMut::new();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        features: features.iter().map(|f| f.to_string()).collect(),
        software: "test".into(),
    };
    frame::encode(FrameType::Hello, &message::encode(&hello), &mut out);
    tls_stream.write_all(&out).await.unwrap();
    let mut rbuf = BytesMut::new();
    loop {
        if let Some(f) = frame::decode(&mut rbuf).unwrap() {
            return f;
        }
        assert!(
            tls_stream.read_buf(&mut rbuf).await.unwrap() > 0,
            "closed without an answer to the Hello"
        );
    }
}

/// A session driven by hand over rustls's buffered client: Hello sent,
/// Assign received.
async fn hand_made_session(
    s: &Setup,
    identity: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    hand_made_session_with(s, identity, &[]).await.0
}

/// [`hand_made_session`] announcing `features`; also returns the features
/// the assignment enabled.
async fn hand_made_session_with(
    s: &Setup,
    identity: &str,
    features: &[&str],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<String>,
) {
    let mut tls_stream = tls_connected(s, identity).await;
    let assign = hello_and_answer(&mut tls_stream, features).await;
    assert_eq!(assign.kind, FrameType::Assign);
    let a: twoway_common::message::Assignment = message::decode(&assign.payload).unwrap();
    (tls_stream, a.features)
}

#[tokio::test]
async fn the_server_answers_a_clients_bye_with_close_notify() {
    let s = start("").await;
    issue(&s.pki, "alice");
    let mut tls_stream = hand_made_session(&s, "alice").await;
    let mut out = BytesMut::new();
    let bye = Bye::new(ByeReason::Shutdown, "client going");
    frame::encode(FrameType::Bye, &message::encode(&bye), &mut out);
    tls_stream.write_all(&out).await.unwrap();
    tls_stream.flush().await.unwrap();
    // Pongs or nothing may come, then close_notify: a clean end of stream.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, tls_stream.read_to_end(&mut rest))
        .await
        .expect("the server closes")
        .expect("with close_notify, not a bare TCP close");
    let freed = async {
        while !s.server.sessions().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, freed)
        .await
        .expect("the session is freed");
}

#[tokio::test]
async fn garbage_in_a_session_closes_only_that_session() {
    let s = start("").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let bob = client(&s, "bob").await;

    // alice authenticates properly, then sends an unknown frame type.
    let mut tls_stream = hand_made_session(&s, "alice").await;
    tls_stream
        .write_all(&[0x7f, 0, 0, 3, 1, 2, 3])
        .await
        .unwrap();
    // The server answers with a Bye (protocol error) and closes with
    // close_notify (rustls reads a close without it as an error).
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, tls_stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .expect("a Bye, then close_notify");
    let mut rbuf = BytesMut::from(&rest[..]);
    let bye = frame::decode(&mut rbuf).unwrap().unwrap();
    assert_eq!(bye.kind, FrameType::Bye);
    let bye: Bye = message::decode(&bye.payload).unwrap();
    assert_eq!(bye.reason, ByeReason::ProtocolError);

    // bob's session is untouched.
    assert!(s.server.sessions().iter().any(|x| x.identity == "bob"));
    assert!(!bob.end.is_finished());
    bob.stop.cancel();
}

/// The policy of the update tests: alice at a static address in group
/// "eng", which `eng_routes` gives its routes; `extra` TOML is appended.
fn eng_policy(eng_routes: &str, alice_address: &str, extra: &str) -> String {
    format!(
        "[defaults]\nroutes = [\"198.19.0.0/24\"]\n\n[[group]]\nname = \"eng\"\nroutes = [{eng_routes}]\n\
         dns = [\"198.19.0.53\"]\n\n[[client]]\nidentity = \"alice\"\naddress = \"{alice_address}\"\n\
         groups = [\"eng\"]\n{extra}"
    )
}

/// The next Update the client's relay received, within [`WAIT`].
async fn next_update(c: &mut TestClient) -> Update {
    tokio::time::timeout(WAIT, c.updates.changed())
        .await
        .expect("an Update within 5 s")
        .expect("the relay is running");
    let payload = c.updates.borrow_and_update().clone();
    message::decode(&payload).expect("an Update the client can read")
}

/// Reading everything the server sends on a hand-made session until it
/// closes: the frames, in order.
async fn frames_until_close(
    tls_stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Vec<frame::Frame> {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls_stream.read_to_end(&mut rest))
        .await
        .expect("the server closes");
    let mut rbuf = BytesMut::from(&rest[..]);
    let mut frames = Vec::new();
    while let Some(f) = frame::decode(&mut rbuf).unwrap() {
        frames.push(f);
    }
    frames
}

/// A route and a DNS server added to alice's group reach her live session
/// as an Update: no Bye, the same session (same id, traffic still flows), and
/// the server counts it as updated, not closed. A route taken away again is
/// another Update. A new static address still ends the session with a Bye.
#[tokio::test]
async fn reload_pushes_a_changed_grant_to_the_live_session() {
    let mut s = start(&eng_policy("", "198.18.77.10", "")).await;
    issue(&s.pki, "alice");
    let mut alice = client(&s, "alice").await;
    assert!(
        alice.features.iter().any(|f| f == FEATURE_UPDATE),
        "the server enables `update` for a client that announced it: {:?}",
        alice.features
    );
    let id = s.server.sessions()[0].id;
    let since = s.server.sessions()[0].since.clone();

    s.write_policy(&eng_policy(
        "\"198.19.1.0/24\"",
        "198.18.77.10",
        "dns = [\"198.19.1.53\"]\n",
    ));
    let done = s.server.reload().unwrap();
    assert_eq!((done.closed, done.updated), (vec![], vec![id]));
    let u = next_update(&mut alice).await;
    assert_eq!(
        u.routes,
        vec![
            "198.19.0.0/24".parse().unwrap(),
            "198.19.1.0/24".parse().unwrap()
        ]
    );
    assert_eq!(
        u.dns,
        vec![
            "198.19.0.53".parse::<IpAddr>().unwrap(),
            "198.19.1.53".parse().unwrap()
        ]
    );
    // The same session carries on.
    reaches_the_server(&alice, &mut s, Ipv4Addr::new(198, 19, 1, 2), b"new route").await;
    let now = s.server.sessions();
    assert_eq!((now.len(), now[0].id, &now[0].since), (1, id, &since));
    assert!(!alice.end.is_finished());

    // The same policy again: nothing to push.
    let done = s.server.reload().unwrap();
    assert_eq!((done.closed.len(), done.updated.len()), (0, 0));

    // The route taken away again.
    s.write_policy(&eng_policy("", "198.18.77.10", "dns = [\"198.19.1.53\"]\n"));
    assert_eq!(s.server.reload().unwrap().updated, vec![id]);
    assert_eq!(
        next_update(&mut alice).await.routes,
        vec!["198.19.0.0/24".parse().unwrap()]
    );

    // Another address cannot be pushed: the client is told to reconnect.
    s.write_policy(&eng_policy("", "198.18.77.11", ""));
    assert_eq!(s.server.reload().unwrap().closed, vec![id]);
    expect_bye(alice.end, ByeReason::PolicyChanged).await;
}

/// A client that did not announce `update` (an older one) is never sent an
/// Update frame, which it would take for an unknown type: a changed grant
/// ends its session with a Bye policy-changed, as before. One that did gets
/// the Update on the same connection.
#[tokio::test]
async fn a_client_without_update_is_sent_a_bye_instead() {
    let s = start(&eng_policy("", "198.18.77.10", "")).await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let (mut old, features) = hand_made_session_with(&s, "alice", &[]).await;
    assert!(
        !features.iter().any(|f| f == FEATURE_UPDATE),
        "{features:?}"
    );
    let (mut new, features) = hand_made_session_with(&s, "bob", &[FEATURE_UPDATE]).await;
    assert!(features.iter().any(|f| f == FEATURE_UPDATE), "{features:?}");

    s.write_policy(&eng_policy("", "198.18.77.10", "").replace(
        "[defaults]\nroutes = [\"198.19.0.0/24\"]",
        "[defaults]\nroutes = [\"198.19.0.0/24\", \"198.19.2.0/24\"]",
    ));
    let done = s.server.reload().unwrap();
    assert_eq!((done.closed.len(), done.updated.len()), (1, 1));
    let frames = frames_until_close(&mut old).await;
    assert!(
        frames.iter().all(|f| f.kind != FrameType::Update),
        "no Update frame for a client without the feature"
    );
    let bye = frames
        .iter()
        .find(|f| f.kind == FrameType::Bye)
        .expect("a Bye");
    let bye: Bye = message::decode(&bye.payload).unwrap();
    assert_eq!(bye.reason, ByeReason::PolicyChanged);

    // bob's session: an Update (among Pings), and no close.
    let mut rbuf = BytesMut::new();
    let update = tokio::time::timeout(WAIT, async {
        loop {
            while let Some(f) = frame::decode(&mut rbuf).unwrap() {
                if f.kind != FrameType::Ping {
                    return f;
                }
            }
            assert!(
                new.read_buf(&mut rbuf).await.unwrap() > 0,
                "bob's session closed"
            );
        }
    })
    .await
    .expect("an Update for bob");
    assert_eq!(update.kind, FrameType::Update);
    let u: Update = message::decode(&update.payload).unwrap();
    assert_eq!(u.routes.len(), 2);
    assert!(s.server.sessions().iter().any(|x| x.identity == "bob"));
}

/// `client_to_client` is enforced by the server alone: a reload that turns
/// it on lets alice's packets to bob into the server's device on the
/// sessions they have (the kernel routes them on), with no message and no
/// reconnect, and turning it off again stops them.
#[tokio::test]
async fn client_to_client_changes_on_the_live_session() {
    let mut s = start("client_to_client = false\n").await;
    issue(&s.pki, "alice");
    issue(&s.pki, "bob");
    let alice = client(&s, "alice").await;
    let bob = client(&s, "bob").await;
    let to_bob = build::ipv4(alice.address, bob.address, b"psst");
    for (c2c, passes) in [(false, false), (true, true), (false, false)] {
        s.write_policy(&format!("client_to_client = {c2c}\n"));
        let done = s.server.reload().unwrap();
        assert_eq!(done.closed.len(), 0);
        alice.send(&to_bob).await;
        let got = tokio::time::timeout(Duration::from_millis(500), s.server_inside.written.recv())
            .await
            .ok()
            .flatten();
        assert_eq!(got.is_some(), passes, "client_to_client = {c2c}");
    }
    assert_eq!(s.server.sessions().len(), 2);
    assert!(!alice.end.is_finished() && !bob.end.is_finished());
}
