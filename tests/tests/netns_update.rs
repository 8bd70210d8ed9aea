//! `reload` pushes a changed grant to the live session (DESIGN.md, "Contract
//! added in the second round"; PROTOCOL.md, "Update"), with the real
//! binaries in network namespaces: a route and DNS added to the client's
//! group reach the laptop without a reconnect (same TLS connection, same
//! `since`) and carry traffic; taken away again, they disappear; a changed
//! address still reconnects; and after a crash, `down` removes exactly what
//! the updates installed.
//!
//! Topology: twoway_tests::lab, plus a second corporate network behind the
//! `lan` host (198.19.1.0/24) that the laptop reaches only once the new route
//! is pushed.

use std::time::Duration;

use serde_json::{json, Value};
use toml::Value as Toml;
use twoway_tests::vpn::read;
use twoway_tests::vpn::{alice_net, path_str, Vpn, ALICE_ADDR, CORP_NET, LAN_HOST};
use twoway_tests::{wait_for, wait_until};

const TUN: &str = "tw-alice";
/// The corporate network the reload adds, and a host on it.
const NEW_NET: &str = "198.19.1.0/24";
const NEW_HOST: &str = "198.19.1.2";
/// An IPv6 route pushed without network6: the client installs it as an
/// unreachable route, which (unlike a route on the TUN device) outlives a
/// crash of the client, so only the journal of host changes can remove it.
const V6_NET: &str = "fd19::/64";
/// alice's address after the last policy change.
const ALICE_ADDR2: &str = "198.18.77.11";
/// The laptop's own resolv.conf before the tunnel.
const RESOLV: &str = "nameserver 198.18.1.2\n";

/// alice at `address`, in group "eng" whose routes, DNS and search domains
/// are `eng` (TOML lines); everyone gets the corporate network.
fn policy(address: &str, eng: &str) -> String {
    format!(
        "client_to_client = false\n\n[defaults]\nroutes = [\"{CORP_NET}\"]\n\n\
         [[group]]\nname = \"eng\"\n{eng}\n\n\
         [[client]]\nidentity = \"alice\"\naddress = \"{address}\"\ngroups = [\"eng\"]\n"
    )
}

/// The grant of the eng group with the new network, DNS and a search domain.
fn eng_grant(routes: &[&str]) -> String {
    let routes: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "routes = [{}]\ndns = [\"198.19.1.53\"]\nsearch = [\"eng.test\"]",
        routes.join(", ")
    )
}

/// The server's view of alice's connection: session number, remote address
/// and port (her TCP connection), start time and address.
fn server_side(vpn: &Vpn) -> Option<(Value, Value, Value, Value)> {
    vpn.session_of("alice").map(|s| {
        (
            s["id"].clone(),
            s["remote"].clone(),
            s["since"].clone(),
            s["address"].clone(),
        )
    })
}

/// The destinations of the routes the client's journal records.
fn journal_routes(vpn: &Vpn) -> Vec<String> {
    let text = read(&vpn.client_state_file("alice"));
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["dst"].as_str().map(String::from))
        .collect()
}

/// Whether the client installed a route whose `ip route` line contains `what`.
fn installed(vpn: &Vpn, ns: &str, what: &str) -> bool {
    vpn.installed_routes(ns).iter().any(|r| r.contains(what))
}

/// Lines of alice's log that report a grant applied without a reconnect.
fn update_lines(vpn: &Vpn) -> Vec<String> {
    read(&vpn.tmp("run/alice.log"))
        .lines()
        .filter(|l| l.contains("applied without reconnecting"))
        .map(String::from)
        .collect()
}

#[test]
fn reload_pushes_routes_and_dns_to_the_live_session() {
    let Some(mut vpn) = Vpn::prepared("reload_pushes_routes_and_dns_to_the_live_session") else {
        return;
    };
    let (cli1, srv, lan) = (
        vpn.lab.cli1.clone(),
        vpn.lab.srv.clone(),
        vpn.lab.lan.clone(),
    );
    vpn.setup_in(
        &lan,
        &[&["ip", "addr", "add", "198.19.1.2/24", "dev", "eth0"]],
    );
    vpn.setup_in(&srv, &[&["ip", "route", "add", NEW_NET, "via", LAN_HOST]]);
    vpn.write_policy(&policy(ALICE_ADDR, ""));
    let resolv = vpn.tmp("resolv.conf");
    std::fs::write(&resolv, RESOLV).expect("write resolv.conf");
    vpn.set_client_keys(
        "alice",
        &[
            ("dns.resolved", Toml::Boolean(false)),
            ("dns.manage_resolv_conf", Toml::Boolean(true)),
            ("dns.resolv_conf", Toml::String(path_str(&resolv).into())),
        ],
    );
    vpn.start_server();
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings the corporate host");
    vpn.check(
        vpn.lab.route_get(&cli1, NEW_HOST).is_none(),
        "before the reload the laptop has no route to the new network",
        vpn.lab.describe(&cli1),
    );
    let server_before = server_side(&vpn);
    let (client_before, _) = vpn.client_status(&cli1, "alice");

    // 1. The eng group gains a route (and DNS): pushed, no reconnect.
    vpn.write_policy(&policy(ALICE_ADDR, &eng_grant(&[NEW_NET, V6_NET])));
    let out = vpn.reload("`twoway-server reload` with a new route for alice's group");
    vpn.check(
        out.stdout
            .contains("0 session(s) closed, 1 updated without a reconnect"),
        "the reload closes no session and updates alice's",
        &out,
    );
    let routed = wait_until(Duration::from_secs(10), || {
        vpn.route_dev(&cli1, NEW_HOST).as_deref() == Some(TUN) && installed(&vpn, &cli1, V6_NET)
    });
    vpn.check(
        routed,
        "the new route appears on the laptop (ip route: into the tunnel), and the IPv6 one as unreachable",
        format_args!(
            "{}\ninstalled: {:?}",
            vpn.lab.describe(&cli1),
            vpn.installed_routes(&cli1)
        ),
    );
    vpn.expect_ping(
        &cli1,
        NEW_HOST,
        "traffic to the new corporate destination flows",
    );
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        v["state"] == "up"
            && v["routes"] == json!([CORP_NET, NEW_NET, V6_NET])
            && v["dns"] == json!(["198.19.1.53"])
            && v["search"] == json!(["eng.test"])
            && v["dns_method"] == "resolv.conf",
        "`twoway status` shows the new routes and DNS",
        &out,
    );
    vpn.check(
        v["since"] == client_before["since"] && v["since"].is_string(),
        "the client's `since` stays the same",
        format_args!("before {}, after {}", client_before["since"], v["since"]),
    );
    vpn.check(
        server_side(&vpn) == server_before && server_before.is_some(),
        "the server keeps the same session: same number, TCP connection, start time",
        format_args!("before {server_before:?}\nafter  {:?}", server_side(&vpn)),
    );
    vpn.check(
        read(&resolv).contains("nameserver 198.19.1.53\n")
            && read(&resolv).contains("search eng.test\n"),
        "the managed resolv.conf carries the new DNS",
        read(&resolv),
    );
    let journal = journal_routes(&vpn);
    vpn.check(
        journal.iter().any(|r| r == NEW_NET) && journal.iter().any(|r| r == V6_NET),
        "the journal of host changes records the new routes",
        format_args!("{journal:?}"),
    );
    let lines = update_lines(&vpn);
    vpn.check(
        lines.len() == 1
            && lines[0].contains(&format!("+{NEW_NET}"))
            && lines[0].contains("198.19.1.53"),
        "the client logs one line saying what changed",
        format_args!("{lines:#?}"),
    );

    // 2. Taken away again: the routes disappear, DNS goes back.
    vpn.write_policy(&policy(ALICE_ADDR, ""));
    let out = vpn.reload("`twoway-server reload` without the new route");
    vpn.check(
        out.stdout
            .contains("0 session(s) closed, 1 updated without a reconnect"),
        "the second reload updates alice's session too",
        &out,
    );
    let gone = wait_until(Duration::from_secs(10), || {
        vpn.lab.route_get(&cli1, NEW_HOST).is_none() && !installed(&vpn, &cli1, V6_NET)
    });
    vpn.check(
        gone,
        "the removed routes disappear from the laptop",
        format_args!(
            "{}\ninstalled: {:?}",
            vpn.lab.describe(&cli1),
            vpn.installed_routes(&cli1)
        ),
    );
    let (v, out) = vpn.client_status(&cli1, "alice");
    vpn.check(
        v["routes"] == json!([CORP_NET])
            && v["dns"] == json!([])
            && v["dns_method"] == "none"
            && v["since"] == client_before["since"],
        "`twoway status` shows the routes left, no DNS, the same `since`",
        &out,
    );
    vpn.check(
        read(&resolv) == RESOLV,
        "the laptop's resolv.conf is back",
        read(&resolv),
    );
    vpn.check(
        journal_routes(&vpn) == [CORP_NET],
        "the journal no longer records the removed routes",
        format_args!("{:?}", journal_routes(&vpn)),
    );
    vpn.check(
        server_side(&vpn) == server_before,
        "still the same session on the server",
        format_args!("before {server_before:?}\nafter  {:?}", server_side(&vpn)),
    );
    vpn.expect_ping(&cli1, LAN_HOST, "the corporate host still answers");

    // 3. A changed address cannot be pushed: the client reconnects.
    vpn.write_policy(&policy(ALICE_ADDR2, ""));
    let out = vpn.reload("`twoway-server reload` with a new address for alice");
    vpn.check(
        out.stdout.contains("1 session(s) closed"),
        "the reload closes alice's session",
        &out,
    );
    let moved = wait_for(Duration::from_secs(15), || {
        let v = vpn.client_state(&cli1, "alice")?;
        (v["state"] == "up" && v["address"] == ALICE_ADDR2).then_some(v)
    });
    vpn.check(
        moved
            .as_ref()
            .is_some_and(|v| v["since"] != client_before["since"]),
        "alice's client reconnects by itself with the new address (a new `since`)",
        format_args!("{moved:?}\n{}", vpn.lab.describe(&cli1)),
    );
    let server_after = server_side(&vpn);
    vpn.check(
        server_after.as_ref().is_some_and(|s| {
            let before = server_before.as_ref().expect("checked above");
            s.1 != before.1 && s.3 == ALICE_ADDR2
        }),
        "the server has a new session (another TCP connection) at the new address",
        format_args!("before {server_before:?}\nafter  {server_after:?}"),
    );
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings from her new address");

    // 4. A crash after an update: `down` removes exactly what is installed.
    vpn.write_policy(&policy(ALICE_ADDR2, &eng_grant(&[V6_NET])));
    vpn.reload("`twoway-server reload` pushing the IPv6 route and DNS again");
    let pushed = wait_until(Duration::from_secs(10), || {
        installed(&vpn, &cli1, V6_NET) && read(&resolv).contains("198.19.1.53")
    });
    vpn.check(
        pushed,
        "the pushed route and DNS are in place",
        format_args!("{:?}\n{}", vpn.installed_routes(&cli1), read(&resolv)),
    );
    vpn.kill_clients(&cli1);
    vpn.check(
        installed(&vpn, &cli1, V6_NET),
        "after kill -9 the pushed unreachable route is left behind",
        format_args!("{:?}", vpn.installed_routes(&cli1)),
    );
    let out = vpn.twoway_down(&cli1, "alice");
    vpn.check(
        out.success() && out.stdout.contains("removed the routes and DNS settings"),
        "`twoway down` after the crash undoes what the journal records",
        &out,
    );
    vpn.check(
        vpn.installed_routes(&cli1).is_empty() && read(&resolv) == RESOLV,
        "no route of the client remains and resolv.conf is back",
        format_args!(
            "installed: {:?}\nresolv.conf: {:?}",
            vpn.installed_routes(&cli1),
            read(&resolv)
        ),
    );
    vpn.stop_server();
}
