//! End-to-end tests of the client's networking (issue 5) with the real
//! binaries in network namespaces: full tunnel without leaks (also after a
//! crash), LAN access, IPv6 inside the tunnel, DNS, and roaming when the
//! laptop's link goes away. Topology: twoway_tests::client_net.

use std::time::{Duration, Instant};

use toml::Value as Toml;
use twoway_tests::vpn::{
    alice_net, net, path_str, Vpn, ALICE_ADDR, CORP_NET, LAN_HOST, TUNNEL_NET,
};
use twoway_tests::vpn::{
    read, GATEWAY, INTERNET_HOST, LAN_HOST6, LAN_NEIGHBOUR, SERVER_PUBLIC, SERVER_PUBLIC_ADDR,
};
use twoway_tests::wait_until;

const TUN: &str = "tw-alice";

/// The policy: the corporate network for everyone, alice at her static
/// address with `alice_extra` (e.g. a full tunnel), bob with `bob_extra`.
fn policy(defaults_extra: &str, alice_extra: &str, bob_extra: &str) -> String {
    format!(
        "client_to_client = false\n\n[defaults]\nroutes = [\"{CORP_NET}\"{defaults_extra}]\n\n\
         [[client]]\nidentity = \"alice\"\naddress = \"{ALICE_ADDR}\"\n{alice_extra}\n\n\
         [[client]]\nidentity = \"bob\"\n{bob_extra}\n"
    )
}

/// alice in cli1 dials the server's public address through her gateway.
/// `None`: skipped (not root).
fn full_tunnel_lab(test: &str, allow_lan: bool) -> Option<(Vpn, String)> {
    let mut vpn = Vpn::prepared_default(test)?;
    vpn.add_gateway_topology();
    vpn.add_ipv6(true);
    vpn.write_policy(&policy(
        "",
        "routes = [\"0.0.0.0/0\"]\ndns = [\"198.19.0.53\"]\nsearch = [\"corp.test\"]",
        "",
    ));
    vpn.configure_client(
        &vpn.client_config("alice"),
        "alice",
        SERVER_PUBLIC_ADDR,
        None,
    );
    let resolv = vpn.tmp("resolv.conf");
    std::fs::write(&resolv, "nameserver 198.18.1.2\n").expect("write resolv.conf");
    vpn.set_client_keys(
        "alice",
        &[
            ("tunnel.allow_lan", Toml::Boolean(allow_lan)),
            ("dns.resolved", Toml::Boolean(false)),
            ("dns.manage_resolv_conf", Toml::Boolean(true)),
            ("dns.resolv_conf", Toml::String(path_str(&resolv).into())),
        ],
    );
    vpn.start_server();
    let cli1 = vpn.lab.cli1.clone();
    Some((vpn, cli1))
}

/// Nothing of the client remains and the laptop's own paths work again.
/// alice's `twoway down` in `ns`, then nothing of the client remains.
fn alice_down_and_clean(vpn: &Vpn, ns: &str) {
    let out = vpn.twoway_down(ns, "alice");
    vpn.check(out.success(), "`twoway down`", &out);
    expect_clean(vpn, ns, "after `down` nothing of the client remains");
}

/// `twoway down` for `name` in `ns` (the step `down`), then `gone` holds
/// within 10 s (the step `step`; a failure shows the IPv6 view of `ns`).
fn down_until(vpn: &Vpn, ns: &str, name: &str, down: &str, step: &str, gone: impl FnMut() -> bool) {
    let out = vpn.twoway_down(ns, name);
    vpn.check(out.success(), down, &out);
    let gone = wait_until(Duration::from_secs(10), gone);
    vpn.check(gone, step, vpn.describe6(ns));
}

fn expect_clean(vpn: &Vpn, ns: &str, step: &str) {
    let clean = wait_until(Duration::from_secs(10), || {
        vpn.installed_routes(ns).is_empty()
            && vpn.lab.addr_in(ns, net(TUNNEL_NET)).is_none()
            && !vpn.client_state_file("alice").exists()
    });
    vpn.check(
        clean,
        step,
        format_args!(
            "left: routes {:?}, tunnel address {:?}, state file {}\n{}",
            vpn.installed_routes(ns),
            vpn.lab.addr_in(ns, net(TUNNEL_NET)),
            vpn.client_state_file("alice").exists(),
            vpn.describe6(ns)
        ),
    );
    vpn.expect_route_via(ns, INTERNET_HOST, "eth0", Some(GATEWAY), step);
    vpn.check(
        vpn.lab.ping(ns, LAN_HOST6),
        step,
        "IPv6 outside the tunnel does not work again",
    );
    vpn.check(
        read(&vpn.tmp("resolv.conf")) == "nameserver 198.18.1.2\n",
        step,
        format_args!(
            "resolv.conf not restored: {:?}",
            read(&vpn.tmp("resolv.conf"))
        ),
    );
}

/// A pushed 0.0.0.0/0: everything goes into the tunnel, the server stays on
/// the physical path, IPv6 does not leak around the IPv4 tunnel, the LAN goes
/// through the tunnel without allow_lan, DNS goes into the managed
/// resolv.conf; after `kill -9` nothing leaks and the next start and `down`
/// clean up.
#[test]
fn full_tunnel_keeps_the_server_path_and_leaks_nothing() {
    let Some((vpn, cli1)) =
        full_tunnel_lab("full_tunnel_keeps_the_server_path_and_leaks_nothing", false)
    else {
        return;
    };
    vpn.check(
        vpn.lab.ping(&cli1, LAN_HOST6) && !vpn.lab.ping_once(&cli1, INTERNET_HOST),
        "before the tunnel: IPv6 goes out directly, the internet host refuses the laptop",
        vpn.describe6(&cli1),
    );

    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_route_via(
        &cli1,
        SERVER_PUBLIC,
        "eth0",
        Some(GATEWAY),
        "the server's address is still reached through the physical gateway",
    );
    vpn.expect_route_via(
        &cli1,
        INTERNET_HOST,
        TUN,
        None,
        "an internet address is routed into the tunnel",
    );
    vpn.expect_route_via(
        &cli1,
        LAN_HOST,
        TUN,
        None,
        "the corporate host is routed into the tunnel",
    );
    vpn.expect_ping(
        &cli1,
        INTERNET_HOST,
        "the internet host answers through the tunnel",
    );
    vpn.expect_ping(
        &cli1,
        LAN_HOST,
        "the corporate host answers through the tunnel",
    );
    vpn.expect_route_via(
        &cli1,
        LAN_NEIGHBOUR,
        TUN,
        None,
        "without allow_lan, the local subnet goes through the tunnel",
    );
    vpn.expect_route_via(
        &cli1,
        GATEWAY,
        "eth0",
        None,
        "the gateway itself stays on the link",
    );
    vpn.expect_unrouted(
        &cli1,
        LAN_HOST6,
        "IPv6 cannot leak around an IPv4-only full tunnel",
    );
    vpn.check(
        !vpn.lab.ping_once(&cli1, LAN_HOST6),
        "a ping over IPv6 fails instead of leaking",
        vpn.describe6(&cli1),
    );

    let step = "`status --json` shows the full tunnel and the DNS in force";
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        v["full_tunnel"] == true
            && v["dns"] == serde_json::json!(["198.19.0.53"])
            && v["search"] == serde_json::json!(["corp.test"])
            && v["dns_method"] == "resolv.conf",
        step,
        &out,
    );
    let resolv = read(&vpn.tmp("resolv.conf"));
    vpn.check(
        resolv.contains("nameserver 198.19.0.53\n") && resolv.contains("search corp.test\n"),
        "the managed resolv.conf names the pushed server and domain",
        &resolv,
    );
    vpn.check(
        vpn.client_state_file("alice").exists(),
        "the client records its changes in a state file",
        "no state file next to the control socket",
    );

    // A crash: the TUN device goes with the process, the backstop stays.
    vpn.kill_clients(&cli1);
    vpn.expect_unrouted(
        &cli1,
        INTERNET_HOST,
        "after kill -9, internet traffic is refused rather than leaked",
    );
    vpn.expect_route_via(
        &cli1,
        SERVER_PUBLIC,
        "eth0",
        Some(GATEWAY),
        "after kill -9, the server is still reachable",
    );

    // The next start cleans up and works.
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        INTERNET_HOST,
        "after a restart the tunnel carries internet traffic",
    );
    alice_down_and_clean(&vpn, &cli1);

    // Killed again, then `down` without a running client cleans up.
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.kill_clients(&cli1);
    let out = vpn.twoway_down(&cli1, "alice");
    vpn.check(
        out.success() && out.stdout.contains("no client was running"),
        "`twoway down` after a crash undoes what the killed client left",
        &out,
    );
    expect_clean(
        &vpn,
        &cli1,
        "after `down` of a killed client nothing remains",
    );
}

/// allow_lan = true: the laptop's own subnet stays outside the full tunnel.
#[test]
fn allow_lan_keeps_the_local_subnet_reachable() {
    let Some((vpn, cli1)) = full_tunnel_lab("allow_lan_keeps_the_local_subnet_reachable", true)
    else {
        return;
    };
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_route_via(
        &cli1,
        LAN_NEIGHBOUR,
        "eth0",
        None,
        "with allow_lan the local subnet is on the link",
    );
    vpn.expect_ping(
        &cli1,
        LAN_NEIGHBOUR,
        "a neighbour on the local subnet answers",
    );
    vpn.expect_route_via(
        &cli1,
        INTERNET_HOST,
        TUN,
        None,
        "the internet still goes into the tunnel",
    );
    vpn.expect_ping(
        &cli1,
        INTERNET_HOST,
        "the internet host answers through the tunnel",
    );
    alice_down_and_clean(&vpn, &cli1);
}

/// network6 on the server: alice gets an IPv6 address, the pushed v6 route
/// goes into the tunnel and a corporate IPv6 host answers a ping; bob's
/// IPv6 full tunnel reaches an IPv6 internet host and blocks IPv4 around it.
#[test]
fn ipv6_inside_the_tunnel_reaches_a_corporate_host() {
    let Some(mut vpn) = Vpn::prepared_default("ipv6_inside_the_tunnel_reaches_a_corporate_host")
    else {
        return;
    };
    vpn.add_ipv6(false);
    twoway_tests::toml_files::edit_toml(&vpn.server_config(), |t| {
        twoway_tests::toml_files::set(t, "tunnel.network6", "fd77::/64");
    });
    vpn.write_policy(&policy(", \"fd19::/64\"", "", "routes = [\"::/0\"]"));
    // An IPv6 "internet" host behind the corporate network, and a v4
    // default route for cli2 so that a v4 leak would have somewhere to go.
    vpn.setup_in(
        &vpn.lab.lan,
        &[&["ip", "-6", "addr", "add", "fd20::1/128", "dev", "lo"]],
    );
    vpn.setup_in(
        &vpn.lab.srv,
        &[&["ip", "-6", "route", "add", "fd20::/64", "via", "fd19::2"]],
    );
    vpn.setup_in(
        &vpn.lab.cli2,
        &[&["ip", "route", "add", "default", "via", "198.18.2.2"]],
    );
    vpn.start_server();
    let cli1 = vpn.lab.cli1.clone();
    vpn.check(
        vpn.lab.route_get(&cli1, LAN_HOST6).is_none(),
        "before the tunnel cli1 has no IPv6 route to the corporate host",
        vpn.describe6(&cli1),
    );
    vpn.bring_up(&cli1, "alice", alice_net());
    let step = "the TUN device carries alice's IPv6 address fd77::a";
    let found = vpn.lab.addr_in(&cli1, net("fd77::/64"));
    vpn.check(
        found
            .as_ref()
            .is_some_and(|a| a.ifname == TUN && a.addr.to_string() == "fd77::a"),
        step,
        format_args!("{found:?}\n{}", vpn.describe6(&cli1)),
    );
    vpn.expect_route_via(
        &cli1,
        LAN_HOST6,
        TUN,
        None,
        "the v6 corporate route goes into the tunnel",
    );
    vpn.expect_ping(
        &cli1,
        LAN_HOST6,
        "ping6 to the corporate host over the tunnel",
    );
    vpn.expect_ping(&cli1, LAN_HOST, "IPv4 still works beside it");
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        v["address6"] == "fd77::a",
        "`status --json` shows address6",
        &out,
    );
    down_until(
        &vpn,
        &cli1,
        "alice",
        "`twoway down`",
        "after `down` no IPv6 route remains",
        || vpn.lab.route_get(&cli1, LAN_HOST6).is_none() && vpn.installed_routes(&cli1).is_empty(),
    );

    // bob: an IPv6 full tunnel (::/0); IPv4 must not leak around it.
    let cli2 = vpn.lab.cli2.clone();
    vpn.bring_up(&cli2, "bob", net(twoway_tests::vpn::TUNNEL_POOL));
    vpn.expect_route_via(
        &cli2,
        "fd20::1",
        "tw-bob",
        None,
        "::/0 sends IPv6 into the tunnel",
    );
    vpn.expect_ping(
        &cli2,
        "fd20::1",
        "an IPv6 internet host answers through the tunnel",
    );
    vpn.expect_unrouted(
        &cli2,
        INTERNET_HOST,
        "IPv4 cannot leak around an IPv6-only full tunnel",
    );
    vpn.expect_route_via(
        &cli2,
        "198.18.2.2",
        "eth0",
        None,
        "the server stays reachable on the link",
    );
    vpn.expect_ping(
        &cli2,
        LAN_HOST,
        "the corporate IPv4 route still goes through the tunnel",
    );
    down_until(
        &vpn,
        &cli2,
        "bob",
        "`twoway down` for bob",
        "after bob's `down` IPv4 goes out directly again",
        || {
            vpn.installed_routes(&cli2).is_empty()
                && vpn.route_dev(&cli2, INTERNET_HOST).as_deref() == Some("eth0")
        },
    );
}

/// A split tunnel without network6: pushed DNS reaches the up hook and
/// status, and a pushed IPv6 route is unreachable instead of leaking.
#[test]
fn split_tunnel_hands_dns_to_the_hook_and_drops_ipv6_without_network6() {
    let Some(mut vpn) =
        Vpn::prepared_default("split_tunnel_hands_dns_to_the_hook_and_drops_ipv6_without_network6")
    else {
        return;
    };
    vpn.write_policy(&policy(
        ", \"fd19::/64\"",
        "",
        "dns = [\"198.19.0.53\", \"198.19.0.54\"]\nsearch = [\"corp.test\"]",
    ));
    let hook_out = vpn.tmp("hook.env");
    vpn.set_client_keys(
        "bob",
        &[
            ("dns.resolved", Toml::Boolean(false)),
            (
                "hooks.up",
                Toml::String(format!(
                    "echo \"$TWOWAY_DNS|$TWOWAY_SEARCH\" > {}",
                    path_str(&hook_out)
                )),
            ),
        ],
    );
    vpn.start_server();
    let cli2 = vpn.lab.cli2.clone();
    vpn.bring_up(&cli2, "bob", net(twoway_tests::vpn::TUNNEL_POOL));
    vpn.expect_ping(&cli2, LAN_HOST, "bob pings the corporate host");
    let (v, out) = vpn.client_status(&cli2, "bob");
    vpn.check(
        v["dns"] == serde_json::json!(["198.19.0.53", "198.19.0.54"])
            && v["search"] == serde_json::json!(["corp.test"])
            && v["dns_method"] == "hook"
            && v["full_tunnel"] == false,
        "`status --json` shows the DNS handed to the hook",
        &out,
    );
    vpn.check(
        read(&hook_out) == "198.19.0.53 198.19.0.54|corp.test\n",
        "the up hook got TWOWAY_DNS and TWOWAY_SEARCH",
        read(&hook_out),
    );
    vpn.expect_unrouted(
        &cli2,
        LAN_HOST6,
        "a pushed IPv6 route without network6 is unreachable",
    );
    down_until(
        &vpn,
        &cli2,
        "bob",
        "`twoway down`",
        "after `down` no route of the client remains",
        || vpn.installed_routes(&cli2).is_empty(),
    );
}

/// The laptop's link goes away and comes back: while down, tunnel-routed
/// addresses still resolve into the tunnel (never the physical link); the
/// client notices at once, and reconnects as soon as the link and its
/// default route are back, long before the 60 s keepalive timeout.
#[test]
fn link_down_and_up_reconnects_without_leaking() {
    let Some((vpn, cli1)) = full_tunnel_lab("link_down_and_up_reconnects_without_leaking", true)
    else {
        return;
    };
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(
        &cli1,
        INTERNET_HOST,
        "the internet host answers through the tunnel",
    );

    vpn.setup_in(&cli1, &[&["ip", "link", "set", "eth0", "down"]]);
    let down_at = Instant::now();
    let mut noticed = None;
    while down_at.elapsed() < Duration::from_secs(6) {
        for addr in [INTERNET_HOST, LAN_HOST] {
            let dev = vpn.route_dev(&cli1, addr);
            vpn.check(
                dev.as_deref() == Some(TUN),
                "while the link is down, tunnel-routed addresses still resolve into the tunnel",
                format_args!("ip route get {addr}: {dev:?}\n{}", vpn.describe6(&cli1)),
            );
        }
        if noticed.is_none() && vpn.client_status_json(&cli1, "alice")["state"] == "reconnecting" {
            noticed = Some(down_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    vpn.check(
        noticed.is_some_and(|t| t < Duration::from_secs(5)),
        "the client notices the lost path within 5 s (not the 60 s keepalive timeout)",
        format_args!("{:?}", vpn.client_status_json(&cli1, "alice")),
    );

    // The link comes back; DHCP would put the default route back.
    vpn.setup_in(
        &cli1,
        &[
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "route", "replace", "default", "via", GATEWAY],
            // IPv6 addresses go with the link (no keep_addr_on_down).
            &[
                "ip",
                "-6",
                "addr",
                "replace",
                "fd18:1::1/64",
                "dev",
                "eth0",
                "nodad",
            ],
            &[
                "ip",
                "-6",
                "route",
                "replace",
                "default",
                "via",
                "fd18:1::2",
            ],
        ],
    );
    let up_at = Instant::now();
    let back = wait_until(Duration::from_secs(20), || {
        vpn.client_status_json(&cli1, "alice")["state"] == "up"
            && vpn.lab.ping_once(&cli1, INTERNET_HOST)
    });
    vpn.check(
        back,
        "the tunnel is back within 20 s of the link",
        format_args!(
            "{:?}\n{}",
            vpn.client_status_json(&cli1, "alice"),
            vpn.describe6(&cli1)
        ),
    );
    eprintln!("tunnel back {:?} after the link", up_at.elapsed());
    vpn.expect_route_via(
        &cli1,
        SERVER_PUBLIC,
        "eth0",
        Some(GATEWAY),
        "the server's address is pinned to the gateway again",
    );

    // Another gateway on the same link (a new router): the path changed, so
    // the client re-pins the server and reconnects at once.
    let since = vpn.client_status_json(&cli1, "alice")["since"].clone();
    vpn.setup_in(
        &cli1,
        &[&["ip", "route", "replace", "default", "via", LAN_NEIGHBOUR]],
    );
    let moved = wait_until(Duration::from_secs(5), || {
        vpn.lab
            .route_get(&cli1, SERVER_PUBLIC)
            .is_some_and(|v| v["gateway"] == LAN_NEIGHBOUR)
            && vpn.client_status_json(&cli1, "alice")["since"] != since
    });
    vpn.check(
        moved,
        "a new default gateway: the server is pinned to it and the session renewed within 5 s",
        format_args!(
            "{:?}
{}",
            vpn.client_status_json(&cli1, "alice"),
            vpn.describe6(&cli1)
        ),
    );
    vpn.expect_ping(
        &cli1,
        INTERNET_HOST,
        "the tunnel works over the new gateway",
    );
    vpn.setup_in(
        &cli1,
        &[&["ip", "route", "replace", "default", "via", GATEWAY]],
    );
    alice_down_and_clean(&vpn, &cli1);
}
