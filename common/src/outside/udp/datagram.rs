//! The datagram format of the UDP data channel:
//!
//! ```text
//!  0      1      2      3      4              8                       16
//! +------+------+------+------+--------------+-----------------------+------------------------+
//! | 0x01 |  0   |  0   |  0   | session (BE) | counter (64 bits, BE) | AEAD(kind || body) tag |
//! +------+------+------+------+--------------+-----------------------+------------------------+
//! ```
//!
//! The 16-byte header is the AEAD's additional data; the sealed part holds a
//! kind byte and the body. `session` is the server's number for the session
//! (from the assignment), so the server finds the keys without trusting the
//! source address. A receiver checks the header, the replay window, then the
//! AEAD, and only then marks the counter seen.

use super::keys::{KeyError, OpenKeys, SealKeys, TAG_LEN};
use super::replay::ReplayWindow;

/// Length of the clear header.
pub const HEADER_LEN: usize = 16;
/// The first byte of every datagram of this version.
pub const VERSION: u8 = 0x01;
/// Bytes a datagram adds around its body: header, kind, tag.
pub const OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// Largest body: a 64 KiB IP packet.
pub const MAX_BODY: usize = 65_535;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One IP packet.
    Packet = 0x01,
    /// A path probe (client to server); the body is echoed in the reply.
    Probe = 0x02,
    /// The answer to a probe, with the probe's body.
    ProbeReply = 0x03,
    /// One segment of a large TCP packet, behind a 4-byte train tag
    /// (train number u16, index, count); the segment is a complete packet.
    Segment = 0x04,
    /// Server to client: 8 random bytes the client must send back from the
    /// new address the server saw it at, before data goes there.
    Challenge = 0x05,
    /// Client to server: a Challenge's bytes, echoed.
    Response = 0x06,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Packet,
            0x02 => Self::Probe,
            0x03 => Self::ProbeReply,
            0x04 => Self::Segment,
            0x05 => Self::Challenge,
            0x06 => Self::Response,
            _ => return None,
        })
    }
}

/// Why a received datagram was dropped. Every case is silent towards the
/// sender (nothing is answered to a datagram that did not authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Too short, another version, or reserved bits set.
    #[error("not a twoway datagram")]
    Malformed,
    /// The session number is not this session's.
    #[error("datagram for another session")]
    WrongSession,
    /// The counter was seen already or is older than the window.
    #[error("replayed datagram")]
    Replayed,
    /// Key or authentication failure.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// It authenticated but the kind is unknown.
    #[error("unknown datagram kind")]
    UnknownKind,
}

/// The clear header of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The server's session number.
    pub session: u32,
    /// The sender's counter.
    pub counter: u64,
}

impl Header {
    /// Reads the header of `datagram`.
    pub fn parse(datagram: &[u8]) -> Result<Self, DatagramError> {
        if datagram.len() < OVERHEAD || datagram[..4] != [VERSION, 0, 0, 0] {
            return Err(DatagramError::Malformed);
        }
        let mut session = [0u8; 4];
        session.copy_from_slice(&datagram[4..8]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&datagram[8..16]);
        Ok(Self {
            session: u32::from_be_bytes(session),
            counter: u64::from_be_bytes(counter),
        })
    }

    /// The header's 16 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = VERSION;
        h[4..8].copy_from_slice(&self.session.to_be_bytes());
        h[8..16].copy_from_slice(&self.counter.to_be_bytes());
        h
    }
}

/// The sending half of one session's channel.
#[derive(Debug)]
pub struct Sender {
    session: u32,
    keys: SealKeys,
}

impl Sender {
    /// Seals for `session` with `keys`.
    pub fn new(session: u32, keys: SealKeys) -> Self {
        Self { session, keys }
    }

    /// Appends one sealed datagram (`kind`, then `parts` concatenated) to
    /// `out`; returns its length.
    pub fn seal(
        &mut self,
        kind: Kind,
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<usize, KeyError> {
        let counter = self.keys.next_counter()?;
        let start = out.len();
        let header = Header {
            session: self.session,
            counter,
        }
        .encode();
        out.extend_from_slice(&header);
        out.push(kind as u8);
        for p in parts {
            out.extend_from_slice(p);
        }
        let tag = self
            .keys
            .seal(counter, &header, &mut out[start + HEADER_LEN..]);
        out.extend_from_slice(tag.as_ref());
        Ok(out.len() - start)
    }
}

/// The receiving half of one session's channel.
#[derive(Debug)]
pub struct Receiver {
    session: u32,
    keys: OpenKeys,
    replay: ReplayWindow,
    /// Datagrams accepted, and the gaps in their counters (loss, less what
    /// arrived late).
    received: u64,
    lost: u64,
}

/// An authenticated, fresh datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// Its counter.
    pub counter: u64,
    /// What it carries.
    pub kind: Kind,
    /// The body (an IP packet, or a probe's bytes).
    pub body: &'a [u8],
    /// Its counter is higher than any accepted before: only such a datagram
    /// may move the peer's address.
    pub newest: bool,
}

impl Receiver {
    /// Opens datagrams of `session` with `keys`.
    pub fn new(session: u32, keys: OpenKeys) -> Self {
        Self {
            session,
            keys,
            replay: ReplayWindow::default(),
            received: 0,
            lost: 0,
        }
    }

    /// Datagrams accepted so far, and how many are missing between them.
    pub fn stats(&self) -> (u64, u64) {
        (self.received, self.lost)
    }

    /// Checks and decrypts `datagram` in place.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Opened<'a>, DatagramError> {
        let header = Header::parse(datagram)?;
        if header.session != self.session {
            return Err(DatagramError::WrongSession);
        }
        if !self.replay.may_accept(header.counter) {
            return Err(DatagramError::Replayed);
        }
        let (head, sealed) = datagram.split_at_mut(HEADER_LEN);
        let len = self.keys.open(header.counter, head, sealed)?;
        let newest = self.replay.highest().is_none_or(|h| header.counter > h);
        // Authenticated: only now does the counter count as seen.
        let highest = self.replay.highest();
        if !self.replay.accept(header.counter) {
            return Err(DatagramError::Replayed);
        }
        self.received += 1;
        match highest {
            Some(h) if header.counter > h => self.lost += header.counter - h - 1,
            Some(_) => self.lost = self.lost.saturating_sub(1),
            None => self.lost += header.counter,
        }
        let plain = &sealed[..len];
        let kind = Kind::from_u8(plain[0]).ok_or(DatagramError::UnknownKind)?;
        Ok(Opened {
            counter: header.counter,
            kind,
            body: &plain[1..],
            newest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outside::udp::keys::{Role, UdpSecret, EXPORT_LEN, REKEY_AFTER};

    fn pair(rekey: u64) -> (Sender, Receiver) {
        let (tx, _) = UdpSecret::new([9; EXPORT_LEN]).split(Role::Client, rekey);
        let (_, rx) = UdpSecret::new([9; EXPORT_LEN]).split(Role::Server, rekey);
        (Sender::new(77, tx), Receiver::new(77, rx))
    }

    fn sealed(tx: &mut Sender, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = tx.seal(kind, &[body], &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(n, OVERHEAD + body.len());
        out
    }

    #[test]
    fn round_trip_of_each_kind() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        for (kind, body) in [
            (Kind::Packet, &b"\x45 an ip packet"[..]),
            (Kind::Probe, &[1, 2, 3, 4, 5, 6, 7, 8][..]),
            (Kind::ProbeReply, &[][..]),
        ] {
            let mut d = sealed(&mut tx, kind, body);
            let o = rx.open(&mut d).unwrap();
            assert_eq!((o.kind, o.body), (kind, body));
        }
    }

    #[test]
    fn parts_are_concatenated() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let mut out = Vec::new();
        tx.seal(Kind::Packet, &[b"ab", b"", b"cd"], &mut out)
            .unwrap();
        assert_eq!(rx.open(&mut out).unwrap().body, b"abcd");
    }

    #[test]
    fn a_replay_is_refused_and_a_reordered_datagram_is_not() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let first = sealed(&mut tx, Kind::Packet, b"one");
        let second = sealed(&mut tx, Kind::Packet, b"two");
        assert!(rx.open(&mut second.clone()).unwrap().newest);
        assert!(!rx.open(&mut first.clone()).unwrap().newest, "reordered");
        assert_eq!(rx.open(&mut first.clone()), Err(DatagramError::Replayed));
        assert_eq!(rx.open(&mut second.clone()), Err(DatagramError::Replayed));
    }

    #[test]
    fn a_forged_datagram_does_not_burn_its_counter() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let good = sealed(&mut tx, Kind::Packet, b"payload");
        let mut forged = good.clone();
        *forged.last_mut().unwrap() ^= 0x80;
        assert_eq!(
            rx.open(&mut forged),
            Err(DatagramError::Key(KeyError::Forged))
        );
        assert!(
            rx.open(&mut good.clone()).is_ok(),
            "the real one still opens"
        );
    }

    #[test]
    fn header_checks() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let good = sealed(&mut tx, Kind::Packet, b"x");
        for (i, v) in [(0, 0x02), (1, 1), (3, 0x80)] {
            let mut d = good.clone();
            d[i] = v;
            assert_eq!(rx.open(&mut d), Err(DatagramError::Malformed), "byte {i}");
        }
        let mut other = good.clone();
        other[7] ^= 1;
        assert_eq!(rx.open(&mut other), Err(DatagramError::WrongSession));
        assert_eq!(
            rx.open(&mut good[..OVERHEAD - 1].to_vec()),
            Err(DatagramError::Malformed)
        );
        assert_eq!(rx.open(&mut Vec::new()), Err(DatagramError::Malformed));
    }

    #[test]
    fn an_unknown_kind_is_refused_after_authentication() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let mut out = Vec::new();
        // Kind 0x7f sealed by hand: the AEAD accepts it, the kind check does not.
        let counter = tx.keys.next_counter().unwrap();
        let header = Header {
            session: 77,
            counter,
        }
        .encode();
        out.extend_from_slice(&header);
        out.push(0x7f);
        let tag = tx.keys.seal(counter, &header, &mut out[HEADER_LEN..]);
        out.extend_from_slice(tag.as_ref());
        assert_eq!(rx.open(&mut out), Err(DatagramError::UnknownKind));
    }

    #[test]
    fn gaps_count_as_lost_until_they_arrive() {
        let (mut tx, mut rx) = pair(REKEY_AFTER);
        let d: Vec<_> = (0..6)
            .map(|i| sealed(&mut tx, Kind::Packet, &[i]))
            .collect();
        for i in [0, 1, 4] {
            rx.open(&mut d[i].clone()).unwrap();
        }
        assert_eq!(rx.stats(), (3, 2));
        rx.open(&mut d[2].clone()).unwrap();
        assert_eq!(rx.stats(), (4, 1), "a late datagram is not lost");
        let _ = rx.open(&mut d[2].clone());
        assert_eq!(rx.stats(), (4, 1), "a replay changes nothing");
    }

    #[test]
    fn rekeying_is_invisible_to_the_payload() {
        let (mut tx, mut rx) = pair(3);
        for i in 0..50u8 {
            let mut d = sealed(&mut tx, Kind::Packet, &[i; 30]);
            assert_eq!(rx.open(&mut d).unwrap().body, &[i; 30]);
        }
    }
}
