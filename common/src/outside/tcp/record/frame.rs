//! Byte framing of the outside stream: a 4-byte header (type, 24-bit length)
//! followed by the payload. Framing knows nothing of what a payload means.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the frame header on the wire.
pub const HEADER_LEN: usize = 4;
/// Largest payload a frame may carry: a 64 KiB packet plus room for offload metadata.
pub const MAX_PAYLOAD: usize = 65_535 + 256;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Client → server, first frame: protocol version and features (JSON).
    Hello = 0x01,
    /// Server → client: the assignment (JSON).
    Assign = 0x02,
    /// Server → client: the session is refused (JSON), then the server closes.
    Refuse = 0x03,
    /// Either side: keepalive probe; payload echoed in the Pong.
    Ping = 0x04,
    /// Either side: answer to a Ping.
    Pong = 0x05,
    /// Either side: the session ends (JSON reason), then the sender closes.
    Bye = 0x06,
    /// Client → server, when both enabled `udp`: whether data now uses the
    /// UDP channel (1) or this stream (0).
    Path = 0x07,
    /// Server → client, when both enabled `update`: the session's new routes
    /// and DNS (JSON), applied without a reconnect.
    Update = 0x08,
    /// Either side: one IP packet.
    Data = 0x10,
    /// Either side, when both negotiated offload: a 10-byte offload header
    /// and one IP packet of up to 64 KiB that the receiving kernel segments.
    DataOffload = 0x11,
}

impl FrameType {
    /// The frame type for a wire byte, if it is one we know.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Hello,
            0x02 => Self::Assign,
            0x03 => Self::Refuse,
            0x04 => Self::Ping,
            0x05 => Self::Pong,
            0x06 => Self::Bye,
            0x07 => Self::Path,
            0x08 => Self::Update,
            0x10 => Self::Data,
            0x11 => Self::DataOffload,
            _ => return None,
        })
    }
}

/// One decoded frame; the payload shares the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameType,
    /// The payload bytes.
    pub payload: Bytes,
}

/// Why a byte stream is not a valid frame sequence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The type byte is not one of [`FrameType`].
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The length field exceeds [`MAX_PAYLOAD`].
    #[error("frame of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    Oversize(usize),
}

/// Appends one frame to `out`. Panics if `payload` is larger than [`MAX_PAYLOAD`]
/// (a caller bug: packets are bounded by the MTU long before that).
pub fn encode(kind: FrameType, payload: &[u8], out: &mut BytesMut) {
    encode_parts(kind, &[], payload, out);
}

/// Appends one frame whose payload is `head` followed by `body`.
pub fn encode_parts(kind: FrameType, head: &[u8], body: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + head.len() + body.len());
    encode_header(kind, head.len() + body.len(), out);
    out.put_slice(head);
    out.put_slice(body);
}

/// Appends the header of a frame whose `len` payload bytes the caller
/// sends next. Panics if `len` is larger than [`MAX_PAYLOAD`].
pub fn encode_header(kind: FrameType, len: usize, out: &mut BytesMut) {
    assert!(len <= MAX_PAYLOAD, "frame payload too large");
    out.put_u32(((kind as u32) << 24) | len as u32);
}

/// Takes the next complete frame off the front of `buf`, or returns `None` if
/// more bytes are needed. The header is validated before the payload arrives,
/// so an oversize or unknown frame is refused without buffering it.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let type_byte = (header >> 24) as u8;
    let len = (header & 0x00ff_ffff) as usize;
    let kind = FrameType::from_u8(type_byte).ok_or(FrameError::UnknownType(type_byte))?;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Oversize(len));
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Frame { kind, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_several_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        encode(FrameType::Data, b"packet-one", &mut buf);
        encode(FrameType::Ping, b"", &mut buf);
        encode(FrameType::Data, &[7u8; 1400], &mut buf);
        let a = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (a.kind, &a.payload[..]),
            (FrameType::Data, &b"packet-one"[..])
        );
        let b = decode(&mut buf).unwrap().unwrap();
        assert_eq!((b.kind, b.payload.len()), (FrameType::Ping, 0));
        let c = decode(&mut buf).unwrap().unwrap();
        assert_eq!(c.payload.len(), 1400);
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut whole = BytesMut::new();
        encode(FrameType::Data, b"abcdef", &mut whole);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part).unwrap(), None, "cut at {cut}");
            part.extend_from_slice(&whole[cut..]);
            assert_eq!(&decode(&mut part).unwrap().unwrap().payload[..], b"abcdef");
        }
    }

    #[test]
    fn unknown_type_is_refused() {
        let mut buf = BytesMut::from(&[0x7f, 0, 0, 1, 0][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::UnknownType(0x7f)));
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let len = (MAX_PAYLOAD + 1) as u32;
        let header = (0x10u32 << 24) | len;
        let mut buf = BytesMut::from(&header.to_be_bytes()[..]);
        assert_eq!(decode(&mut buf), Err(FrameError::Oversize(MAX_PAYLOAD + 1)));
    }

    #[test]
    fn max_payload_is_accepted() {
        let mut buf = BytesMut::new();
        encode(FrameType::Data, &vec![1u8; MAX_PAYLOAD], &mut buf);
        assert_eq!(
            decode(&mut buf).unwrap().unwrap().payload.len(),
            MAX_PAYLOAD
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [FrameType; 9] = [
        FrameType::DataOffload,
        FrameType::Hello,
        FrameType::Assign,
        FrameType::Refuse,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Bye,
        FrameType::Data,
        FrameType::Update,
    ];

    proptest! {
        /// Any sequence of frames survives encoding and decoding, however the
        /// bytes are cut into reads.
        #[test]
        fn frames_round_trip_across_any_split(
            frames in proptest::collection::vec((0usize..TYPES.len(), proptest::collection::vec(any::<u8>(), 0..3000)), 0..8),
            cut in 0usize..20_000,
        ) {
            let mut wire = BytesMut::new();
            for (t, p) in &frames {
                encode(TYPES[*t], p, &mut wire);
            }
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got.len(), frames.len());
            for (f, (t, p)) in got.iter().zip(&frames) {
                prop_assert_eq!(f.kind, TYPES[*t]);
                prop_assert_eq!(&f.payload[..], &p[..]);
            }
        }

        /// Arbitrary bytes never panic the decoder: they decode, wait, or fail.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }
}
