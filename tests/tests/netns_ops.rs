//! Operations tests of the real `twoway-server` and `twoway` binaries
//! (issue 3): live reload (by `reload` and by SIGHUP), revocation that cuts a
//! live session, a broken policy that changes nothing, kick, duplicate
//! identities, `check`, the documented exit codes 2, 3 and 5, the metrics
//! endpoint and systemd's READY=1.
//!
//! Each test that needs the network has its own lab; a failing step names
//! itself and shows the server's and the clients' logs. Run with
//! `-- --nocapture` to see each step pass.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use twoway_tests::proc::AS_NOBODY;
use twoway_tests::vpn::{
    alice_net, bare_ip, base_policy, net, path_str, Vpn, ALICE_ADDR, LAN_HOST, SERVER_ADDR_CLI2,
    TUNNEL_NET, TUNNEL_POOL,
};
use twoway_tests::vpn::{copy_into, http_get};
use twoway_tests::{bins, proc, toml_files, wait_for, wait_until};

/// What must not change for an unaffected session: its TCP connection
/// (remote address and port), its start time and its address.
fn fingerprint(vpn: &Vpn, who: &str) -> Option<(Value, Value, Value)> {
    vpn.session_of(who).map(|s| {
        (
            s["remote"].clone(),
            s["since"].clone(),
            s["address"].clone(),
        )
    })
}

/// `reload` with a policy change that concerns neither alice nor bob: both
/// keep their TLS connection (same remote port, same start time, same
/// address), and a ping running across the reload loses nothing.
#[test]
fn reload_keeps_unaffected_sessions() {
    let Some(mut vpn) = Vpn::started("reload_keeps_unaffected_sessions") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    vpn.alice_and_bob_up();
    let before = [fingerprint(&vpn, "alice"), fingerprint(&vpn, "bob")];

    let pinger = vpn.lab.spawn(
        &cli1,
        "ping-across-reload",
        &["ping", "-n", "-c", "30", "-i", "0.1", "-W", "2", LAN_HOST],
    );
    std::thread::sleep(Duration::from_secs(1));
    vpn.write_policy(&base_policy(
        "\n[[group]]\nname = \"ops\"\nroutes = [\"198.19.1.0/24\"]\n\n\
         [[client]]\nidentity = \"carol\"\naddress = \"198.18.77.20\"\ngroups = [\"ops\"]\n",
    ));
    let out = vpn.reload("`twoway-server reload` with a new client and group in the policy");
    vpn.check(
        out.stdout.contains("0 session(s) closed"),
        "the reload closes no session",
        &out,
    );
    let status = vpn.wait_exit(&pinger, Duration::from_secs(15));
    let log = vpn.lab.log(&pinger);
    let received = ping_received(&log);
    vpn.check(
        status.is_some() && received.is_some_and(|n| n >= 29),
        "a ping running across the reload (30 packets) loses at most one",
        format_args!("ping exit {status:?}, received {received:?}\n{log}"),
    );
    let after = [fingerprint(&vpn, "alice"), fingerprint(&vpn, "bob")];
    vpn.check(
        after == before && before.iter().all(Option::is_some),
        "alice and bob keep the same connection, start time and address",
        format_args!("before {before:?}\nafter  {after:?}"),
    );
    vpn.expect_ping(&cli2, LAN_HOST, "bob pings the lan host after the reload");
    vpn.take_both_down_and_stop();
}

/// `pki revoke alice` + `reload`: alice's live session is cut within 5 s (her
/// foreground `up` exits with code 3), bob's is untouched, and alice's next
/// `up` is refused with exit code 3.
#[test]
fn revoked_client_is_cut_within_5s_and_refused() {
    let Some(mut vpn) = Vpn::started("revoked_client_is_cut_within_5s_and_refused") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    let alice = vpn.spawn_client(&cli1, "alice");
    vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings the lan host");
    let bob_before = fingerprint(&vpn, "bob");

    vpn.pki_revoke("alice");
    let start = Instant::now();
    vpn.reload("`twoway-server reload` after the revocation");
    let exit = vpn.wait_exit(&alice, Duration::from_secs(5));
    let gone = wait_until(
        Duration::from_secs(5).saturating_sub(start.elapsed()),
        || vpn.session_of("alice").is_none(),
    );
    let took = start.elapsed();
    vpn.check(
        gone && exit.is_some() && took <= Duration::from_secs(5),
        "alice's session is gone and her client has exited within 5 s of the reload",
        format_args!(
            "after {took:.1?}: session gone {gone}, client exit {exit:?}\n{}",
            vpn.server_status("server status").1
        ),
    );
    vpn.check(
        exit.and_then(|s| s.code()) == Some(3),
        "alice's `up` exits with code 3 (authentication refused: revoked)",
        format_args!("exit {exit:?}"),
    );
    vpn.check(
        fingerprint(&vpn, "bob") == bob_before,
        "bob's session is untouched by the revocation",
        format_args!(
            "before {bob_before:?}, after {:?}",
            fingerprint(&vpn, "bob")
        ),
    );
    vpn.expect_ping(&cli2, LAN_HOST, "bob still pings the lan host");

    let out = vpn.up(&cli1, &vpn.client_config("alice"));
    vpn.check(
        out.code() == Some(3),
        "alice's next `up --detach` is refused with exit code 3",
        &out,
    );
    let clean = wait_until(Duration::from_secs(5), || {
        vpn.lab.pids(&cli1).is_empty() && vpn.lab.addr_in(&cli1, net(TUNNEL_NET)).is_none()
    });
    vpn.check(
        clean,
        "the refused client leaves no process and no tunnel address behind",
        vpn.lab.describe(&cli1),
    );
    vpn.take_down(&cli2, "bob");
    vpn.stop_server();
}

/// A policy that does not parse is refused as a whole, by `reload` (non-zero
/// exit naming the file) and by SIGHUP: sessions are untouched, the old
/// policy stays in force (alice gets her old static address back after a
/// reconnect), and `check` names the problem.
#[test]
fn broken_policy_reload_changes_nothing() {
    let Some(mut vpn) = Vpn::started("broken_policy_reload_changes_nothing") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    let before = [fingerprint(&vpn, "alice"), fingerprint(&vpn, "bob")];

    // Moves alice (would cut her session) and has a bad CIDR for bob.
    let broken = base_policy("\n[[client]]\nidentity = \"bob\"\nroutes = [\"198.19.0.0/33\"]\n")
        .replace(ALICE_ADDR, "198.18.77.20");
    vpn.write_policy(&broken);
    let out = vpn.server_ctl(&["reload"]);
    vpn.check(
        !out.success() && !out.timed_out(),
        "`reload` with a broken policy exits non-zero",
        &out,
    );
    vpn.check(
        out.stderr.contains("policy.toml") && out.stderr.contains("198.19.0.0/33"),
        "`reload` says which file and value are wrong",
        &out,
    );
    let after = [fingerprint(&vpn, "alice"), fingerprint(&vpn, "bob")];
    vpn.check(
        after == before,
        "the refused reload leaves both sessions untouched",
        format_args!("before {before:?}\nafter  {after:?}"),
    );

    let server_log = |vpn: &Vpn| vpn.lab.log(vpn.server.as_ref().expect("server"));
    let refusals = server_log(&vpn).matches("reload refused").count();
    vpn.signal_server(Signal::SIGHUP);
    let logged = wait_until(Duration::from_secs(5), || {
        server_log(&vpn).matches("reload refused").count() > refusals
    });
    vpn.check(
        logged,
        "SIGHUP with the broken policy: the server logs that the reload was refused",
        "no new `reload refused` in the log within 5 s",
    );
    let after = [fingerprint(&vpn, "alice"), fingerprint(&vpn, "bob")];
    vpn.check(
        after == before && vpn.server_exited().is_none(),
        "the refused SIGHUP leaves the server and both sessions untouched",
        format_args!("before {before:?}\nafter  {after:?}"),
    );

    let out = vpn.server_ctl(&["check"]);
    vpn.check(
        out.code() == Some(2) && out.stderr.contains("policy.toml"),
        "`check` exits 2 naming policy.toml",
        &out,
    );

    // The old policy is in force: alice reconnects to her old static address.
    vpn.take_down(&cli1, "alice");
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "alice pings the lan host at her old address",
    );
    vpn.take_both_down_and_stop();
}

/// `kick alice`: her session closes, her foreground `up` exits 0 and does not
/// come back; kicking an identity that is not connected fails.
#[test]
fn kick_closes_a_session_for_good() {
    let Some(mut vpn) = Vpn::started("kick_closes_a_session_for_good") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let alice = vpn.spawn_client(&cli1, "alice");
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings the lan host");

    let out = vpn.server_ctl(&["kick", "alice"]);
    vpn.check(
        out.success() && out.stdout.contains("kicked 1"),
        "`twoway-server kick alice` kicks one session",
        &out,
    );
    let exit = vpn.wait_exit(&alice, Duration::from_secs(5));
    vpn.check(
        exit.and_then(|s| s.code()) == Some(0),
        "alice's `up` exits with code 0 within 5 s of the kick",
        format_args!("exit {exit:?}"),
    );
    vpn.wait_session_gone("alice", Duration::from_secs(5), "alice's session is gone");
    std::thread::sleep(Duration::from_secs(3));
    vpn.check(
        vpn.session_of("alice").is_none() && vpn.lab.pids(&cli1).is_empty(),
        "3 s later alice has not reconnected and no client runs in cli1",
        format_args!(
            "{}\npids {:?}",
            vpn.server_status("status").1,
            vpn.lab.pids(&cli1)
        ),
    );
    vpn.check(
        vpn.lab.addr_in(&cli1, net(TUNNEL_NET)).is_none(),
        "the kicked client removed its tunnel address",
        vpn.lab.describe(&cli1),
    );
    let out = vpn.server_ctl(&["kick", "nobody"]);
    vpn.check(
        !out.success() && out.stderr.contains("nobody"),
        "`kick nobody` (not connected) fails and says so",
        &out,
    );
    vpn.stop_server();
}

/// SIGHUP reloads like `reload`: bob, given a static address, is moved onto
/// it (his client reconnects by itself), then a route of his own reaches his
/// client (pushed to the live session), while alice's connection is
/// untouched; once unlisted identities are not admitted, bob is cut and his
/// client gives up.
#[test]
fn sighup_reload_moves_changed_sessions_only() {
    let Some(mut vpn) = Vpn::started("sighup_reload_moves_changed_sessions_only") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    let alice_before = fingerprint(&vpn, "alice");

    let bob_static = "198.18.77.50";
    let steps = [
        ("a static address", format!("address = \"{bob_static}\"\n")),
        (
            "a route of his own",
            format!("address = \"{bob_static}\"\nroutes = [\"198.19.1.0/24\"]\n"),
        ),
    ];
    for (what, entry) in steps {
        vpn.write_policy(&base_policy(&format!(
            "\n[[client]]\nidentity = \"bob\"\n{entry}"
        )));
        vpn.signal_server(Signal::SIGHUP);
        let step = format!("after SIGHUP, bob's client has {what} ({bob_static}, routes)");
        let moved = wait_for(Duration::from_secs(15), || {
            let v = vpn.client_state(&cli2, "bob")?;
            let routes: Vec<&str> = v["routes"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let want_route = entry.contains("routes");
            (v["state"] == "up"
                && v["address"].as_str().map(bare_ip) == Some(bob_static)
                && routes.contains(&"198.19.1.0/24") == want_route)
                .then_some(v)
        });
        vpn.check(
            moved.is_some(),
            &step,
            format_args!("status: {:?}", vpn.client_state(&cli2, "bob")),
        );
        vpn.expect_ping(
            &cli2,
            LAN_HOST,
            &format!("bob pings the lan host with {what}"),
        );
        vpn.check(
            fingerprint(&vpn, "alice") == alice_before,
            &format!("alice's connection is untouched by the SIGHUP ({what} for bob)"),
            format_args!(
                "before {alice_before:?}, after {:?}",
                fingerprint(&vpn, "alice")
            ),
        );
    }

    // Unlisted identities no longer admitted: bob is cut, and his client,
    // refused on reconnecting, ends with exit code 3 instead of retrying.
    vpn.write_policy(&base_policy("").replace(
        "client_to_client = false",
        "client_to_client = false\nallow_unlisted = false",
    ));
    vpn.signal_server(Signal::SIGHUP);
    vpn.wait_session_gone(
        "bob",
        Duration::from_secs(5),
        "SIGHUP with bob no longer admitted: his session is closed within 5 s",
    );
    let gone = wait_until(Duration::from_secs(10), || vpn.lab.pids(&cli2).is_empty());
    vpn.check(
        gone && vpn.lab.addr_in(&cli2, net(TUNNEL_NET)).is_none(),
        "bob's client gives up (refused, not retrying) and removes its tunnel",
        format_args!(
            "pids {:?}\n{}",
            vpn.lab.pids(&cli2),
            vpn.lab.describe(&cli2)
        ),
    );
    let log = std::fs::read_to_string(vpn.tmp("run/bob.log")).unwrap_or_default();
    vpn.check(
        log.contains("authentication refused"),
        "bob's client says the server refused it (exit code 3)",
        &log,
    );
    vpn.check(
        fingerprint(&vpn, "alice") == alice_before,
        "alice (listed) is untouched",
        format_args!(
            "before {alice_before:?}, after {:?}",
            fingerprint(&vpn, "alice")
        ),
    );
    vpn.take_down_and_stop(&cli1, "alice");
}

/// The same identity connects from cli2 while connected from cli1 (policy
/// default `duplicate = "replace"`): the cli1 client is replaced and exits 0
/// without reconnecting; the cli2 session stays, with no kick loop.
#[test]
fn duplicate_identity_replaces_without_a_loop() {
    let Some(mut vpn) = Vpn::started("duplicate_identity_replaces_without_a_loop") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    let first = vpn.spawn_client(&cli1, "alice");
    let second = vpn.pki.join("alice-cli2.toml");
    std::fs::copy(vpn.client_config("alice"), &second).expect("copy alice.toml");
    vpn.configure_client(&second, "alice-cli2", SERVER_ADDR_CLI2, None);

    vpn.bring_up(&cli2, "alice-cli2", alice_net());
    let exit = vpn.wait_exit(&first, Duration::from_secs(8));
    vpn.check(
        exit.and_then(|s| s.code()) == Some(0),
        "the replaced client in cli1 exits with code 0",
        format_args!("exit {exit:?}"),
    );
    let session = fingerprint(&vpn, "alice");
    vpn.check(
        session
            .as_ref()
            .and_then(|s| s.0.as_str())
            .is_some_and(|r| r.starts_with("198.18.2.1:")),
        "the server's alice session is the one from cli2",
        format_args!("{session:?}"),
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let (sessions, out) = vpn.server_status("server status");
        let alices = sessions.iter().filter(|s| s["identity"] == "alice").count();
        vpn.check(
            alices == 1 && fingerprint(&vpn, "alice") == session,
            "for 4 s the server holds exactly that one alice session (no kick loop)",
            &out,
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    vpn.check(
        vpn.lab.pids(&cli1).is_empty(),
        "no client process is left in cli1",
        format_args!("{:?}", vpn.lab.pids(&cli1)),
    );
    vpn.expect_ping(&cli2, LAN_HOST, "alice pings the lan host from cli2");
    vpn.take_down(&cli2, "alice-cli2");
    vpn.stop_server();
}

/// `twoway up` without CAP_NET_ADMIN (as user nobody, with readable copies of
/// its files) cannot create its TUN device: exit code 5, foreground and
/// --detach, and also when the server is not reachable (checked first). Also
/// with the usual layout, where nobody may neither read the key nor write
/// the log next to the socket: privilege is checked before either.
#[test]
fn up_without_privilege_exits_5() {
    let Some(mut vpn) = Vpn::started("up_without_privilege_exits_5") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let dir = twoway_tests::temp_dir("twoway-nobody-");
    let config = vpn.client_config("alice");
    let own = |p: &Path| {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    };
    own(dir.path());
    // The binary too: the build folder may not be reachable for nobody.
    let client = copy_into(Path::new(vpn.bins_client()), dir.path());
    own(&client);
    let copy = copy_into(&config, dir.path());
    toml_files::edit_toml(&copy, |t| {
        for key in ["tls.ca", "tls.cert", "tls.key"] {
            let file = twoway_tests::vpn::toml_path(&config, key);
            let to = copy_into(&file, dir.path());
            own(&to);
            toml_files::set(t, key, path_str(&to));
        }
        toml_files::set(
            t,
            "control.socket",
            path_str(&dir.path().join("alice.sock")),
        );
    });
    own(&copy);
    // With the server there, and with nothing listening at the address.
    // The third field: key and socket (and so the detached log) root's only.
    let cases = [
        (false, "198.18.1.2:4433", false),
        (true, "198.18.1.2:4433", false),
        (false, "198.18.1.3:4433", false),
        (false, "198.18.1.2:4433", true),
        (true, "198.18.1.2:4433", true),
    ];
    let own_socket = dir.path().join("alice.sock");
    let own_key = dir.path().join(
        twoway_tests::vpn::toml_path(&config, "tls.key")
            .file_name()
            .expect("key file name"),
    );
    for (detach, server, roots_files) in cases {
        toml_files::edit_toml(&copy, |t| {
            toml_files::set(t, "server", server);
            let (socket, key) = if roots_files {
                (
                    vpn.tmp("run/alice-root.sock"),
                    twoway_tests::vpn::toml_path(&config, "tls.key"),
                )
            } else {
                (own_socket.clone(), own_key.clone())
            };
            toml_files::set(t, "control.socket", path_str(&socket));
            toml_files::set(t, "tls.key", path_str(&key));
        });
        let up = [path_str(&client), "up", "--config", path_str(&copy)];
        let mut args = [&AS_NOBODY[..], &up].concat();
        if detach {
            args.push("--detach");
        }
        let out = vpn.lab.exec_env(
            &cli1,
            &args,
            &[("RUST_LOG", "info")],
            Duration::from_secs(30),
        );
        vpn.check(
            out.code() == Some(5),
            &format!(
                "`twoway up{}` as nobody, server {server}{}, exits with code 5 (missing privilege)",
                if detach { " --detach" } else { "" },
                if roots_files {
                    ", key and log root's only"
                } else {
                    ""
                }
            ),
            &out,
        );
    }
    let clean = wait_until(Duration::from_secs(5), || vpn.lab.pids(&cli1).is_empty());
    vpn.check(
        clean,
        "no client process is left in cli1",
        format_args!("{:?}", vpn.lab.pids(&cli1)),
    );
    vpn.stop_server();
}

/// `user = "nobody"` in server.toml (every file it reads later owned by
/// nobody, as OPERATIONS.md asks): the server drops root once set up and
/// still serves a client, a pool lease (state folder), `reload`, `kick` and
/// a graceful stop.
#[test]
fn server_drops_privilege_and_keeps_working() {
    let Some(mut vpn) = Vpn::prepared("server_drops_privilege_and_keeps_working") else {
        return;
    };
    vpn.edit_server_config(|t| toml_files::set(t, "user", "nobody"));
    let out = proc::run(
        &["chown", "-R", "65534:65534", path_str(&vpn.tmp(""))],
        Duration::from_secs(10),
    );
    vpn.check(out.success(), "give the test's files to nobody", &out);
    vpn.start_server();
    let pid = vpn.server.as_ref().expect("server").pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    vpn.check(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "the running server's real, effective and saved uid are nobody's",
        uid,
    );
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));
    vpn.expect_ping(&cli2, LAN_HOST, "bob (pool address) pings the lan host");
    vpn.reload("`reload` after the privilege drop (re-reads policy, key and CRL)");
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings the lan host after the reload");
    let out = vpn.server_ctl(&["kick", "bob"]);
    vpn.check(out.success(), "`kick bob` after the privilege drop", &out);
    vpn.take_down_and_stop(&cli1, "alice");
}

/// `twoway up` with a broken config exits 2 naming the file and the key,
/// and with a missing config exits 2 too. Needs no network and no root.
#[test]
fn client_config_errors_exit_2() {
    let bins = bins();
    let dir = twoway_tests::temp_dir("twoway-client-config-");
    let config = dir.path().join("alice.toml");
    std::fs::write(
        &config,
        "server = \"vpn.test:4433\"\nserver_name = \"vpn.test\"\nsevrer_port = 1\n\
         [tls]\nca = \"ca.pem\"\ncert = \"alice.pem\"\nkey = \"alice.key\"\n",
    )
    .expect("write config");
    let missing = dir.path().join("missing.toml");
    for (path, what, names) in [
        (
            &config,
            "an unknown key",
            &["alice.toml", "sevrer_port"][..],
        ),
        (&missing, "a missing file", &["missing.toml"][..]),
    ] {
        for detach in [false, true] {
            let mut args = vec![bins.client_str(), "up", "--config", path_str(path)];
            if detach {
                args.push("--detach");
            }
            let out = proc::run(&args, Duration::from_secs(30));
            assert_eq!(out.code(), Some(2), "`up` with {what} must exit 2:\n{out}");
            for name in names {
                assert!(
                    out.stderr.contains(name),
                    "`up` with {what} must name {name}:\n{out}"
                );
            }
        }
    }
}

/// `[metrics] listen` serves sessions, refusals and drops; NOTIFY_SOCKET gets
/// READY=1 once the server listens, STATUS= with the session count, and
/// RELOADING=1 then READY=1 around a SIGHUP.
#[test]
fn metrics_and_systemd_notifications() {
    let Some(mut vpn) = Vpn::prepared("metrics_and_systemd_notifications") else {
        return;
    };
    let metrics = "127.0.0.1:9477";
    vpn.edit_server_config(|t| toml_files::set(t, "metrics.listen", metrics));
    let socket_path = vpn.tmp("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut expect_notify = |vpn: &Vpn, want: &str, within: Duration, step: &str| {
        let found = wait_until(within, || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = notify.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if let Some(i) = seen.iter().position(|m| m.lines().any(|l| l == want)) {
                seen.drain(..=i);
                return true;
            }
            false
        });
        vpn.check(
            found,
            step,
            format_args!("no {want:?} within {within:?}; messages: {seen:?}"),
        );
    };
    vpn.start_server_env(&[("NOTIFY_SOCKET", path_str(&socket_path))]);
    expect_notify(
        &vpn,
        "READY=1",
        Duration::from_secs(10),
        "the server sends READY=1 to NOTIFY_SOCKET",
    );
    let cli1 = vpn.lab.cli1.clone();
    vpn.alice_up();
    expect_notify(
        &vpn,
        "STATUS=1 session(s)",
        Duration::from_secs(8),
        "the server reports STATUS=1 session(s)",
    );
    let mallory = vpn.foreign_client("mallory");
    let out = vpn.up(&cli1, &mallory);
    vpn.check(
        out.code() == Some(3),
        "mallory (foreign CA) is refused",
        &out,
    );

    let step = "GET /metrics from inside srv";
    let body = match http_get(&vpn.lab.srv, metrics.parse().expect("addr"), "/metrics") {
        Ok(b) => b,
        Err(e) => vpn.fail(step, e),
    };
    vpn.check(body.starts_with("HTTP/1.1 200"), step, &body);
    vpn.check(
        body.lines().any(|l| l == "twoway_sessions 1"),
        "metrics: twoway_sessions 1",
        &body,
    );
    let refused: u64 = body
        .lines()
        .filter(|l| l.starts_with("twoway_connections_refused"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    vpn.check(
        refused >= 1,
        "metrics: twoway_connections_refused counts mallory",
        &body,
    );
    vpn.check(
        body.contains("twoway_packets_dropped") && body.contains("twoway_rx_bytes"),
        "metrics: dropped packets and bytes are exported",
        &body,
    );

    vpn.signal_server(Signal::SIGHUP);
    expect_notify(
        &vpn,
        "RELOADING=1",
        Duration::from_secs(5),
        "SIGHUP: the server sends RELOADING=1",
    );
    expect_notify(
        &vpn,
        "READY=1",
        Duration::from_secs(5),
        "SIGHUP: then READY=1 again",
    );
    vpn.take_down_and_stop(&cli1, "alice");
}

/// `twoway-server check` on the files `pki init` writes: exit 0; then each
/// kind of mistake exits 2 naming the file and the key; several at once are
/// all reported. Needs no network and no root.
#[test]
fn check_names_file_and_key() {
    let bins = bins();
    let dir = twoway_tests::temp_dir("twoway-check-");
    let pki = dir.path().join("pki");
    let server = |args: &[&str]| {
        let mut full = vec![bins.server_str()];
        full.extend_from_slice(args);
        proc::run(&full, Duration::from_secs(30))
    };
    let out = server(&["pki", "init", "--dir", path_str(&pki), "--name", "vpn.test"]);
    assert!(out.success(), "pki init:\n{out}");
    let config = pki.join("server.toml");
    let policy = pki.join("policy.toml");
    let (config_text, policy_text) = (read(&config), read(&policy));
    let check = || server(&["check", "--config", path_str(&config)]);

    let out = check();
    assert_eq!(
        out.code(),
        Some(0),
        "check of the files pki init wrote:\n{out}"
    );
    make_expired_server_cert(&pki);

    let cases: &[Case] = &[
        (
            "an unknown key",
            |t| toml_files::set(t, "tunnel.netwrok", "10.77.0.0/24"),
            None,
            &["server.toml", "netwrok"],
        ),
        (
            "a bad CIDR",
            |t| toml_files::set(t, "tunnel.network", "10.77.0.0/33"),
            None,
            &["server.toml", "network", "10.77.0.0/33"],
        ),
        (
            "a pool outside the network",
            |t| toml_files::set(t, "tunnel.pool", "10.99.0.0/25"),
            None,
            &["server.toml", "tunnel.pool"],
        ),
        (
            "a missing key file",
            |t| toml_files::set(t, "tls.key", "missing.key"),
            None,
            &["missing.key", "tls.key"],
        ),
        (
            "an expired server certificate",
            |t| {
                toml_files::set(t, "tls.cert", "expired.pem");
                toml_files::set(t, "tls.key", "expired.key");
            },
            None,
            &["expired.pem", "tls.cert"],
        ),
        (
            "a bad CIDR in the policy",
            |_| {},
            Some("[defaults]\nroutes = [\"10.99.0.0/33\"]\n"),
            &["policy.toml", "routes"],
        ),
        (
            "three problems in two files at once",
            |t| {
                toml_files::set(t, "tunnel.pool", "10.99.0.0/25");
                toml_files::set(t, "tls.key", "missing.key");
            },
            Some("[[client]]\nidentity = \"alice\"\naddress = \"192.0.2.1\"\n"),
            &[
                "tunnel.pool",
                "missing.key",
                "policy.toml",
                "client[0].address",
            ],
        ),
    ];
    for (what, edit, new_policy, names) in cases {
        std::fs::write(&config, &config_text).expect("restore server.toml");
        std::fs::write(&policy, new_policy.unwrap_or(&policy_text)).expect("write policy");
        toml_files::edit_toml(&config, edit);
        let out = check();
        assert_eq!(out.code(), Some(2), "check with {what} must exit 2:\n{out}");
        for name in *names {
            assert!(
                out.stderr.contains(name),
                "check with {what} must name {name:?}:\n{out}\n--- server.toml ---\n{}",
                read(&config)
            );
        }
    }
    std::fs::write(&config, &config_text).expect("restore server.toml");
    std::fs::write(&policy, &policy_text).expect("restore policy.toml");
    let out = check();
    assert_eq!(
        out.code(),
        Some(0),
        "check after restoring the files:\n{out}"
    );
}

/// One mistake for `check`: what it is, how server.toml is edited, the
/// policy written instead of the original, and what the output must name.
type Case = (
    &'static str,
    fn(&mut toml::Table),
    Option<&'static str>,
    &'static [&'static str],
);

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// expired.pem / expired.key in `pki`: a server certificate for vpn.test,
/// signed by the real CA, that expired in 2021.
fn make_expired_server_cert(pki: &Path) {
    use rcgen::{date_time_ymd, CertificateParams, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(&read(&pki.join("ca.key"))).expect("ca.key");
    let issuer = Issuer::from_ca_cert_pem(&read(&pki.join("ca.pem")), ca_key).expect("ca.pem");
    let mut params = CertificateParams::new(vec!["vpn.test".to_string()]).expect("params");
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(pki.join("expired.pem"), cert.pem()).expect("write expired.pem");
    let key_path = pki.join("expired.key");
    std::fs::write(&key_path, key.serialize_pem()).expect("write expired.key");
    // Private keys other users can read are refused: give it the mode pki uses.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 expired.key");
}

/// "30 packets transmitted, 29 received" -> 29.
fn ping_received(log: &str) -> Option<u32> {
    let line = log.lines().find(|l| l.contains("packets transmitted"))?;
    let (_, rest) = line.split_once(", ")?;
    rest.split_whitespace().next()?.parse().ok()
}
