//! The UDP data channel with the real binaries in network namespaces
//! (issue 12): data moves to UDP after the assignment, falls back to the TLS
//! connection when UDP is blocked and comes back when it is not, follows a
//! NAT rebinding of the laptop's source port, and ignores replayed and
//! forged datagrams from another host. nftables does the blocking and the
//! NAT; conntrack forgets the old mapping; tcpdump captures a datagram to
//! replay.

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;
use twoway_tests::vpn::{alice_net, Vpn, ALICE_ADDR, LAN_HOST, SERVER_ADDR_CLI2};
use twoway_tests::{in_netns, wait_until};

/// Runs `nft -f -` with `rules` in `ns`.
fn nft(vpn: &Vpn, ns: &str, rules: &str, step: &str) {
    let out = vpn.lab.exec(
        ns,
        &["sh", "-c", &format!("nft -f - <<'EOF'\n{rules}\nEOF")],
    );
    vpn.check(out.success(), step, &out);
}

fn client_transport(vpn: &Vpn, ns: &str) -> String {
    let (v, _) = vpn.client_status(ns, "alice");
    v["transport"].as_str().unwrap_or("missing").to_owned()
}

fn wait_transport(vpn: &Vpn, ns: &str, want: &str, limit: Duration, step: &str) {
    let mut seen = String::new();
    let ok = wait_until(limit, || {
        seen = client_transport(vpn, ns);
        seen == want
    });
    vpn.check(
        ok,
        step,
        format_args!("`twoway status --json` still says transport {seen:?} after {limit:?}"),
    );
}

/// alice up in `ns`, then data on UDP within `limit`.
fn alice_up_on_udp(vpn: &Vpn, ns: &str, limit: Duration, step: &str) {
    vpn.bring_up(ns, "alice", alice_net());
    wait_transport(vpn, ns, "udp", limit, step);
}

/// Drops the laptop's UDP to the server (`nft` table `twblock`).
const BLOCK_UDP: &str = "table inet twblock {\n chain out {\n  type filter hook output priority 0;\n  udp dport 4433 drop\n }\n}";

fn server_session(vpn: &Vpn) -> Value {
    vpn.session_of("alice")
        .unwrap_or_else(|| vpn.fail("the server lists alice", "no session"))
}

/// Up, UDP carries the pings, both status outputs say so.
#[test]
fn data_moves_to_udp_after_the_assignment() {
    let Some(mut vpn) = Vpn::started("data_moves_to_udp_after_the_assignment") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    alice_up_on_udp(
        &vpn,
        &cli1,
        Duration::from_secs(5),
        "the client's status says transport udp within 5 s",
    );
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings the lan host over UDP");
    // The tunnel MTU (1400) fits the datagram on the 1,500-byte path: a
    // full-size packet with DF set crosses (1372 + 8 ICMP + 20 IP = 1400).
    let out = vpn.lab.exec_timeout(
        &cli1,
        &[
            "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1372", LAN_HOST,
        ],
        Duration::from_secs(10),
    );
    vpn.check(
        out.success(),
        "a DF ping of the tunnel MTU (1400 bytes) crosses over UDP",
        &out,
    );
    vpn.check(
        client_transport(&vpn, &cli1) == "udp",
        "still on udp after the full-size pings",
        "",
    );
    let s = server_session(&vpn);
    vpn.check(
        s["transport"] == "udp"
            && s["udp_remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("198.18.1.1:")),
        "the server's status says transport udp, from alice's address",
        &s,
    );
    let before = vpn.dropped("forged") + vpn.dropped("replayed");
    vpn.check(
        before == 0,
        "no datagram was dropped as forged or replayed",
        before,
    );
    vpn.take_down_and_stop(&cli1, "alice");
}

/// UDP blocked from the start: up works over TCP; unblocked: data moves to
/// UDP; blocked mid-session: back to TCP within 5 s while pings go on.
#[test]
fn blocked_udp_falls_back_to_tcp_and_comes_back() {
    let Some(mut vpn) = Vpn::started("blocked_udp_falls_back_to_tcp_and_comes_back") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    nft(
        &vpn,
        &cli1,
        BLOCK_UDP,
        "block UDP to the server on the laptop",
    );
    vpn.bring_up(&cli1, "alice", alice_net());
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings over TCP while UDP is blocked");
    wait_transport(
        &vpn,
        &cli1,
        "tcp",
        Duration::from_secs(10),
        "with UDP blocked the status says tcp",
    );
    std::thread::sleep(Duration::from_secs(2));
    vpn.check(
        client_transport(&vpn, &cli1) == "tcp",
        "it stays on tcp while UDP is blocked",
        "",
    );
    nft(&vpn, &cli1, "delete table inet twblock", "unblock UDP");
    wait_transport(
        &vpn,
        &cli1,
        "udp",
        Duration::from_secs(5),
        "after unblocking, data moves to udp within 5 s",
    );
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings over UDP");
    nft(&vpn, &cli1, BLOCK_UDP, "block UDP again, mid-session");
    let ping = vpn.lab.spawn(
        &cli1,
        "ping",
        &["ping", "-n", "-i", "0.2", "-c", "50", "-W", "1", LAN_HOST],
    );
    wait_transport(
        &vpn,
        &cli1,
        "tcp",
        Duration::from_secs(5),
        "blocked mid-session, data falls back to tcp within 5 s",
    );
    vpn.expect_ping(&cli1, LAN_HOST, "pings go on over TCP");
    let s = server_session(&vpn);
    vpn.check(s["transport"] == "tcp", "the server follows: tcp", &s);
    vpn.lab.stop(&ping, Duration::from_secs(1));
    nft(
        &vpn,
        &cli1,
        "delete table inet twblock",
        "unblock UDP again",
    );
    wait_transport(
        &vpn,
        &cli1,
        "udp",
        Duration::from_secs(5),
        "unblocked again, back to udp",
    );
    vpn.take_down_and_stop(&cli1, "alice");
}

/// UDP blocked one way only: the laptop's datagrams no longer reach the
/// server while the server's still reach the laptop (pings from the LAN host
/// keep them coming). Data arriving is not an answer to a probe, so the
/// laptop still falls back to TCP, and its own pings get through again.
#[test]
fn udp_blocked_one_way_falls_back_to_tcp() {
    let Some(mut vpn) = Vpn::started("udp_blocked_one_way_falls_back_to_tcp") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let lan = vpn.lab.lan.clone();
    alice_up_on_udp(&vpn, &cli1, Duration::from_secs(10), "data moves to udp");
    // The server sends to the laptop over UDP all along: the LAN host pings it.
    let inbound = vpn.lab.spawn(
        &lan,
        "ping-in",
        &[
            "ping", "-n", "-i", "0.05", "-c", "400", "-W", "1", ALICE_ADDR,
        ],
    );
    nft(
        &vpn,
        &cli1,
        BLOCK_UDP,
        "block UDP from the laptop to the server only",
    );
    wait_transport(
        &vpn,
        &cli1,
        "tcp",
        Duration::from_secs(8),
        "with its datagrams lost one way, the laptop falls back to tcp",
    );
    vpn.expect_ping(&cli1, LAN_HOST, "alice's own pings get through over TCP");
    vpn.lab.stop(&inbound, Duration::from_secs(1));
    vpn.take_down_and_stop(&cli1, "alice");
}

/// The laptop's NAT gives its UDP flow a new source port: the server follows
/// the first authenticated datagram from there, and data stays on UDP.
#[test]
fn a_new_source_port_keeps_data_on_udp() {
    let Some(mut vpn) = Vpn::started("a_new_source_port_keeps_data_on_udp") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let snat = |port: u16| {
        format!(
            "table ip twnat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  udp dport 4433 snat to 198.18.1.1:{port}\n }}\n}}"
        )
    };
    nft(
        &vpn,
        &cli1,
        &snat(40001),
        "the laptop's NAT maps its UDP flow to port 40001",
    );
    alice_up_on_udp(&vpn, &cli1, Duration::from_secs(5), "data on udp");
    let s = server_session(&vpn);
    vpn.check(
        s["udp_remote"] == "198.18.1.1:40001",
        "the server sees alice's datagrams from port 40001",
        &s,
    );
    nft(&vpn, &cli1, "delete table ip twnat", "drop the old mapping");
    nft(
        &vpn,
        &cli1,
        &snat(40002),
        "the NAT now maps the flow to port 40002",
    );
    let out = vpn.lab.exec(&cli1, &["conntrack", "-D", "-p", "udp"]);
    vpn.passed(&format!(
        "forget the old NAT mapping (conntrack: {})",
        out.stderr.trim()
    ));
    vpn.expect_ping(&cli1, LAN_HOST, "alice pings after the rebinding");
    let moved = wait_until(Duration::from_secs(5), || {
        vpn.session_of("alice")
            .is_some_and(|s| s["udp_remote"] == "198.18.1.1:40002")
    });
    vpn.check(
        moved,
        "the server follows alice to port 40002",
        server_session(&vpn),
    );
    vpn.check(
        client_transport(&vpn, &cli1) == "udp",
        "data is still on udp",
        "",
    );
    vpn.take_down_and_stop(&cli1, "alice");
}

/// Reads one twoway datagram that alice sends, by capturing on the server's
/// side of her link; returns its UDP payload.
fn capture_datagram(vpn: &Vpn) -> Vec<u8> {
    let pcap = vpn.tmp("alice.pcap");
    let srv = vpn.lab.srv.clone();
    let out = vpn.lab.exec_timeout(
        &srv,
        &[
            "tcpdump",
            "-i",
            "cli1",
            "-c",
            "1",
            "-w",
            pcap.to_str().unwrap(),
            "udp and dst port 4433 and greater 200",
        ],
        Duration::from_secs(20),
    );
    vpn.check(out.success(), "capture one of alice's datagrams", &out);
    let bytes = std::fs::read(&pcap).unwrap();
    // pcap: 24-byte file header, 16-byte record header, Ethernet (14), IPv4, UDP (8).
    let frame = &bytes[24 + 16..];
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[ihl + 8..].to_vec()
}

/// alice's pings to the LAN host go on while [`capture_datagram`] takes
/// one of her datagrams.
fn capture_while_pinging(vpn: &Vpn, cli1: &str) -> Vec<u8> {
    let ping = vpn.lab.spawn(
        cli1,
        "ping",
        &[
            "ping", "-n", "-i", "0.05", "-s", "400", "-c", "200", LAN_HOST,
        ],
    );
    let d = capture_datagram(vpn);
    vpn.lab.stop(&ping, Duration::from_secs(1));
    d
}

/// The attacker on cli2 sends `datagrams`, in order, `rounds` times to the
/// server.
fn send_from_cli2(vpn: &Vpn, cli2: &str, datagrams: Vec<Vec<u8>>, rounds: usize, step: &str) {
    let sent = in_netns(cli2, move || -> std::io::Result<()> {
        let sock = UdpSocket::bind("198.18.2.1:0")?;
        for _ in 0..rounds {
            for d in &datagrams {
                sock.send_to(d, SERVER_ADDR_CLI2)?;
            }
        }
        Ok(())
    });
    vpn.check(matches!(sent, Ok(Ok(()))), step, format_args!("{sent:?}"));
}

/// Another host replays a captured datagram of alice's and sends forged
/// ones under her session number: the server counts them, delivers none,
/// and keeps alice's UDP address.
#[test]
fn replayed_and_forged_datagrams_change_nothing() {
    let Some(mut vpn) = Vpn::started("replayed_and_forged_datagrams_change_nothing") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    alice_up_on_udp(&vpn, &cli1, Duration::from_secs(5), "data on udp");
    let datagram = capture_while_pinging(&vpn, &cli1);
    vpn.check(
        datagram.len() > 16 && datagram[0] == 1,
        "the capture holds a twoway datagram",
        datagram.len(),
    );
    let remote = server_session(&vpn)["udp_remote"].clone();
    let (replayed, forged) = (vpn.dropped("replayed"), vpn.dropped("forged"));
    // A tampered copy under the same counter is refused by the replay
    // window before the AEAD; under a fresh counter, by the AEAD.
    let mut tampered = datagram.clone();
    let n = tampered.len();
    tampered[n - 1] ^= 0x55;
    let counter = u64::from_be_bytes(datagram[8..16].try_into().unwrap());
    let mut fresh = tampered.clone();
    fresh[8..16].copy_from_slice(&(counter + 1_000).to_be_bytes());
    let mut far = datagram.clone();
    far[8..16].copy_from_slice(&(u64::MAX - 5).to_be_bytes());
    send_from_cli2(
        &vpn,
        &cli2,
        vec![datagram, tampered, fresh, far],
        5,
        "the attacker on cli2 sends 5 replays, 5 tampered copies and 10 forgeries",
    );
    let counted = wait_until(Duration::from_secs(5), || {
        vpn.dropped("replayed") >= replayed + 10 && vpn.dropped("forged") >= forged + 10
    });
    vpn.check(
        counted,
        "the server counts 10 replayed and 10 forged datagrams",
        format_args!(
            "replayed {replayed} -> {}, forged {forged} -> {}",
            vpn.dropped("replayed"),
            vpn.dropped("forged")
        ),
    );
    let s = server_session(&vpn);
    vpn.check(
        s["udp_remote"] == remote && s["transport"] == "udp",
        "alice's UDP address did not move to the attacker",
        &s,
    );
    vpn.expect_ping(&cli1, LAN_HOST, "alice still pings over UDP");
    vpn.take_down_and_stop(&cli1, "alice");
}

/// `transport = "auto"`: a clean, busy path moves data to the TLS
/// connection's offload path; the first loss on that connection moves it
/// back to UDP.
#[test]
fn auto_takes_tcp_on_a_clean_busy_path_and_udp_on_loss() {
    let Some(mut vpn) = Vpn::started("auto_takes_tcp_on_a_clean_busy_path_and_udp_on_loss") else {
        return;
    };
    twoway_tests::vpn::require_tools(&["iperf3"]);
    let (cli1, lan, srv) = (
        vpn.lab.cli1.clone(),
        vpn.lab.lan.clone(),
        vpn.lab.srv.clone(),
    );
    alice_up_on_udp(&vpn, &cli1, Duration::from_secs(5), "data on udp");
    // An 8 s upload to the LAN host, during which data moves to `want`.
    let upload_until = |want: &str, step: &str| {
        let server = vpn
            .lab
            .spawn(&lan, "iperf3-server", &["iperf3", "-s", "-1"]);
        std::thread::sleep(Duration::from_millis(500));
        let client = vpn.lab.spawn(
            &cli1,
            "iperf3",
            &["iperf3", "-c", LAN_HOST, "-t", "8", "-b", "400M"],
        );
        wait_transport(&vpn, &cli1, want, Duration::from_secs(8), step);
        vpn.lab.stop(&client, Duration::from_secs(1));
        vpn.lab.stop(&server, Duration::from_secs(1));
    };
    upload_until("tcp", "a clean, busy path moves data to tcp");
    nft(
        &vpn,
        &srv,
        "table netdev twloss {\n chain in {\n  type filter hook ingress device cli1 priority 0;\n  numgen random mod 100 < 3 drop\n }\n}",
        "3 % of alice's packets are lost on the way to the server",
    );
    upload_until("udp", "loss on the TLS connection moves data back to udp");
    nft(&vpn, &srv, "delete table netdev twloss", "no more loss");
    vpn.take_down_and_stop(&cli1, "alice");
}

/// Kick and revocation end the UDP path with the TLS session: a datagram of
/// the ended session, replayed, names no session any more and is dropped
/// unopened (`udp.unknown_batches`).
#[test]
fn kick_and_revocation_end_the_udp_path() {
    let Some(mut vpn) = Vpn::started("kick_and_revocation_end_the_udp_path") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    let unknown = |vpn: &Vpn| {
        vpn.server_status_json("`twoway-server status --json`")["udp"]["unknown_batches"]
            .as_u64()
            .unwrap_or_else(|| vpn.fail("status has udp.unknown_batches", "missing"))
    };
    let replay = |vpn: &Vpn, datagram: Vec<u8>, step: &str| {
        let before = unknown(vpn);
        send_from_cli2(
            vpn,
            &cli2,
            vec![datagram],
            1,
            "replay the captured datagram",
        );
        let dropped = wait_until(Duration::from_secs(5), || unknown(vpn) > before);
        vpn.check(
            dropped,
            step,
            format_args!("unknown_batches stayed at {before}"),
        );
    };
    // First kicked, then (back up) revoked.
    for (up, revoke, gone, replayed) in [
        (
            "data on udp",
            false,
            "the kicked session is gone",
            "after the kick her datagrams name no session",
        ),
        (
            "alice is back on udp",
            true,
            "the revoked session is gone",
            "after the revocation her datagrams name no session",
        ),
    ] {
        alice_up_on_udp(&vpn, &cli1, Duration::from_secs(5), up);
        let datagram = capture_while_pinging(&vpn, &cli1);
        if revoke {
            vpn.pki_revoke("alice");
            vpn.reload("`twoway-server reload` with alice revoked");
        } else {
            let out = vpn.server_ctl(&["kick", "alice"]);
            vpn.check(out.success(), "`twoway-server kick alice`", &out);
        }
        vpn.wait_session_gone("alice", Duration::from_secs(5), gone);
        replay(&vpn, datagram, replayed);
    }
    vpn.stop_server();
}
