//! The TLS connection over TCP: a byte stream carrying frames ([`record`]),
//! with the read buffer that survives from the handshake into the relay
//! ([`Outside`]); the socket's options ([`tune`]) and what the kernel says
//! of the connection ([`info`]).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::message::{self, MessageError};
use record::frame::{self, Frame, FrameError, FrameType};

pub mod info;
pub mod record;
pub mod tune;

/// Read buffer growth step: large reads let one syscall carry many frames.
pub const READ_CHUNK: usize = 128 * 1024;
/// Read room during the handshake, when only small control messages come.
const HANDSHAKE_READ: usize = 4 * 1024;

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
