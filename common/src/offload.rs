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

impl Header {
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
    pub fn validate(&self, packet: &[u8]) -> Result<(), HeaderError> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Err(HeaderError("packet length"));
        }
        if self.flags & !F_NEEDS_CSUM != 0 {
            return Err(HeaderError("unknown flags"));
        }
        if self.flags & F_NEEDS_CSUM != 0 {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > packet.len() {
                return Err(HeaderError("checksum position outside the packet"));
            }
        }
        let version = packet[0] >> 4;
        match self.gso_type & !GSO_ECN {
            GSO_NONE if self.gso_type == GSO_NONE => Ok(()),
            t @ (VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6) => {
                let want = if t == VIRTIO_NET_HDR_GSO_TCPV4 { 4 } else { 6 };
                if version != want {
                    return Err(HeaderError(
                        "segmentation type does not match the IP version",
                    ));
                }
                if self.gso_size < MIN_GSO_SIZE || self.flags & F_NEEDS_CSUM == 0 {
                    return Err(HeaderError(
                        "segmentation without a sane size or checksum offload",
                    ));
                }
                // The packet must really be TCP, with the checksum where TCP keeps it.
                let (proto, ip_len) = if want == 4 {
                    (packet.get(9).copied(), usize::from(packet[0] & 0x0f) * 4)
                } else {
                    (packet.get(6).copied(), 40)
                };
                if proto != Some(6) {
                    return Err(HeaderError("segmentation of a packet that is not TCP"));
                }
                if usize::from(self.csum_start) != ip_len || self.csum_offset != 16 {
                    return Err(HeaderError("checksum position is not the TCP checksum"));
                }
                let tcp_len = packet
                    .get(ip_len + 12)
                    .map_or(0, |b| usize::from(b >> 4) * 4);
                if tcp_len < 20
                    || usize::from(self.hdr_len) < ip_len + tcp_len
                    || usize::from(self.hdr_len) > packet.len()
                {
                    return Err(HeaderError("header length"));
                }
                Ok(())
            }
            _ => Err(HeaderError("unsupported segmentation type")),
        }
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
