//! The inside of the tunnel: the TUN device, behind a small trait so that
//! tests can use an in-memory device.

use std::future::Future;
use std::io;

pub mod memory;
pub mod tun;

/// A packet device: one IP packet per `recv`/`send`.
pub trait Inside: Send + Sync + 'static {
    /// Waits for the next packet and copies it into `buf`; returns its length.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Hands one packet to the device.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}
