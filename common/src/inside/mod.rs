//! The inside of the tunnel: the TUN device, behind a small trait so that
//! tests can use an in-memory device.

use std::future::Future;
use std::io;

use bytes::BytesMut;

#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod reader;
mod recv_buffer;
pub mod tun;

pub use recv_buffer::RecvBuffer;

/// A packet device: one packet per `recv`/`send`. With offload on, every
/// packet is preceded by a 10-byte offload header (see [`crate::offload`]).
pub trait Inside: Send + Sync + 'static {
    /// Waits for the next packet and copies it into `buf`; returns its length.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Hands one packet to the device.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Hands one packet given in two parts (header and body) to the device.
    fn send_parts(&self, head: &[u8], body: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut joined = Vec::with_capacity(head.len() + body.len());
            joined.extend_from_slice(head);
            joined.extend_from_slice(body);
            self.send(&joined).await
        }
    }
    /// Writes packets that each sit behind an offload header (offload devices
    /// only); a device with GRO may merge a TCP flow's packets into one write.
    fn send_batch(&self, bufs: &mut [BytesMut]) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            for b in bufs.iter() {
                self.send(b).await?;
            }
            Ok(())
        }
    }
    /// Whether packets carry the offload header.
    fn offload(&self) -> bool {
        false
    }
}

/// Largest read from a device: a 64 KiB offloaded packet and its header.
pub fn max_read(inside: &impl Inside, mtu: u16) -> usize {
    if inside.offload() {
        crate::offload::HEADER_LEN + crate::offload::MAX_PACKET
    } else {
        usize::from(mtu) + 64
    }
}
