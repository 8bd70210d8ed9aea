//! Frames gathered for one write: headers and small payloads copied into one
//! buffer, large payloads kept by reference and written from where the
//! device read them (the TLS layer seals them straight from there).

use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::frame::{self, FrameType};

/// Payloads at least this long are referenced, not copied.
pub const BY_REFERENCE: usize = 2048;

/// The frames of one write, in order.
#[derive(Debug, Default)]
pub struct Gather {
    /// Copied bytes.
    copied: BytesMut,
    /// Referenced payloads, each with the length of `copied` before it.
    referenced: Vec<(usize, Bytes)>,
    len: usize,
}

impl Gather {
    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a frame with a payload to copy.
    pub fn frame(&mut self, kind: FrameType, payload: &[u8]) {
        self.frame_parts(kind, &[], payload);
    }

    /// Appends a frame whose payload is `head` then `body`, both copied.
    pub fn frame_parts(&mut self, kind: FrameType, head: &[u8], body: &[u8]) {
        let before = self.copied.len();
        frame::encode_parts(kind, head, body, &mut self.copied);
        self.len += self.copied.len() - before;
    }

    /// Appends a frame whose payload is `head` (copied) then `body`
    /// (referenced if large).
    pub fn frame_shared(&mut self, kind: FrameType, head: &[u8], body: Bytes) {
        if body.len() < BY_REFERENCE {
            return self.frame_parts(kind, head, &body);
        }
        let before = self.copied.len();
        frame::encode_header(kind, head.len() + body.len(), &mut self.copied);
        self.copied.extend_from_slice(head);
        self.len += self.copied.len() - before + body.len();
        self.referenced.push((self.copied.len(), body));
    }

    /// Writes everything gathered, in order, and empties the gather.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        {
            let mut slices = Vec::with_capacity(2 * self.referenced.len() + 1);
            let mut at = 0;
            for (offset, body) in &self.referenced {
                slices.push(IoSlice::new(&self.copied[at..*offset]));
                slices.push(IoSlice::new(body));
                at = *offset;
            }
            slices.push(IoSlice::new(&self.copied[at..]));
            slices.retain(|s| !s.is_empty());
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let n = w.write_vectored(rest).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut rest, n);
            }
        }
        self.clear();
        Ok(())
    }

    /// Forgets what was gathered; a small gather after a burst also gives
    /// the burst's buffer back.
    pub fn clear(&mut self) {
        if self.len < 4096 && self.copied.capacity() > 16 * 1024 {
            self.copied = BytesMut::new();
        }
        self.copied.clear();
        self.referenced.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `step` bytes per call, vectored or not.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_the_same_bytes_as_plain_encoding() {
        let big = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut expected = BytesMut::new();
        frame::encode(FrameType::Ping, b"p", &mut expected);
        frame::encode_parts(FrameType::DataOffload, b"0123456789", &big, &mut expected);
        frame::encode(FrameType::Data, b"small", &mut expected);
        frame::encode(FrameType::Data, &big, &mut expected);
        for step in [1, 7, 4096, usize::MAX] {
            let mut g = Gather::default();
            g.frame(FrameType::Ping, b"p");
            g.frame_shared(FrameType::DataOffload, b"0123456789", big.clone());
            g.frame_shared(FrameType::Data, &[], Bytes::from_static(b"small"));
            g.frame_shared(FrameType::Data, &[], big.clone());
            assert_eq!(g.len(), expected.len());
            let mut w = Trickle {
                got: Vec::new(),
                step,
            };
            g.write_to(&mut w).await.unwrap();
            assert!(w.got == expected[..], "step {step}");
            assert!(g.is_empty());
        }
    }
}
