//! A channel-backed [`Inside`] for tests: what the test injects is "read from
//! the device", what the relay writes arrives at the test.

use std::io;

use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};

use super::Inside;

/// The device half, given to the code under test.
#[derive(Debug)]
pub struct MemoryInside {
    from_test: Mutex<mpsc::Receiver<Bytes>>,
    to_test: mpsc::Sender<Bytes>,
}

/// The test's half: inject packets, observe written packets.
#[derive(Debug)]
pub struct MemoryPeer {
    /// Packets sent here come out of [`MemoryInside::recv`].
    pub inject: mpsc::Sender<Bytes>,
    /// Packets passed to [`MemoryInside::send`] arrive here.
    pub written: mpsc::Receiver<Bytes>,
}

/// A connected pair with room for `capacity` packets each way.
pub fn pair(capacity: usize) -> (MemoryInside, MemoryPeer) {
    let (inject, from_test) = mpsc::channel(capacity);
    let (to_test, written) = mpsc::channel(capacity);
    (
        MemoryInside {
            from_test: Mutex::new(from_test),
            to_test,
        },
        MemoryPeer { inject, written },
    )
}

impl Inside for MemoryInside {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let packet = self
            .from_test
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "memory device closed"))?;
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Ok(n)
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.to_test
            .send(Bytes::copy_from_slice(packet))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "memory device closed"))
    }
}
