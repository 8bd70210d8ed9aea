//! TUN offload metadata (the Linux virtio-net header) carried across the
//! tunnel, so that the kernels at both ends segment and coalesce large TCP
//! packets instead of twoway handling each 1400-byte packet.
//!
//! On the wire the header is 10 bytes, fields little-endian, as virtio 1.0
//! defines it. Headers from a peer are validated before they reach the kernel.

use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};

/// Length of the header in front of each packet.
pub const HEADER_LEN: usize = 10;
/// `flags`: the checksum from `csum_start` on is still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: a single packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type` bit: TCP with ECN.
pub const GSO_ECN: u8 = 0x80;
/// A header for a plain, complete packet.
pub const PLAIN: [u8; HEADER_LEN] = [0; HEADER_LEN];
/// Smallest segment size accepted from a peer: a tiny one would make the
/// kernel cut a 64 KiB packet into tens of thousands of segments.
pub const MIN_GSO_SIZE: u16 = 64;
/// Largest packet (IP header included) behind a header.
pub const MAX_PACKET: usize = 65_535;

/// The header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// `F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// `GSO_NONE`, TCPv4 (1) or TCPv6 (4), maybe with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the IP and TCP headers.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

/// A header from a peer that the kernel must not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid offload header: {0}")]
pub struct HeaderError(pub &'static str);

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// IP protocol number of TCP.
const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;
/// Where TCP keeps its checksum, from the start of its header.
const TCP_CSUM_OFFSET: u16 = 16;
/// Where UDP keeps its checksum, from the start of its header.
const UDP_CSUM_OFFSET: u16 = 6;

/// The transport header of an IP packet: its protocol and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transport {
    protocol: u8,
    offset: usize,
}

impl Transport {
    /// Follows the IPv4 header or the IPv6 header and its extension headers
    /// (hop-by-hop, routing, destination options) to the transport header.
    /// `None` for anything that is not such a packet, including fragments.
    fn of(packet: &[u8]) -> Option<Self> {
        match packet.first()? >> 4 {
            4 => {
                let offset = usize::from(packet[0] & 0x0f) * 4;
                let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff;
                (offset >= 20 && offset <= packet.len() && fragment == 0).then(|| Self {
                    protocol: packet[9],
                    offset,
                })
            }
            6 => {
                let mut protocol = *packet.get(6)?;
                let mut offset = 40;
                // A bounded walk: each extension header is at least 8 bytes.
                while matches!(protocol, 0 | 43 | 60) {
                    protocol = *packet.get(offset)?;
                    offset += (usize::from(*packet.get(offset + 1)?) + 1) * 8;
                }
                (offset <= packet.len()).then_some(Self { protocol, offset })
            }
            _ => None,
        }
    }
}

impl Header {
    /// A single packet (no GSO) whose checksum is left to finish: the
    /// transport checksum starts at `csum_start` and is stored at
    /// `csum_offset` past it.
    pub fn needs_csum(csum_start: u16, csum_offset: u16) -> Self {
        Self {
            flags: F_NEEDS_CSUM,
            csum_start,
            csum_offset,
            ..Self::default()
        }
    }

    /// Reads the 10 header bytes (little-endian; `b` must hold at least 10).
    pub fn read(b: &[u8]) -> Self {
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(b, 2),
            gso_size: u16_at(b, 4),
            csum_start: u16_at(b, 6),
            csum_offset: u16_at(b, 8),
        }
    }

    /// Checks a header from the network against the packet it precedes.
    ///
    /// The kernel writes the finished checksum at `csum_start + csum_offset`
    /// after our source filter has looked at the packet, so that position is
    /// pinned to the checksum field of a TCP or UDP header right behind the IP
    /// header(s); anywhere else the write could rewrite an address.
    pub fn validate(&self, packet: &[u8]) -> Result<(), HeaderError> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Err(HeaderError("packet length"));
        }
        if self.flags & !F_NEEDS_CSUM != 0 {
            return Err(HeaderError("unknown flags"));
        }
        if usize::from(self.hdr_len) > packet.len() {
            return Err(HeaderError("header length"));
        }
        let transport = Transport::of(packet);
        if self.flags & F_NEEDS_CSUM != 0 {
            let t = transport.ok_or(HeaderError("checksum offload on a packet that is not IP"))?;
            let want = match t.protocol {
                PROTO_TCP => TCP_CSUM_OFFSET,
                PROTO_UDP => UDP_CSUM_OFFSET,
                _ => {
                    return Err(HeaderError(
                        "checksum offload for a protocol other than TCP or UDP",
                    ))
                }
            };
            if usize::from(self.csum_start) != t.offset || self.csum_offset != want {
                return Err(HeaderError(
                    "checksum position is not the transport checksum",
                ));
            }
            if t.offset + usize::from(want) + 2 > packet.len() {
                return Err(HeaderError("checksum position outside the packet"));
            }
        }
        match self.gso_type & !GSO_ECN {
            GSO_NONE if self.gso_type == GSO_NONE => Ok(()),
            t @ (VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6) => {
                let want = if t == VIRTIO_NET_HDR_GSO_TCPV4 { 4 } else { 6 };
                if packet[0] >> 4 != want {
                    return Err(HeaderError(
                        "segmentation type does not match the IP version",
                    ));
                }
                if self.gso_size < MIN_GSO_SIZE || self.flags & F_NEEDS_CSUM == 0 {
                    return Err(HeaderError(
                        "segmentation without a sane size or checksum offload",
                    ));
                }
                // NEEDS_CSUM is set, so the checks above pinned the transport.
                let Some(Transport {
                    protocol: PROTO_TCP,
                    offset,
                }) = transport
                else {
                    return Err(HeaderError("segmentation of a packet that is not TCP"));
                };
                let tcp_len = packet
                    .get(offset + 12)
                    .map_or(0, |b| usize::from(b >> 4) * 4);
                if tcp_len < 20 || usize::from(self.hdr_len) < offset + tcp_len {
                    return Err(HeaderError("header length"));
                }
                Ok(())
            }
            _ => Err(HeaderError("unsupported segmentation type")),
        }
    }

    /// Splits a DataOffload payload into its header and packet, checked.
    pub fn split_checked(payload: &[u8]) -> Result<(Self, &[u8]), HeaderError> {
        if payload.len() < HEADER_LEN {
            return Err(HeaderError("truncated"));
        }
        let (head, packet) = payload.split_at(HEADER_LEN);
        let header = Self::read(head);
        header.validate(packet)?;
        Ok((header, packet))
    }

    /// Reads a header as the local device wrote it (native byte order).
    pub fn from_device(b: &[u8]) -> Self {
        let ne = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: ne(2),
            gso_size: ne(4),
            csum_start: ne(6),
            csum_offset: ne(8),
        }
    }

    /// The header as the local device reads it (native byte order).
    pub fn to_device(&self) -> [u8; HEADER_LEN] {
        self.encode(u16::to_ne_bytes)
    }

    /// The header for the wire (little-endian).
    pub fn to_wire(&self) -> [u8; HEADER_LEN] {
        self.encode(u16::to_le_bytes)
    }

    fn encode(&self, bytes: fn(u16) -> [u8; 2]) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.flags;
        out[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            out[2 + 2 * i..4 + 2 * i].copy_from_slice(&bytes(v));
        }
        out
    }

    /// Whether this is one large packet the kernel is to cut into segments.
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// As tun-rs wants it.
    pub fn to_virtio(self) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: self.flags,
            gso_type: self.gso_type,
            hdr_len: self.hdr_len,
            gso_size: self.gso_size,
            csum_start: self.csum_start,
            csum_offset: self.csum_offset,
        }
    }
}

/// Completes the partial checksum of a single packet (`F_NEEDS_CSUM`), for a
/// peer that cannot take offloaded packets.
pub fn finish_checksum(packet: &mut [u8], h: &Header) {
    let at = usize::from(h.csum_start) + usize::from(h.csum_offset);
    let start = usize::from(h.csum_start);
    if at + 2 > packet.len() || start > packet.len() {
        return;
    }
    let initial = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at] = 0;
    packet[at + 1] = 0;
    let sum = tun_rs::checksum(&packet[start..], u64::from(initial));
    packet[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
}

/// Splits an offloaded packet (`header` + `packet`) into plain packets for a
/// peer without offload; each goes to `out`.
pub fn split(
    header: &Header,
    packet: &[u8],
    mut out: impl FnMut(&[u8]),
) -> Result<(), HeaderError> {
    if !header.is_gso() {
        if header.flags & F_NEEDS_CSUM == 0 {
            out(packet);
        } else {
            let mut copy = packet.to_vec();
            finish_checksum(&mut copy, header);
            out(&copy);
        }
        return Ok(());
    }
    let segments = packet.len() / usize::from(header.gso_size.max(1)) + 1;
    let mut bufs =
        vec![vec![0u8; usize::from(header.hdr_len) + usize::from(header.gso_size)]; segments];
    let mut sizes = vec![0usize; segments];
    let mut input = packet.to_vec();
    let is_v6 = packet.first().is_some_and(|b| b >> 4 == 6);
    let n = tun_rs::gso_split(
        &mut input,
        header.to_virtio(),
        &mut bufs,
        &mut sizes,
        0,
        is_v6,
    )
    .map_err(|_| HeaderError("cannot split the offloaded packet"))?;
    for (buf, size) in bufs.iter().zip(&sizes).take(n) {
        out(&buf[..*size]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ippacket::build;

    fn tcp_gso_header() -> Header {
        Header {
            flags: F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        }
    }

    fn tcp_packet(payload: usize) -> Vec<u8> {
        let mut p = build::ipv4(
            "198.18.77.10".parse().unwrap(),
            "198.19.0.2".parse().unwrap(),
            &vec![0u8; 20 + payload],
        );
        p[9] = 6; // TCP
        p[20 + 12] = 0x50; // data offset 5 words
        p
    }

    #[test]
    fn reads_little_endian_fields() {
        let h = Header::read(&[1, 1, 40, 0, 0xe8, 0x03, 20, 0, 16, 0]);
        assert_eq!(h, tcp_gso_header());
    }

    #[test]
    fn wire_and_device_forms_round_trip() {
        let h = tcp_gso_header();
        assert_eq!(Header::read(&h.to_wire()), h);
        assert_eq!(Header::from_device(&h.to_device()), h);
    }

    #[test]
    fn accepts_plain_and_tcp_segmentation() {
        assert_eq!(Header::default().validate(&tcp_packet(10)), Ok(()));
        let p = tcp_packet(3000);
        assert_eq!(tcp_gso_header().validate(&p), Ok(()));
    }

    #[test]
    fn refuses_what_the_kernel_should_not_see() {
        let p = tcp_packet(3000);
        let good = tcp_gso_header();
        let bad = [
            Header {
                gso_type: 3,
                ..good
            },
            Header {
                gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
                ..good
            },
            Header {
                gso_size: 0,
                ..good
            },
            Header { flags: 0, ..good },
            Header {
                flags: 0x40,
                ..good
            },
            Header {
                csum_start: 60_000,
                ..good
            },
            Header {
                hdr_len: 10,
                ..good
            },
        ];
        for h in bad {
            assert!(h.validate(&p).is_err(), "{h:?} accepted");
        }
        assert!(good.validate(&[]).is_err());
        let mut udp = p.clone();
        udp[9] = 17;
        assert!(
            good.validate(&udp).is_err(),
            "TCP segmentation of a UDP packet"
        );
    }

    fn ipv6_packet(protocol: u8, transport_len: usize) -> Vec<u8> {
        let mut p = build::ipv6(
            "fd77::80".parse().unwrap(),
            "fd99::2".parse().unwrap(),
            &vec![0u8; transport_len],
        );
        p[6] = protocol;
        if protocol == 6 && transport_len > 12 {
            p[40 + 12] = 0x50;
        }
        p
    }

    #[test]
    fn plain_checksum_offload_only_at_the_transport_checksum() {
        let tcp6 = ipv6_packet(6, 40);
        let udp6 = ipv6_packet(17, 20);
        let mut udp4 = tcp_packet(20);
        udp4[9] = 17;
        assert_eq!(Header::needs_csum(40, 16).validate(&tcp6), Ok(()));
        assert_eq!(Header::needs_csum(40, 6).validate(&udp6), Ok(()));
        assert_eq!(Header::needs_csum(20, 16).validate(&tcp_packet(20)), Ok(()));
        assert_eq!(Header::needs_csum(20, 6).validate(&udp4), Ok(()));
        // The review's attack: the checksum write lands in the IPv6 source
        // (bytes 8-23) or destination (24-39) address.
        for start in 0..40u16 {
            for offset in [0u16, 2, 16] {
                assert!(
                    Header::needs_csum(start, offset).validate(&tcp6).is_err(),
                    "csum_start {start} csum_offset {offset} accepted"
                );
            }
        }
        // Wrong field for the protocol, or a checksum past the transport start.
        assert!(Header::needs_csum(40, 6).validate(&tcp6).is_err());
        assert!(Header::needs_csum(40, 16).validate(&udp6).is_err());
        assert!(Header::needs_csum(42, 14).validate(&tcp6).is_err());
        // Protocols whose checksum the kernel never leaves to the device.
        assert!(Header::needs_csum(40, 2)
            .validate(&ipv6_packet(58, 40))
            .is_err());
        // Not an IP packet at all, or too short for the checksum field.
        assert!(Header::needs_csum(20, 16).validate(&[0x00; 60]).is_err());
        assert!(Header::needs_csum(40, 16)
            .validate(&ipv6_packet(6, 10))
            .is_err());
    }

    #[test]
    fn ipv6_extension_headers_are_followed_to_the_transport() {
        // Hop-by-hop options (8 bytes), then TCP at 48.
        let mut p = ipv6_packet(0, 8 + 40);
        p[40] = 6;
        p[48 + 12] = 0x50;
        assert_eq!(Header::needs_csum(48, 16).validate(&p), Ok(()));
        assert!(Header::needs_csum(40, 16).validate(&p).is_err());
        // A fragment header: no checksum offload on fragments.
        let mut f = ipv6_packet(44, 8 + 40);
        f[40] = 6;
        assert!(Header::needs_csum(48, 16).validate(&f).is_err());
        // An extension header that claims more than the packet has.
        let mut long = ipv6_packet(60, 8);
        long[41] = 200;
        assert!(Header::needs_csum(48, 16).validate(&long).is_err());
    }

    #[test]
    fn ipv4_fragments_take_no_checksum_offload() {
        let mut p = tcp_packet(20);
        p[6] = 0x20; // more fragments
        assert!(Header::needs_csum(20, 16).validate(&p).is_err());
    }

    #[test]
    fn header_length_beyond_the_packet_is_refused() {
        let h = Header {
            hdr_len: 200,
            ..Header::default()
        };
        assert!(h.validate(&tcp_packet(20)).is_err());
    }

    #[test]
    fn split_cuts_segments_of_gso_size() {
        let p = tcp_packet(2500);
        let mut sizes = Vec::new();
        split(&tcp_gso_header(), &p, |s| sizes.push(s.len())).unwrap();
        assert_eq!(sizes, [1040, 1040, 540]);
    }

    #[test]
    fn split_of_plain_packet_passes_it_through() {
        let p = tcp_packet(100);
        let mut got = Vec::new();
        split(&Header::default(), &p, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(got, [p]);
    }
}
