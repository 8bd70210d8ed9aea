//! The TLS stream of a session, on rustls throughout: its unbuffered
//! connection runs the handshake ([`handshake`]) and then seals and opens
//! the data records ([`SecureStream`]) in buffers we own and reuse, so the
//! relay reads and writes through plain AsyncRead/AsyncWrite.
//!
//! Until version 0.3 twoway protected the data records itself with the keys
//! rustls hands over for kTLS. Measured in `scripts/bench.sh` against this
//! stream, that saved 13-14 % of single-stream throughput and 11 % CPU per GB
//! (two runs of three repetitions, clean link); within the 15 % the project
//! allows for rustls's own, audited record layer, so it went.

use std::io;

mod handshake;
mod stream;

pub use handshake::{accept, connect, PeerInfo};
pub use stream::SecureStream;

/// Largest TLS record on the wire: header, 2^14 bytes of content, and the
/// most RFC 8446 5.2 allows for content type, padding and tag.
pub(crate) const MAX_RECORD: usize = 5 + (1 << 14) + 256;

/// rustls errors travel inside I/O errors, as tokio-rustls reports them
/// (crate::tls::rustls_error finds them).
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn protocol_error(what: &'static str) -> io::Error {
    tls_error(rustls::Error::General(what.into()))
}
