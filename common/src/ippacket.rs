//! Just enough IP header parsing for the data path: version, source and
//! destination of an IPv4 or IPv6 packet, validated against the buffer length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source and destination of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// Why a buffer is not an IP packet we can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed header of its version.
    #[error("packet too short")]
    Truncated,
    /// Neither IPv4 nor IPv6.
    #[error("not an IPv4 or IPv6 packet")]
    BadVersion,
    /// An IPv4 header length that does not fit.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// An IPv4 total length shorter than its header or longer than the packet.
    #[error("bad IPv4 total length")]
    BadTotalLength,
}

/// Reads source and destination from an IP packet.
pub fn addresses(packet: &[u8]) -> Result<Addresses, PacketError> {
    let first = *packet.first().ok_or(PacketError::Truncated)?;
    match first >> 4 {
        4 => {
            if packet.len() < 20 {
                return Err(PacketError::Truncated);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || ihl > packet.len() {
                return Err(PacketError::BadHeaderLength);
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if total < ihl || total > packet.len() {
                return Err(PacketError::BadTotalLength);
            }
            Ok(Addresses {
                src: IpAddr::V4(Ipv4Addr::from(octets(packet, 12)?)),
                dst: IpAddr::V4(Ipv4Addr::from(octets(packet, 16)?)),
            })
        }
        6 => {
            if packet.len() < 40 {
                return Err(PacketError::Truncated);
            }
            Ok(Addresses {
                src: IpAddr::V6(Ipv6Addr::from(octets(packet, 8)?)),
                dst: IpAddr::V6(Ipv6Addr::from(octets(packet, 24)?)),
            })
        }
        _ => Err(PacketError::BadVersion),
    }
}

/// The `N` bytes of an address at `at`.
fn octets<const N: usize>(packet: &[u8], at: usize) -> Result<[u8; N], PacketError> {
    packet
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(PacketError::Truncated)
}

/// Largest packet that can count as interactive.
pub const INTERACTIVE_MAX: usize = 512;

/// Whether a packet is small and latency-sensitive: ICMP, small UDP (DNS,
/// VoIP), or a TCP segment without payload (an acknowledgement). TCP data is
/// never interactive, so one flow's data is never reordered.
pub fn is_interactive(packet: &[u8]) -> bool {
    if packet.len() > INTERACTIVE_MAX || packet.is_empty() {
        return false;
    }
    let (proto, l4) = match packet[0] >> 4 {
        4 if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            (packet[9], packet.get(ihl..))
        }
        // Extension headers are rare on these packets; they simply don't qualify.
        6 if packet.len() >= 40 => (packet[6], packet.get(40..)),
        _ => return false,
    };
    match (proto, l4) {
        (1 | 58 | 17, Some(_)) => true,
        // A bare ACK (ECE/CWR allowed): no payload, no SYN/FIN/RST/PSH/URG,
        // which must not overtake the flow's data.
        (6, Some(tcp)) if tcp.len() >= 20 => {
            tcp.len() == usize::from(tcp[12] >> 4) * 4 && tcp[13] & !0xc0 == 0x10
        }
        _ => false,
    }
}

/// Test helpers that build minimal packets (feature `test-util`).
#[cfg(any(test, feature = "test-util"))]
pub mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A minimal IPv4 header (protocol 253, "experimental") plus `payload`.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 253;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    /// A minimal IPv6 header (next header 253) plus `payload`.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p[6] = 253;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_v6() {
        let p = build::ipv4(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            b"x",
        );
        let a = addresses(&p).unwrap();
        assert_eq!(a.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        let p6 = build::ipv6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), b"");
        assert_eq!(
            addresses(&p6).unwrap().dst,
            "fd00::2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn interactive_means_icmp_small_udp_or_bare_tcp_ack() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let with_proto = |proto: u8, payload: &[u8]| {
            let mut p = build::ipv4(src, dst, payload);
            p[9] = proto;
            p
        };
        assert!(is_interactive(&with_proto(1, &[8, 0, 0, 0])));
        assert!(is_interactive(&with_proto(17, &[0u8; 60])));
        assert!(!is_interactive(&with_proto(17, &[0u8; 1200])));
        let mut ack = [0u8; 20];
        ack[12] = 0x50;
        ack[13] = 0x10;
        assert!(is_interactive(&with_proto(6, &ack)));
        ack[13] = 0x11; // FIN must stay behind the flow's data
        assert!(!is_interactive(&with_proto(6, &ack)));
        let mut data = [0u8; 120];
        data[12] = 0x50;
        assert!(!is_interactive(&with_proto(6, &data)));
        assert!(!is_interactive(&with_proto(6, &[0u8; 4])));
        assert!(!is_interactive(b""));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(addresses(&[]), Err(PacketError::Truncated));
        assert_eq!(addresses(&[0x45; 19]), Err(PacketError::Truncated));
        assert_eq!(addresses(&[0x70; 40]), Err(PacketError::BadVersion));
        let mut p = build::ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, b"");
        p[0] = 0x44; // IHL 16 bytes: too small
        assert_eq!(addresses(&p), Err(PacketError::BadHeaderLength));
        p[0] = 0x4f; // IHL 60 bytes: longer than the packet
        assert_eq!(addresses(&p), Err(PacketError::BadHeaderLength));
        p[0] = 0x45;
        p[2..4].copy_from_slice(&100u16.to_be_bytes()); // claims more than it has
        assert_eq!(addresses(&p), Err(PacketError::BadTotalLength));
        p[2..4].copy_from_slice(&10u16.to_be_bytes()); // shorter than its header
        assert_eq!(addresses(&p), Err(PacketError::BadTotalLength));
        assert_eq!(addresses(&[0x60; 39]), Err(PacketError::Truncated));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes give addresses or an error, never a panic or an out-of-bounds read.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = addresses(&bytes);
        }
    }
}
