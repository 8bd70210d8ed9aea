//! The TLS stream of a session. rustls runs the handshake; the data phase
//! runs on one of two record layers, chosen per process with
//! `tunnel.record_layer` (the bytes on the wire are standard TLS 1.3 either
//! way, so the two ends need not agree):
//!
//! - `twoway` ([`own`]): rustls's unbuffered handshake hands the traffic keys
//!   over and our record layer (crate::record) seals and opens records in
//!   buffers it reuses;
//! - `rustls` ([`rustls_stream`]): the unbuffered connection that ran the
//!   handshake seals and opens the data records too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::record::RecordError;

mod control;
mod handshake;
mod own;
mod rustls_stream;

pub use handshake::{accept, connect, PeerInfo};
pub use own::OwnStream;
pub use rustls_stream::RustlsStream;

/// rustls errors travel inside I/O errors, as tokio-rustls reports them
/// (crate::tls::rustls_error finds them).
fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn record_error(err: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

fn protocol_error(what: &'static str) -> io::Error {
    tls_error(rustls::Error::General(what.into()))
}

/// A TLS 1.3 stream after the handshake, on either record layer.
#[derive(Debug)]
pub enum SecureStream<T> {
    /// Our record layer.
    Own(OwnStream<T>),
    /// rustls's record layer.
    Rustls(Box<RustlsStream<T>>),
}

impl<T> SecureStream<T> {
    /// The transport underneath.
    pub fn get_ref(&self) -> &T {
        match self {
            Self::Own(s) => s.get_ref(),
            Self::Rustls(s) => s.get_ref(),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Own(s) => Pin::new(s).poll_read(cx, buf),
            Self::Rustls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Own(s) => Pin::new(s).poll_write(cx, data),
            Self::Rustls(s) => Pin::new(&mut **s).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Own(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Rustls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Own(s) => s.is_write_vectored(),
            Self::Rustls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Own(s) => Pin::new(s).poll_flush(cx),
            Self::Rustls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Own(s) => Pin::new(s).poll_shutdown(cx),
            Self::Rustls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
