//! Trains: a large TCP packet from an offload device crosses the UDP channel
//! as its segments (each a complete, valid packet, so a lost datagram costs
//! one segment, not the burst), tagged with the train they belong to. A
//! receiver with an offload device that gets a whole train in order writes
//! it back as one large packet, as the TCP path does; anything less goes to
//! the device segment by segment.
//!
//! Tag (4 bytes, in front of the segment inside the sealed body): train
//! number (u16, big-endian), segment index, segment count.

use crate::offload::{self, Header, F_NEEDS_CSUM};
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};

/// Bytes of the tag.
pub const TAG_LEN: usize = 4;
/// Most segments a train may have (the count is one byte).
pub const MAX_SEGMENTS: usize = 255;
/// Bytes of segments kept at most: a 64 KiB packet's payload with room
/// for each segment's own headers (the joined packet is checked again).
const MAX_HELD: usize = 2 * offload::MAX_PACKET;

/// Cuts large packets into segments, reusing its buffers.
#[derive(Debug, Default)]
pub struct Splitter {
    input: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    next_train: u16,
    /// The last cut: its train number and segment count.
    train: u16,
    count: usize,
}

impl Splitter {
    /// Cuts `packet` (with `header`, which asks for segmentation) and calls
    /// `out` with each segment's tag and bytes. Err if the header does not
    /// describe a packet that can be cut.
    #[cfg(test)]
    pub fn split(
        &mut self,
        header: &Header,
        packet: &[u8],
        mut out: impl FnMut([u8; TAG_LEN], &[u8]),
    ) -> Result<(), offload::HeaderError> {
        let n = self.cut(header, packet)?;
        for i in 0..n {
            let (tag, segment) = self.segment(i);
            out(tag, segment);
        }
        Ok(())
    }

    /// Cuts `packet` into segments kept here; returns how many.
    pub fn cut(&mut self, header: &Header, packet: &[u8]) -> Result<usize, offload::HeaderError> {
        let gso = usize::from(header.gso_size.max(1));
        let count = packet
            .len()
            .saturating_sub(usize::from(header.hdr_len))
            .div_ceil(gso)
            .max(1);
        let room = usize::from(header.hdr_len) + gso;
        if self.bufs.len() < count {
            self.bufs.resize_with(count, Vec::new);
        }
        for b in &mut self.bufs[..count] {
            if b.len() < room {
                b.resize(room, 0);
            }
        }
        self.sizes.clear();
        self.sizes.resize(count, 0);
        self.input.clear();
        self.input.extend_from_slice(packet);
        let is_v6 = packet.first().is_some_and(|b| b >> 4 == 6);
        let n = tun_rs::gso_split(
            &mut self.input,
            header.to_virtio(),
            &mut self.bufs[..count],
            &mut self.sizes,
            0,
            is_v6,
        )
        .map_err(|_| offload::HeaderError("cannot split the offloaded packet"))?;
        self.count = n;
        self.train = self.next_train;
        self.next_train = self.next_train.wrapping_add(1);
        Ok(n)
    }

    /// Segment `i` of the last cut, with its tag. A train too long for the
    /// tag goes as single segments (count 1).
    pub fn segment(&self, i: usize) -> ([u8; TAG_LEN], &[u8]) {
        let [t0, t1] = self.train.to_be_bytes();
        let tag = if self.count <= MAX_SEGMENTS {
            [t0, t1, i as u8, self.count as u8]
        } else {
            [t0, t1, 0, 1]
        };
        (tag, &self.bufs[i][..self.sizes[i]])
    }
}

/// What the receiver does with a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Kept; nothing to write yet.
    Held,
    /// The train is complete: write this large packet behind this header.
    Whole(Header, Vec<u8>),
}

/// Collects one train at a time.
#[derive(Debug, Default)]
pub struct Collector {
    train: Option<u16>,
    count: u8,
    segments: Vec<Vec<u8>>,
    /// Bytes in `segments`: never more than [`MAX_HELD`].
    held: usize,
    spare: Vec<Vec<u8>>,
}

impl Collector {
    /// Takes one tagged segment. Segments of a broken train (a gap, another
    /// train) are handed to `single`, in order, before anything new is kept.
    pub fn push(
        &mut self,
        tag: [u8; TAG_LEN],
        segment: &[u8],
        single: &mut impl FnMut(&[u8]),
    ) -> Step {
        let train = u16::from_be_bytes([tag[0], tag[1]]);
        let (index, count) = (tag[2], tag[3]);
        let continues = self.train == Some(train)
            && count == self.count
            && usize::from(index) == self.segments.len()
            && self.held + segment.len() <= MAX_HELD;
        if !continues {
            self.release(single);
            if index != 0 || count < 2 {
                single(segment);
                return Step::Held;
            }
            self.train = Some(train);
            self.count = count;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(segment);
        self.held += buf.len();
        self.segments.push(buf);
        if self.segments.len() < usize::from(self.count) {
            return Step::Held;
        }
        let step = match join(&self.segments) {
            Some((header, packet)) => Step::Whole(header, packet),
            None => {
                for s in &self.segments {
                    single(s);
                }
                Step::Held
            }
        };
        self.reset();
        step
    }

    /// Whether part of a train is kept.
    pub fn is_pending(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Hands what is kept of an unfinished train to `single`.
    pub fn release(&mut self, single: &mut impl FnMut(&[u8])) {
        for s in &self.segments {
            single(s);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.train = None;
        self.count = 0;
        self.held = 0;
        self.spare.append(&mut self.segments);
    }
}

/// One's-complement sum of `data` into `sum` (not folded).
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The large packet the segments were cut from: the first segment's headers,
/// every payload, lengths fixed, the TCP checksum left for the kernel to
/// finish. None if the segments are not a plain TCP train.
fn join(segments: &[Vec<u8>]) -> Option<(Header, Vec<u8>)> {
    const PSH_FIN: u8 = 0x08 | 0x01;
    let first = segments.first()?;
    let v6 = first.first()? >> 4 == 6;
    let ip_len = if v6 {
        40
    } else {
        usize::from(first[0] & 0x0f) * 4
    };
    let proto = if v6 { *first.get(6)? } else { *first.get(9)? };
    if proto != 6 || (!v6 && (first[0] >> 4 != 4 || ip_len < 20)) {
        return None;
    }
    // A TCP header is at least 20 bytes (the flags and checksum below are in it).
    let tcp_len = usize::from(first.get(ip_len + 12)? >> 4) * 4;
    if tcp_len < 20 {
        return None;
    }
    let hdr_len = ip_len + tcp_len;
    let gso = first.len().checked_sub(hdr_len).filter(|g| *g > 0)?;
    let last = segments.last()?;
    let mut packet = Vec::with_capacity(hdr_len + gso * segments.len());
    packet.extend_from_slice(first);
    for (i, s) in segments.iter().enumerate().skip(1) {
        let payload = s.get(hdr_len..)?;
        let fits = if i + 1 == segments.len() {
            !payload.is_empty() && payload.len() <= gso
        } else {
            payload.len() == gso
        };
        if !fits || s.len() < hdr_len {
            return None;
        }
        packet.extend_from_slice(payload);
    }
    let total = packet.len();
    if total > offload::MAX_PACKET {
        return None;
    }
    packet[ip_len + 13] |= last[ip_len + 13] & PSH_FIN;
    let tcp_total = (total - ip_len) as u32;
    let pseudo = if v6 {
        packet[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        sum16(&packet[8..40], 6 + tcp_total)
    } else {
        packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        packet[10..12].copy_from_slice(&[0, 0]);
        let c = !fold(sum16(&packet[..ip_len], 0));
        packet[10..12].copy_from_slice(&c.to_be_bytes());
        sum16(&packet[12..20], 6 + tcp_total)
    };
    // NEEDS_CSUM: the field holds the pseudo-header sum; the kernel adds the rest.
    packet[ip_len + 16..ip_len + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    let header = Header {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: hdr_len as u16,
        gso_size: gso as u16,
        csum_start: ip_len as u16,
        csum_offset: 16,
    };
    header.validate(&packet).ok()?;
    Some((header, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 GSO packet as a device gives it: partial checksum.
    fn gso_packet(payload: usize, v6: bool) -> (Header, Vec<u8>) {
        let ip_len = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; ip_len + 20 + payload];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
            p[24..40].copy_from_slice(&[0xfd, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&((ip_len + 20 + payload) as u16).to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[198, 18, 77, 10]);
            p[16..20].copy_from_slice(&[198, 19, 0, 2]);
        }
        p[ip_len + 4..ip_len + 8].copy_from_slice(&1000u32.to_be_bytes());
        p[ip_len + 12] = 0x50;
        p[ip_len + 13] = 0x18; // ACK | PSH
        for (i, b) in p[ip_len + 20..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let h = Header {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            hdr_len: (ip_len + 20) as u16,
            gso_size: 1000,
            csum_start: ip_len as u16,
            csum_offset: 16,
        };
        (h, p)
    }

    fn split_all(s: &mut Splitter, h: &Header, p: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut out = Vec::new();
        s.split(h, p, |t, seg| out.push((t, seg.to_vec()))).unwrap();
        out
    }

    #[test]
    fn a_whole_train_is_joined_into_the_packet_it_came_from() {
        for v6 in [false, true] {
            let (h, p) = gso_packet(4500, v6);
            let mut s = Splitter::default();
            let segs = split_all(&mut s, &h, &p);
            assert_eq!(segs.len(), 5);
            assert!(segs
                .iter()
                .enumerate()
                .all(|(i, (t, _))| t[2] == i as u8 && t[3] == 5));
            let mut c = Collector::default();
            let mut singles = Vec::new();
            let mut whole = None;
            for (t, seg) in &segs {
                if let Step::Whole(hh, pp) =
                    c.push(*t, seg, &mut |x: &[u8]| singles.push(x.to_vec()))
                {
                    whole = Some((hh, pp));
                }
            }
            assert!(singles.is_empty());
            let (hh, pp) = whole.expect("joined");
            assert_eq!(
                (hh.gso_type, hh.gso_size, hh.hdr_len),
                (h.gso_type, h.gso_size, h.hdr_len)
            );
            assert_eq!(pp.len(), p.len());
            let ip_len = usize::from(h.csum_start);
            // Payload and addresses as sent; the length fields right.
            assert_eq!(pp[ip_len + 20..], p[ip_len + 20..]);
            assert_eq!(pp[..ip_len].len(), ip_len);
            assert_eq!(pp[ip_len + 13] & 0x08, 0x08, "the last segment's PSH");
            if !v6 {
                assert_eq!(
                    fold(sum16(&pp[..20], 0)),
                    0xffff,
                    "valid IPv4 header checksum"
                );
            }
        }
    }

    #[test]
    fn a_gap_sends_what_arrived_as_single_packets() {
        let (h, p) = gso_packet(4500, false);
        let mut s = Splitter::default();
        let segs = split_all(&mut s, &h, &p);
        let mut c = Collector::default();
        let mut singles = Vec::new();
        for (i, (t, seg)) in segs.iter().enumerate() {
            if i == 2 {
                continue; // lost
            }
            let step = c.push(*t, seg, &mut |x: &[u8]| singles.push(x.to_vec()));
            assert_eq!(step, Step::Held);
        }
        c.release(&mut |x: &[u8]| singles.push(x.to_vec()));
        assert_eq!(singles.len(), 4);
        assert_eq!(singles[0], segs[0].1);
        assert_eq!(singles[3], segs[4].1);
    }

    #[test]
    fn a_new_train_releases_the_unfinished_one() {
        let (h, p) = gso_packet(2500, false);
        let mut s = Splitter::default();
        let a = split_all(&mut s, &h, &p);
        let b = split_all(&mut s, &h, &p);
        assert_ne!(a[0].0[..2], b[0].0[..2], "trains are numbered");
        let mut c = Collector::default();
        let mut singles = Vec::new();
        c.push(a[0].0, &a[0].1, &mut |x: &[u8]| singles.push(x.to_vec()));
        let mut whole = 0;
        for (t, seg) in &b {
            if let Step::Whole(..) = c.push(*t, seg, &mut |x: &[u8]| singles.push(x.to_vec())) {
                whole += 1;
            }
        }
        assert_eq!((singles.len(), whole), (1, 1));
    }

    #[test]
    fn hostile_tags_and_segments_never_panic_or_join_garbage() {
        let mut c = Collector::default();
        let mut singles = 0;
        for (tag, seg) in [
            ([0, 1, 0, 2], vec![0x45u8; 10]),
            ([0, 1, 1, 2], vec![0x45u8; 3]),
            ([0, 2, 0, 3], vec![]),
            ([0, 2, 1, 3], vec![0x60; 41]),
            ([0, 2, 2, 3], vec![0x60; 2]),
            ([9, 9, 7, 2], vec![1, 2, 3]),
        ] {
            let step = c.push(tag, &seg, &mut |_: &[u8]| singles += 1);
            assert_eq!(step, Step::Held);
        }
        c.release(&mut |_: &[u8]| singles += 1);
        assert_eq!(singles, 6);
    }
}
