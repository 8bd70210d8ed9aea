//! A malicious, authenticated client and the offload header (issue 10,
//! finding 1). The kernel writes a NEEDS_CSUM packet's checksum at
//! `csum_start + csum_offset` after the server's source filter has looked at
//! the packet; a position inside the IPv6 header would let a client rewrite
//! its source into another client's address. The server must refuse such a
//! header as a protocol error (Bye, count) and the corporate host must never
//! see the packet, while a correctly placed checksum offload still passes.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use twoway_common::message::{Assignment, ByeReason};
use twoway_common::offload::Header;
use twoway_tests::forge::{self, OffloadFrame};
use twoway_tests::vpn::snmp6_counter;
use twoway_tests::vpn::Vpn;
use twoway_tests::vpn::LAN_HOST6;
use twoway_tests::{toml_files, wait_until};

/// UDP datagrams that reached the corporate host's stack, whatever became of them.
fn udp6_arrived(ns: &str) -> u64 {
    ["Udp6InDatagrams", "Udp6NoPorts", "Udp6InErrors"]
        .iter()
        .map(|f| snmp6_counter(ns, f).unwrap_or(0))
        .sum()
}

#[test]
fn checksum_offload_cannot_rewrite_an_ipv6_address() {
    let Some(mut vpn) = Vpn::prepared("checksum_offload_cannot_rewrite_an_ipv6_address") else {
        return;
    };
    vpn.add_ipv6(false);
    vpn.edit_server_config(|t| toml_files::set(t, "tunnel.network6", "fd77::/64"));
    // veth finishes checksums lazily; with TX checksumming off the server's
    // kernel computes them, so a rewrite would reach the wire.
    let srv = vpn.lab.srv.clone();
    vpn.setup_in(&srv, &[&["ethtool", "-K", "lan", "tx", "off"]]);
    vpn.expect_ping(
        &srv,
        LAN_HOST6,
        "the server reaches the corporate host over IPv6",
    );
    vpn.start_server();
    let (cli1, lan) = (vpn.lab.cli1.clone(), vpn.lab.lan.clone());
    let before = udp6_arrived(&lan);
    let bad_before = vpn.dropped("bad_offload");

    let config = vpn.client_config("alice");
    let forged = |with_attack: bool| {
        let dst: Ipv6Addr = LAN_HOST6.parse().unwrap();
        move |a: &Assignment| {
            let src = match a.address6.map(|n| n.ip()) {
                Some(IpAddr::V6(s)) => s,
                other => panic!("alice has no IPv6 address: {other:?}"),
            };
            let packet = forge::udp6_partial(src, dst, 9, b"twoway offload test");
            // The control: checksum offload where UDP keeps its checksum.
            let mut frames = vec![OffloadFrame {
                header: Header::needs_csum(40, 6),
                packet: packet.clone(),
                pause: Duration::from_secs(1),
            }];
            if with_attack {
                // The checksum lands on the last two bytes of the source address.
                frames.push(OffloadFrame {
                    header: Header::needs_csum(22, 0),
                    packet,
                    pause: Duration::ZERO,
                });
            }
            frames
        }
    };

    let outcome = forge::offload_frames(&cli1, &config, Duration::from_secs(10), forged(true))
        .unwrap_or_else(|e| vpn.fail("a forging client connects as alice", format_args!("{e:#}")));
    vpn.passed("a forging client connects as alice with offload");
    std::thread::sleep(Duration::from_millis(500));
    let arrived = udp6_arrived(&lan) - before;
    vpn.check(
        arrived == 1,
        "the corporate host received the correctly offloaded datagram and nothing else",
        format_args!("{arrived} UDP datagrams arrived"),
    );

    let reason = outcome.bye.as_ref().map(|b| b.reason);
    vpn.check(
        reason == Some(ByeReason::ProtocolError) && outcome.closed,
        "the server ends the session with Bye protocol-error",
        format_args!("{outcome:?}"),
    );
    let counted = wait_until(Duration::from_secs(5), || {
        vpn.dropped("bad_offload") > bad_before
    });
    vpn.check(
        counted,
        "the server counts the header in dropped.bad_offload",
        format_args!("still {bad_before}"),
    );
    let outcome = forge::offload_frames(&cli1, &config, Duration::from_secs(2), forged(false))
        .unwrap_or_else(|e| vpn.fail("alice connects again", format_args!("{e:#}")));
    vpn.check(
        outcome.bye.is_none() && !outcome.closed,
        "the server carries on: a new session with a correct header stays up",
        format_args!("{outcome:?}"),
    );
    let arrived = udp6_arrived(&lan) - before;
    vpn.check(
        arrived == 2,
        "the corporate host received the second correct datagram",
        format_args!("{arrived} UDP datagrams arrived in all"),
    );
    vpn.stop_server();
}
