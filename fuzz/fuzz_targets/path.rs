//! The UDP path's validation state (`UdpPath::received_from` and
//! `UdpPath::validated`, the server's side), fed a sequence of operations
//! from four addresses and two local addresses: a datagram arrives (newest
//! or not), an echo arrives with bytes the path handed out (for that
//! address or another one) or with arbitrary bytes. Checked after each:
//!
//! - nothing panics;
//! - the path's peer changes only in `validated`, only to the echo's
//!   address, and only with bytes the path handed out for that very
//!   address (as a challenge or a recheck) that were not used up yet;
//! - an echo that moved nothing says so, one that moved says so;
//! - a recheck moves the path back only to the address it left, and only
//!   after a newest datagram came from there since the recheck was made;
//! - the address we send from changes only when the peer does;
//! - a datagram never moves the path, and the current peer is never
//!   challenged.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use twoway_common::outside::udp::path::{UdpPath, Validation, CHALLENGE_LEN};
use twoway_common::outside::udp::UdpSocket;

const ADDRS: [&str; 4] = [
    "192.0.2.1:4000",
    "192.0.2.1:5000",
    "203.0.113.66:666",
    "[2001:db8::7]:4000",
];
const LOCAL: [&str; 2] = ["198.18.0.1", "198.18.0.2"];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _guard = runtime().enter();
    let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
    let path = UdpPath::new(Arc::new(socket), None);
    let addrs: Vec<SocketAddr> = ADDRS.iter().map(|a| a.parse().unwrap()).collect();
    let local: Vec<IpAddr> = LOCAL.iter().map(|a| a.parse().unwrap()).collect();
    // Bytes handed out, per address, not used up yet.
    let mut issued: HashSet<(SocketAddr, [u8; CHALLENGE_LEN])> = HashSet::new();
    // The recheck made at the last move: (address, bytes, heard since).
    let mut recheck: Option<(SocketAddr, [u8; CHALLENGE_LEN], bool)> = None;
    let mut ops = data.iter();
    while let Some(&op) = ops.next() {
        let from = addrs[(op >> 2) as usize % addrs.len()];
        let before = path.route();
        match op & 3 {
            0 | 1 => {
                let newest = op & 1 == 1;
                let to = local.get((op >> 4) as usize % 3).copied();
                let at_peer = path.peer() == Some(from);
                let got = path.received_from(from, to, newest);
                assert_eq!(path.route(), before, "a datagram moved the path");
                if let Some(bytes) = got {
                    assert!(newest && !at_peer, "challenge to the peer or for an old datagram");
                    issued.insert((from, bytes));
                }
                if newest && !at_peer {
                    if let Some(r) = recheck.as_mut().filter(|r| r.0 == from) {
                        r.2 = true;
                    }
                }
            }
            _ => {
                // An echo: of handed-out bytes (any address's) or arbitrary ones.
                let mut bytes = [0u8; CHALLENGE_LEN];
                let pick = ops.next().copied().unwrap_or(0);
                if op & 1 == 0 && !issued.is_empty() {
                    let mut all: Vec<_> = issued.iter().copied().collect();
                    all.sort();
                    bytes = all[pick as usize % all.len()].1;
                } else {
                    for b in bytes.iter_mut() {
                        *b = ops.next().copied().unwrap_or(pick);
                    }
                }
                let result = path.validated(from, &bytes);
                let after = path.route();
                match result {
                    Validation::Ignored => assert_eq!(after, before, "an ignored echo moved"),
                    Validation::Moved | Validation::MovedFrom(..) => {
                        assert!(issued.contains(&(from, bytes)), "moved on bytes never handed out for {from}");
                        assert_eq!(after.map(|r| r.0), Some(from));
                        if let Some((r_addr, r_bytes, heard)) = recheck {
                            if (r_addr, r_bytes) == (from, bytes) {
                                assert!(heard, "a recheck counted before the peer spoke there");
                                assert!(matches!(result, Validation::Moved), "a move back rechecked");
                            }
                        }
                        // Every challenge in flight is gone with the move.
                        issued.clear();
                        recheck = None;
                        if let Validation::MovedFrom(old, src, r) = result {
                            assert_eq!(Some(old), before.map(|b| b.0), "recheck of another address");
                            assert_eq!(src, before.and_then(|b| b.1));
                            issued.insert((old, r));
                            recheck = Some((old, r, false));
                        }
                    }
                }
            }
        }
    }
});
