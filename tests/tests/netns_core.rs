//! End-to-end tests of the real `twoway-server` and `twoway` binaries in
//! network namespaces (topology: twoway_tests::lab; fixture:
//! twoway_tests::vpn), driven only through the command-line and configuration
//! contract of DESIGN.md.
//!
//! Every test builds its own lab and PKI, so they run in parallel. A failing
//! step panics with the name of the step, the output of the command and the
//! tail of the server log; the lab is removed either way. Run with
//! `-- --nocapture` to see each step pass.

use std::time::Duration;

use twoway_tests::vpn::{
    alice_net, bare_ip, counters_moved, list_dir, net, path_str, toml_path, Vpn, ALICE_ADDR,
    LAN_HOST, SERVER_ADDR, TUNNEL_POOL,
};
use twoway_tests::{wait_for, wait_until};

/// Two laptops through one server: addresses from the policy and the pool,
/// routes to the corporate network, status on both sides, `down` cleaning up,
/// leases surviving a server restart, and a client reconnecting by itself.
#[test]
fn tunnel_lifecycle_two_clients_and_restart() {
    let Some(mut vpn) = Vpn::started_default("tunnel_lifecycle_two_clients_and_restart") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());

    // alice: a fixed address from the policy.
    let alice = vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice (cli1) pings the lan host through the tunnel",
    );
    vpn.expect_client_status_up(&cli1, "alice", alice);

    // bob: an address from the pool.
    let bob = vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob (cli2) pings the lan host through the tunnel",
    );
    vpn.expect_client_status_up(&cli2, "bob", bob);

    // The server lists both sessions.
    let step = "`twoway-server status --json` lists alice and bob";
    let (sessions, out) = vpn.server_status(step);
    for (who, addr, from) in [("alice", alice, "198.18.1.1"), ("bob", bob, "198.18.2.1")] {
        let Some(s) = Vpn::session(&sessions, who) else {
            vpn.fail(
                step,
                format_args!("no session with identity {who:?}\n{out}"),
            );
        };
        vpn.check(
            s["address"].as_str().map(bare_ip) == Some(addr.to_string().as_str()),
            step,
            format_args!(
                "{who}'s address is {}, expected {addr}\n{out}",
                s["address"]
            ),
        );
        vpn.check(
            counters_moved(s),
            step,
            format_args!("{who}'s rx_bytes/tx_bytes are not both > 0 after pings\n{out}"),
        );
        vpn.check(
            s["remote"].as_str().is_some_and(|r| r.contains(from)),
            step,
            format_args!(
                "{who}'s remote is {}, expected {from}:PORT\n{out}",
                s["remote"]
            ),
        );
    }

    // client_to_client = false: alice cannot reach bob's tunnel address.
    vpn.check(
        !vpn.lab.ping_once(&cli1, &bob.to_string()),
        "alice cannot ping bob's tunnel address (client_to_client = false)",
        format_args!(
            "{bob} answered a ping from cli1\n{}",
            vpn.lab.describe(&cli1)
        ),
    );

    // bob goes down: no address, route or process remains; the session ends.
    vpn.take_down(&cli2, "bob");
    let step = "the server drops bob's session after `twoway down`";
    let gone = wait_until(Duration::from_secs(10), || {
        Vpn::session(&vpn.server_status(step).0, "bob").is_none()
    });
    let (_, out) = vpn.server_status(step);
    vpn.check(
        gone,
        step,
        format_args!("bob is still listed after 10 s\n{out}"),
    );
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice still pings the lan host after bob left",
    );

    // Restart the server: bob gets the same pool address (leases persist).
    vpn.stop_server();
    vpn.start_server();
    let bob_again = vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.check(
        bob_again == bob,
        "bob gets the same pool address after a server restart (leases persist)",
        format_args!(
            "first {bob}, now {bob_again}\nstate dir: {:?}",
            list_dir(&vpn.tmp("state"))
        ),
    );
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "bob pings the lan host after the server restart",
    );

    // alice was never taken down: her client reconnects by itself.
    let step = "alice's client reconnects by itself after the server restart";
    let reconnected = wait_until(Duration::from_secs(60), || {
        let (v, _) = vpn.client_status(&cli1, "alice");
        v["state"] == "up" && vpn.lab.ping_once(&cli1, LAN_HOST)
    });
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        reconnected,
        step,
        format_args!(
            "not up and pinging within 60 s; state {}\n{out}\n{}",
            v["state"],
            vpn.lab.describe(&cli1)
        ),
    );

    vpn.take_both_down_and_stop();
}

/// `openssl s_client` as a misbehaving client: TLS 1.2 gets no handshake;
/// TLS 1.3 without a client certificate, or with one from a foreign CA, gets
/// no application data and is closed. The server then still serves alice.
#[test]
fn refuses_old_tls_and_unauthenticated_clients() {
    let Some(mut vpn) = Vpn::started_default("refuses_old_tls_and_unauthenticated_clients") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let real_ca = vpn.pki.join("ca.pem");
    let ca = path_str(&real_ca);

    let out = vpn.openssl(&["-tls1_2", "-CAfile", ca]);
    vpn.check(
        !out.timed_out() && !out.success() && !out.stdout.contains("New, TLSv1.2"),
        "a TLS 1.2 handshake (openssl s_client -tls1_2) fails",
        &out,
    );

    // -quiet prints only application data on stdout and waits for the
    // server to close the connection.
    let out = vpn.openssl(&["-quiet", "-tls1_3", "-CAfile", ca]);
    vpn.expect_closed_without_data(&out, "TLS 1.3 without a client certificate");

    let mallory = vpn.foreign_client("mallory");
    let (cert, key) = (
        toml_path(&mallory, "tls.cert"),
        toml_path(&mallory, "tls.key"),
    );
    let out = vpn.openssl(&[
        "-quiet",
        "-tls1_3",
        "-CAfile",
        ca,
        "-cert",
        path_str(&cert),
        "-key",
        path_str(&key),
    ]);
    vpn.expect_closed_without_data(&out, "TLS 1.3 with a client certificate from a foreign CA");

    // The server carries on and serves a real client.
    if let Some(status) = vpn.server_exited() {
        vpn.fail(
            "the server survives refused clients",
            format_args!("it exited: {status}"),
        );
    }
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice pings the lan host after the refused clients",
    );
    vpn.expect_only_session("alice");
    vpn.take_down_and_stop(&cli1, "alice");
}

/// `twoway up` with a client certificate from another CA (same server name)
/// exits 3 and leaves nothing behind; alice's session is undisturbed.
#[test]
fn refuses_foreign_client_certificate() {
    let Some(mut vpn) = Vpn::started_default("refuses_foreign_client_certificate") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice (cli1) pings the lan host through the tunnel",
    );
    let mut before = vpn.lab.pids(&cli1);
    before.sort_unstable();

    let mallory = vpn.foreign_client("mallory");
    let out = vpn.up(&cli1, &mallory);
    vpn.check(
        out.code() == Some(3),
        "mallory (certificate from a foreign CA) is refused with exit code 3",
        format_args!("expected exit code 3 (authentication refused)\n{out}"),
    );
    let mut after = vpn.lab.pids(&cli1);
    after.sort_unstable();
    vpn.check(
        after == before,
        "a refused client leaves no process behind",
        format_args!("processes in cli1 before: {before:?}, after: {after:?}"),
    );

    if let Some(status) = vpn.server_exited() {
        vpn.fail(
            "the server survives a refused client",
            format_args!("it exited: {status}"),
        );
    }
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice still pings the lan host after mallory was refused",
    );
    vpn.expect_client_status_up(&cli1, "alice", ALICE_ADDR.parse().unwrap());
    vpn.expect_only_session("alice");
    vpn.take_down_and_stop(&cli1, "alice");
}

/// `up` against a server that is not there exits 4, within a bounded time:
/// an address nobody answers for, and a host that refuses the port.
#[test]
fn unreachable_server_exits_4() {
    let Some(vpn) = Vpn::prepared_default("unreachable_server_exits_4") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let config = vpn.client_config("alice");
    for (server, what) in [
        ("198.18.1.3:4433", "no host at that address"),
        (SERVER_ADDR, "the server host is up but nothing listens"),
    ] {
        vpn.configure_client(&config, "alice", server, None);
        let step = format!("`twoway up --detach` against {server} ({what}) exits 4 within 35 s");
        let out = vpn.up(&cli1, &config);
        vpn.check(
            out.code() == Some(4),
            &step,
            format_args!("expected exit code 4\n{out}"),
        );
        vpn.check(
            out.elapsed <= Duration::from_secs(35),
            &step,
            format_args!("took too long\n{out}"),
        );
        let left = wait_for(Duration::from_secs(5), || {
            let p = vpn.lab.pids(&cli1);
            p.is_empty().then_some(())
        });
        vpn.check(
            left.is_some(),
            "a client that could not connect leaves no process behind",
            format_args!("processes in cli1: {:?}", vpn.lab.pids(&cli1)),
        );
    }
}
