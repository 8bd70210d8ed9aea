//! The client's hooks around one tunnel: an update hook (the up hook run
//! again after the server pushed new routes) that is still running when the
//! tunnel goes down is ended, with what it started, before the down hook
//! runs, so the two never run at once or out of order.

use std::time::Duration;

use twoway_client::connect::connect;
use twoway_client::status::Status;
use twoway_client::tunnel::Tunnel;
use twoway_common::message::Update;
use twoway_tests::eventually;
use twoway_tests::loopback::{client_config, issue, memory_devices, start, tls, RecordingHost};

#[tokio::test]
async fn an_update_hook_still_running_is_ended_before_the_down_hook() {
    let s = start("").await;
    issue(&s.pki, "alice");
    let dir = tempfile::tempdir().unwrap();
    let (log, pid) = (dir.path().join("log"), dir.path().join("pid"));
    let mut c = client_config(&s, "alice");
    c.hooks.up = Some(format!(
        "if [ \"$TWOWAY_HOOK\" = update ]; then echo $$ > {pid}; sleep 30; fi; echo \"$TWOWAY_HOOK\" >> {log}",
        pid = pid.display(),
        log = log.display()
    ));
    c.hooks.down = Some(format!("echo down >> {}", log.display()));
    let connection = connect(&c, tls(&c)).await.unwrap();
    let (mut host, _record) = RecordingHost::new();
    let (mut open, _devices) = memory_devices();
    let (queue, _outbound) = twoway_common::queue::channel(64, 1 << 20);
    let mut tunnel = Tunnel::open(&c, &connection.assignment, queue, &mut host, &mut open)
        .await
        .unwrap();
    let update = Update {
        routes: vec!["10.99.0.0/24".parse().unwrap()],
        dns: vec![],
        search: vec![],
    };
    tunnel
        .update(&c, &update, &mut host, &Status::new("test"))
        .await;
    let hook: i32 = eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            std::fs::read_to_string(&pid)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| "the update hook has not started".to_string())
        },
    )
    .await;

    tunnel.close().await;
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "up\ndown\n");
    // Its shell is gone (or a zombie about to be reaped), not sleeping on.
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let stat = std::fs::read_to_string(format!("/proc/{hook}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.split(' ').nth(2) == Some("Z") {
                Ok(())
            } else {
                Err(format!("the update hook still runs: {stat}"))
            }
        },
    )
    .await;
}
