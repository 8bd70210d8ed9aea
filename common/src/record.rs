//! TLS 1.3 record protection (RFC 8446 section 5.2) for the data phase.
//!
//! rustls runs the handshake and hands over the traffic keys (its "kernel
//! connection" interface, made for kTLS); these seal and open records out of
//! place, so each byte is copied once, fused with the cipher, and no record
//! needs an allocation. The bytes on the wire are standard TLS 1.3.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::ConnectionTrafficSecrets;

/// Record header: outer type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Most content one record carries.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest protected body allowed on the wire (content, type, padding, tag).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Largest record on the wire, header included.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;
/// Authentication tag of every TLS 1.3 AEAD.
pub const TAG_LEN: usize = 16;

/// Inner content type: an alert.
pub const ALERT: u8 = 21;
/// Inner content type: a post-handshake message (KeyUpdate, NewSessionTicket).
pub const HANDSHAKE: u8 = 22;
/// Inner content type of application data, and the outer type of every
/// protected record.
pub const APPLICATION_DATA: u8 = 23;

/// A record that cannot be accepted; the connection ends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The handshake agreed on a cipher these records do not implement.
    #[error("unsupported cipher suite for record protection")]
    UnsupportedSuite,
    /// A record header that does not announce protected data.
    #[error("unexpected record header {0:02x?}")]
    Header([u8; 3]),
    /// A record longer than TLS allows, or too short to hold a tag.
    #[error("record length {0} out of range")]
    Length(usize),
    /// Authentication failed: corrupted, forged or replayed.
    #[error("record failed authentication")]
    Authentication,
    /// A protected record without an inner content type.
    #[error("record without content type")]
    NoContentType,
    /// A record too long for the room it is sealed into.
    #[error("record content of {0} bytes too large")]
    TooLarge(usize),
}

/// Bytes one record carrying `content` bytes takes on the wire.
pub const fn sealed_len(content: usize) -> usize {
    HEADER_LEN + content + 1 + TAG_LEN
}

/// Length of the whole record at the front of `buf` once its header has
/// arrived (the record itself may still be incomplete).
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    // The legacy version (bytes 1-2) is ignored, as RFC 8446 5.1 asks.
    if header[0] != APPLICATION_DATA {
        return Err(RecordError::Header([header[0], header[1], header[2]]));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
        return Err(RecordError::Length(len));
    }
    Ok(Some(HEADER_LEN + len))
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key =
            UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce: the IV XOR the sequence number (RFC 8446 5.3).
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        // Keys are replaced long before 2^64 records (see Sealer::records).
        self.seq = self.seq.wrapping_add(1);
        Nonce::assume_unique_for_key(nonce)
    }
}

/// Protects outgoing records.
pub struct Sealer(Keys);

impl Sealer {
    /// A sealer for the traffic secret rustls derived, starting at `seq`.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        Keys::new(secrets, seq).map(Self)
    }

    /// Records sealed with this key so far (its sequence number).
    pub fn records(&self) -> u64 {
        self.0.seq
    }

    /// Seals `content` (at most MAX_PLAINTEXT bytes) of inner type
    /// `content_type` into the front of `out`, which must hold
    /// `sealed_len(content.len())` bytes. Returns the bytes written.
    pub fn seal(
        &mut self,
        content_type: u8,
        content: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        let total = sealed_len(content.len());
        if content.len() > MAX_PLAINTEXT || out.len() < total {
            return Err(RecordError::TooLarge(content.len()));
        }
        let body = u16::try_from(total - HEADER_LEN).map_err(|_| RecordError::TooLarge(total))?;
        let [hi, lo] = body.to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        let (head, rest) = out[..total].split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header);
        let (sealed, type_and_tag) = rest.split_at_mut(content.len());
        let nonce = self.0.next_nonce();
        self.0
            .key
            .seal_out_of_place_scatter(
                nonce,
                Aad::from(header),
                content,
                sealed,
                &[content_type],
                type_and_tag,
            )
            .map_err(|_| RecordError::TooLarge(content.len()))?;
        Ok(total)
    }
}

/// Opens incoming records.
pub struct Opener(Keys);

impl Opener {
    /// An opener for the traffic secret rustls derived, starting at `seq`.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        Keys::new(secrets, seq).map(Self)
    }

    /// Room `open` needs for a record of `record_len` bytes.
    pub const fn room(record_len: usize) -> usize {
        record_len - HEADER_LEN - TAG_LEN
    }

    /// Opens the complete record `record` (header included, as `record_len`
    /// measured it) into the front of `out`, which must hold
    /// `Opener::room(record.len())` bytes. Returns the inner content type and
    /// the content length; `out` beyond the content is scratch.
    pub fn open(&mut self, record: &[u8], out: &mut [u8]) -> Result<(u8, usize), RecordError> {
        if !(sealed_len(0)..=sealed_len(MAX_PLAINTEXT)).contains(&record.len()) {
            // Content, type byte and padding may not exceed 2^14 + 1 bytes.
            return Err(RecordError::Length(record.len().saturating_sub(HEADER_LEN)));
        }
        let (header, body) = record.split_at(HEADER_LEN);
        let (sealed, tag) = body.split_at(body.len() - TAG_LEN);
        let out = out
            .get_mut(..sealed.len())
            .ok_or(RecordError::TooLarge(sealed.len()))?;
        let nonce = self.0.next_nonce();
        self.0
            .key
            .open_separate_gather(nonce, Aad::from(header), sealed, tag, out)
            .map_err(|_| RecordError::Authentication)?;
        // Content, then the type byte, then zero padding.
        let at = out
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::NoContentType)?;
        Ok((out[at], at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(byte: u8) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([byte; 32]),
            iv: rustls::crypto::cipher::Iv::from([byte; 12]),
        }
    }

    fn seal(s: &mut Sealer, content_type: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![0; sealed_len(content.len())];
        let n = s.seal(content_type, content, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn open(o: &mut Opener, record: &[u8]) -> Result<(u8, Vec<u8>), RecordError> {
        assert_eq!(record_len(record), Ok(Some(record.len())));
        let mut out = vec![0; Opener::room(record.len())];
        let (t, n) = o.open(record, &mut out)?;
        Ok((t, out[..n].to_vec()))
    }

    #[test]
    fn round_trip_in_sequence() {
        let (mut s, mut o) = (
            Sealer::new(&secrets(1), 7).unwrap(),
            Opener::new(&secrets(1), 7).unwrap(),
        );
        for content in [&b""[..], b"hello", &[0u8; MAX_PLAINTEXT]] {
            let r = seal(&mut s, APPLICATION_DATA, content);
            assert_eq!(
                open(&mut o, &r).unwrap(),
                (APPLICATION_DATA, content.to_vec())
            );
        }
        let r = seal(&mut s, ALERT, &[1, 0]);
        assert_eq!(open(&mut o, &r).unwrap(), (ALERT, vec![1, 0]));
        assert_eq!(s.records(), 11);
    }

    #[test]
    fn wrong_key_order_or_tampering_fail() {
        let mut s = Sealer::new(&secrets(1), 0).unwrap();
        let first = seal(&mut s, APPLICATION_DATA, b"one");
        let second = seal(&mut s, APPLICATION_DATA, b"two");
        // Replayed or reordered: the sequence number no longer matches.
        let mut o = Opener::new(&secrets(1), 0).unwrap();
        assert_eq!(open(&mut o, &second), Err(RecordError::Authentication));
        let mut o = Opener::new(&secrets(2), 0).unwrap();
        assert_eq!(open(&mut o, &first), Err(RecordError::Authentication));
        let mut bad = first.clone();
        bad[HEADER_LEN] ^= 1;
        let mut o = Opener::new(&secrets(1), 0).unwrap();
        assert_eq!(open(&mut o, &bad), Err(RecordError::Authentication));
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(record_len(&[23, 3]), Ok(None));
        assert_eq!(
            record_len(&[22, 3, 3, 0, 20]),
            Err(RecordError::Header([22, 3, 3]))
        );
        assert_eq!(
            record_len(&[23, 3, 1, 0, 20]),
            Ok(Some(25)),
            "the legacy version is ignored"
        );
        assert_eq!(record_len(&[23, 3, 3, 0, 16]), Err(RecordError::Length(16)));
        let too_long = (MAX_CIPHERTEXT + 1) as u16;
        let [hi, lo] = too_long.to_be_bytes();
        assert_eq!(
            record_len(&[23, 3, 3, hi, lo]),
            Err(RecordError::Length(MAX_CIPHERTEXT + 1))
        );
        assert_eq!(record_len(&[23, 3, 3, 0, 17]), Ok(Some(22)));
    }

    #[test]
    fn too_much_padding_is_refused() {
        // 2^14 content + type byte + 1 byte of padding: one byte too many.
        let mut s = Sealer::new(&secrets(4), 0).unwrap();
        let mut content = vec![7u8; MAX_PLAINTEXT];
        content.push(APPLICATION_DATA);
        let mut out = vec![0; sealed_len(content.len())];
        let n = MAX_PLAINTEXT + 1 + 1 + TAG_LEN;
        let header = {
            let [hi, lo] = (n as u16).to_be_bytes();
            [APPLICATION_DATA, 3, 3, hi, lo]
        };
        out[..HEADER_LEN].copy_from_slice(&header);
        let (body, extra) = out[HEADER_LEN..].split_at_mut(content.len());
        let nonce = s.0.next_nonce();
        s.0.key
            .seal_out_of_place_scatter(nonce, Aad::from(header), &content, body, &[0], extra)
            .unwrap();
        let mut o = Opener::new(&secrets(4), 0).unwrap();
        let mut room = vec![0; Opener::room(out.len())];
        assert_eq!(o.open(&out, &mut room), Err(RecordError::Length(n)));
    }

    #[test]
    fn oversized_content_is_refused() {
        let mut s = Sealer::new(&secrets(1), 0).unwrap();
        let mut out = vec![0; sealed_len(MAX_PLAINTEXT + 1)];
        let err = s.seal(APPLICATION_DATA, &[0; MAX_PLAINTEXT + 1], &mut out);
        assert_eq!(err, Err(RecordError::TooLarge(MAX_PLAINTEXT + 1)));
        assert_eq!(s.records(), 0);
    }

    #[test]
    fn padding_is_stripped_and_all_zero_is_refused() {
        // Build padded records by sealing content that ends in the type byte
        // followed by zeros, as another TLS stack may send them.
        let mut s = Sealer::new(&secrets(3), 0).unwrap();
        let mut o = Opener::new(&secrets(3), 0).unwrap();
        let r = seal(&mut s, 0, &[b'x', APPLICATION_DATA, 0, 0]);
        assert_eq!(open(&mut o, &r).unwrap(), (APPLICATION_DATA, b"x".to_vec()));
        let r = seal(&mut s, 0, &[0, 0]);
        assert_eq!(open(&mut o, &r), Err(RecordError::NoContentType));
    }
}
