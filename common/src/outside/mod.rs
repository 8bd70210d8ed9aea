//! The outside of the tunnel: a byte stream (TLS over TCP) carrying frames,
//! with the read buffer that survives from the handshake into the relay;
//! and beside it the UDP data channel ([`udp`]).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, Frame, FrameError, FrameType};

pub mod tcp_info;
pub mod udp;
use crate::message::{self, MessageError};

/// Read buffer growth step: large reads let one syscall carry many frames.
pub const READ_CHUNK: usize = 128 * 1024;
/// Read room during the handshake, when only small control messages come.
const HANDSHAKE_READ: usize = 4 * 1024;

/// Unsent bytes the kernel may hold per connection before it stops taking
/// more: enough to keep the link busy, little enough that a ping queued
/// behind a bulk transfer waits microseconds, not milliseconds.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Congestion control of the outside connection unless configured
/// (`tunnel.congestion`): chosen by what the connection carries
/// ([`tcp_info::TcpHandle::used_for`]).
pub const DEFAULT_CONGESTION: &str = CONGESTION_AUTO;
/// `tunnel.congestion` value that lets twoway choose.
pub const CONGESTION_AUTO: &str = "auto";
/// `auto` while data crosses a clean, busy path: CUBIC. BBR (v1) drops its
/// window to four packets for 200 ms every ten seconds to measure the path's
/// round trip, and every flow inside the tunnel stalls with it (pings through
/// a loaded tunnel jumped from 4 to 8-9 ms at each probe).
pub const AUTO_CLEAN: &str = "cubic";
/// `auto` otherwise (UDP blocked, `transport = "tcp"`, before UDP is known to
/// work): BBR, which does not take random loss for congestion. Under 1 %
/// loss at 30 ms CUBIC is held to a few Mbit/s (about MSS/RTT x 1.2/sqrt(p)).
pub const AUTO_FALLBACK: &str = "bbr";

/// Whether `name` can be a TCP congestion control name ("" means the system
/// default).
pub fn valid_congestion(name: &str) -> bool {
    name.len() < 16 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Socket options for the outside TCP connection: no Nagle delay (we
/// coalesce ourselves), a small unsent backlog, and the congestion control
/// `congestion` (empty: the system's; `auto`: BBR until the relay knows better). Buffer sizes are left to the kernel's
/// autotuning, which follows the bandwidth-delay product.
pub fn tune(tcp: &tokio::net::TcpStream, congestion: &str) {
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(tcp);
    let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let congestion = if congestion == CONGESTION_AUTO {
        AUTO_FALLBACK
    } else {
        congestion
    };
    if !congestion.is_empty() {
        if let Err(e) = sock.set_tcp_congestion(congestion.as_bytes()) {
            tracing::warn!(
                "cannot use TCP congestion control {congestion:?} (key `tunnel.congestion`): {e}"
            );
        }
    }
}

/// A failure on the outside stream.
#[derive(Debug, thiserror::Error)]
pub enum OutsideError {
    /// The stream failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream.
    #[error("connection closed by peer")]
    Closed,
    /// Nothing arrived in time.
    #[error("no data from peer for {0:?}")]
    Timeout(Duration),
    /// Bytes that are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame that is not a valid control message.
    #[error("bad {kind:?} message: {source}")]
    Message {
        /// The frame type.
        kind: FrameType,
        /// What is wrong with it.
        source: MessageError,
    },
    /// An offload header the kernel must not see.
    #[error("{0}")]
    BadOffload(crate::offload::HeaderError),
    /// A valid frame that is not allowed at this point of the session.
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameType),
}

impl OutsideError {
    /// Whether the peer broke the protocol (as opposed to the network failing).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            Self::Frame(_) | Self::Message { .. } | Self::Unexpected(_) | Self::BadOffload(_)
        )
    }
}

/// A framed stream: the transport plus bytes already read but not yet decoded.
#[derive(Debug)]
pub struct Outside<S> {
    /// The transport.
    pub stream: S,
    /// Received bytes not yet decoded into frames.
    pub rbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Outside<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(HANDSHAKE_READ),
        }
    }

    /// Reads the next frame, waiting at most `limit`.
    pub async fn read_frame(&mut self, limit: Duration) -> Result<Frame, OutsideError> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(frame) = frame::decode(&mut self.rbuf)? {
                    return Ok(frame);
                }
                self.rbuf.reserve(HANDSHAKE_READ);
                if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                    return Err(OutsideError::Closed);
                }
            }
        })
        .await
        .map_err(|_| OutsideError::Timeout(limit))?
    }

    /// Reads the next frame and parses it as the control message `kind`.
    pub async fn read_message<T: DeserializeOwned>(
        &mut self,
        kind: FrameType,
        limit: Duration,
    ) -> Result<T, OutsideError> {
        let frame = self.read_frame(limit).await?;
        if frame.kind != kind {
            return Err(OutsideError::Unexpected(frame.kind));
        }
        message::decode(&frame.payload).map_err(|source| OutsideError::Message { kind, source })
    }

    /// Writes one control message and flushes.
    pub async fn write_message<T: Serialize>(
        &mut self,
        kind: FrameType,
        msg: &T,
    ) -> Result<(), OutsideError> {
        let mut out = BytesMut::new();
        frame::encode(kind, &message::encode(msg), &mut out);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }
}
