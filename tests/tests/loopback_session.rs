//! The client's real session loop (`twoway_client::session::run`, what
//! `twoway up` runs) over loopback without root: a real server, an
//! in-memory device for each side and a host network that records what the
//! client asked of it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use twoway_client::error::ClientError;
use twoway_client::host::Change;
use twoway_client::reconnect;
use twoway_client::session::{self, Client};
use twoway_client::status::Status;
use twoway_common::inside::memory::MemoryPeer;
use twoway_common::inside::tun::TunSettings;
use twoway_common::ippacket::build;
use twoway_server::pki;
use twoway_tests::loopback::{
    client_config, issue, memory_devices, start, tls, HostCall, HostRecord, RecordingHost, Setup,
};

const WAIT: Duration = Duration::from_secs(5);

const POLICY: &str = "[defaults]\nroutes = [\"198.19.0.0/24\"]\ndns = [\"198.19.0.53\"]\n\n\
                      [[client]]\nidentity = \"alice\"\naddress = \"198.18.77.10\"\n";
const ALICE: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 10);
const CORP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

/// alice's client running the real session loop.
struct Running {
    host: HostRecord,
    devices: mpsc::UnboundedReceiver<(TunSettings, MemoryPeer)>,
    status: Status,
    stop: CancellationToken,
    end: JoinHandle<Result<(), ClientError>>,
}

/// A server with [`POLICY`] and alice's client loop running against it.
async fn start_alice() -> (Setup, Running) {
    let s = start(POLICY).await;
    issue(&s.pki, "alice");
    let alice = run_alice(&s);
    (s, alice)
}

fn run_alice(s: &Setup) -> Running {
    let config = client_config(s, "alice");
    let tls = tls(&config);
    let status = Status::new(&config.server);
    let stop = CancellationToken::new();
    let (host, record) = RecordingHost::new();
    let (open, devices) = memory_devices();
    let end = {
        let (status, stop) = (status.clone(), stop.clone());
        tokio::spawn(async move {
            let client = Client {
                config: &config,
                tls,
                status: &status,
                stop: &stop,
            };
            session::run(client, None, move |_| host, open).await
        })
    };
    Running {
        host: record,
        devices,
        status,
        stop,
        end,
    }
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<HostCall>) -> HostCall {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a host call within 5 s")
        .expect("the client is running")
}

async fn next_device(r: &mut Running) -> (TunSettings, MemoryPeer) {
    tokio::time::timeout(WAIT, r.devices.recv())
        .await
        .expect("a device within 5 s")
        .expect("the client is running")
}

async fn recv(rx: &mut mpsc::Receiver<Bytes>) -> Option<Bytes> {
    tokio::time::timeout(WAIT, rx.recv()).await.ok().flatten()
}

/// Calls until (and with) the first that `done` accepts.
async fn calls_until(
    calls: &mut mpsc::UnboundedReceiver<HostCall>,
    done: impl Fn(&HostCall) -> bool,
) -> Vec<HostCall> {
    let mut seen = vec![];
    loop {
        let c = next_call(calls).await;
        let last = done(&c);
        seen.push(c);
        if last {
            return seen;
        }
    }
}

/// Packets both ways between alice's device and the server's.
async fn packets_cross(s: &mut Setup, device: &mut MemoryPeer, text: &str) {
    let up = build::ipv4(ALICE, CORP, text.as_bytes());
    device.inject.send(Bytes::from(up.clone())).await.unwrap();
    assert_eq!(
        recv(&mut s.server_inside.written).await.as_deref(),
        Some(&up[..]),
        "{text}: client to server"
    );
    let down = build::ipv4(CORP, ALICE, text.as_bytes());
    s.inject(&down).await;
    assert_eq!(
        recv(&mut device.written).await.as_deref(),
        Some(&down[..]),
        "{text}: server to client"
    );
}

/// The assignment reaches the host network (routes and DNS on the device
/// the loop made with the assigned address), packets cross both ways, and
/// `down` closes the device and undoes the host's changes.
#[tokio::test]
async fn the_client_loop_relays_and_hands_the_assignment_to_the_host() {
    let (mut s, mut alice) = start_alice().await;
    let (settings, mut device) = next_device(&mut alice).await;
    assert_eq!(settings.ipv4.0, ALICE);
    assert!(
        matches!(next_call(&mut alice.host.calls).await, HostCall::Connected(IpAddr::V4(a)) if a.is_loopback())
    );
    match next_call(&mut alice.host.calls).await {
        HostCall::Routes {
            dev,
            address,
            routes,
            change: Change::New,
        } => {
            assert_eq!(dev, settings.name);
            assert_eq!(address.ip(), IpAddr::V4(ALICE));
            assert_eq!(routes, vec!["198.19.0.0/24".parse().unwrap()]);
        }
        other => panic!("expected the routes of a new device, got {other:?}"),
    }
    assert_eq!(
        next_call(&mut alice.host.calls).await,
        HostCall::Dns {
            dev: settings.name.clone(),
            dns: vec!["198.19.0.53".parse().unwrap()],
            change: Change::New,
        }
    );
    packets_cross(&mut s, &mut device, "first").await;
    let status = serde_json::to_value(alice.status.report()).unwrap();
    assert_eq!(status["state"], "up", "{status}");
    assert_eq!(status["address"], "198.18.77.10", "{status}");
    assert_eq!(status["dns_method"], "hook", "{status}");

    alice.stop.cancel();
    let end = tokio::time::timeout(WAIT, alice.end)
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_ok(), "{end:?}");
    let rest = calls_until(&mut alice.host.calls, |c| *c == HostCall::Undo).await;
    assert_eq!(rest.last(), Some(&HostCall::Undo), "{rest:?}");
    assert!(
        device.written.recv().await.is_none(),
        "the device is closed with the loop"
    );
}

/// A network change that moved the path to the server makes the client say
/// Bye and reconnect at once; the device stays (no second one), the host
/// hears of the new connection, and packets flow again.
#[tokio::test]
async fn a_moved_network_reconnects_at_once_on_the_same_device() {
    let (mut s, mut alice) = start_alice().await;
    let (_, mut device) = next_device(&mut alice).await;
    calls_until(&mut alice.host.calls, |c| matches!(c, HostCall::Dns { .. })).await;
    packets_cross(&mut s, &mut device, "before").await;

    let moved = std::time::Instant::now();
    alice.host.moves.send("the test moved it".into()).unwrap();
    calls_until(&mut alice.host.calls, |c| *c == HostCall::Disconnected).await;
    let calls = calls_until(&mut alice.host.calls, |c| {
        matches!(c, HostCall::Connected(_))
    })
    .await;
    assert_eq!(
        calls.len(),
        1,
        "reconnected with nothing in between: {calls:?}"
    );
    // Without a move the first retry waits half of BACKOFF_MIN at least.
    assert!(
        moved.elapsed() < reconnect::BACKOFF_MIN / 2,
        "reconnected at once, not after a backoff: {:?}",
        moved.elapsed()
    );
    // The session ended and a new one began before the backoff's first step.
    packets_cross(&mut s, &mut device, "after").await;
    assert!(
        alice.devices.try_recv().is_err(),
        "the same grant keeps the device"
    );
    assert_eq!(
        serde_json::to_value(alice.status.report()).unwrap()["state"],
        "up"
    );
    alice.stop.cancel();
    assert!(tokio::time::timeout(WAIT, alice.end)
        .await
        .unwrap()
        .unwrap()
        .is_ok());
}

/// A certificate revoked while the session runs ends the loop with exit
/// code 3, and still closes the device and undoes the host's changes.
#[tokio::test]
async fn a_revoked_session_ends_the_loop_with_exit_3_and_undoes_the_host() {
    let (s, mut alice) = start_alice().await;
    let (_, mut device) = next_device(&mut alice).await;
    calls_until(&mut alice.host.calls, |c| matches!(c, HostCall::Dns { .. })).await;
    pki::revoke(&s.pki, "alice").unwrap();
    assert_eq!(s.server.reload().unwrap().closed.len(), 1);
    let err = tokio::time::timeout(WAIT, alice.end)
        .await
        .unwrap()
        .unwrap()
        .expect_err("a revoked session is final");
    assert_eq!(err.exit_code(), 3, "{err}");
    let rest = calls_until(&mut alice.host.calls, |c| *c == HostCall::Undo).await;
    assert_eq!(rest.last(), Some(&HostCall::Undo), "{rest:?}");
    assert!(
        device.written.recv().await.is_none(),
        "the device is closed"
    );
}
