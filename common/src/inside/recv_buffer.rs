//! Receive buffers for device reads that are reused, not allocated per packet.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::Inside;

/// Packets smaller than a quarter of the buffer are copied into an
/// allocation of their own: a small packet waiting in a slow client's queue
/// then holds a few bytes, not a whole receive buffer (at most four times
/// what the queue counts), and the buffer is read into again at once.
const COPY_BELOW_FRACTION: usize = 4;

/// Idle buffers a reader keeps for reuse.
const POOL_LIMIT: usize = 64;

/// Reads packets from a device. A large packet leaves in the buffer it was
/// read into, wrapped in a `Bytes`; when the last reference is dropped
/// (usually on another thread, once the packet is written to its session),
/// the buffer goes back to this reader's pool. Buffers are zeroed once, when
/// first made, never per packet.
#[derive(Debug)]
pub struct RecvBuffer {
    max: usize,
    current: Option<Vec<u8>>,
    pool: Arc<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    fn take(&self) -> Option<Vec<u8>> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < POOL_LIMIT {
            free.push(buf);
        }
    }
}

/// A received packet in a pooled buffer.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

impl RecvBuffer {
    /// A reader for packets of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            current: None,
            pool: Arc::default(),
        }
    }

    /// Reads the next packet from `inside`.
    pub async fn recv<I: Inside>(&mut self, inside: &I) -> io::Result<Bytes> {
        let mut buf = match self.current.take().or_else(|| self.pool.take()) {
            Some(buf) => buf,
            None => vec![0; self.max],
        };
        let n = match inside.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                self.current = Some(buf);
                return Err(e);
            }
        };
        if n < self.max / COPY_BELOW_FRACTION {
            let packet = Bytes::copy_from_slice(&buf[..n]);
            self.current = Some(buf);
            return Ok(packet);
        }
        Ok(Bytes::from_owner(Pooled {
            buf,
            len: n,
            pool: self.pool.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inside::memory;

    #[tokio::test]
    async fn buffers_come_back_to_the_pool_and_small_packets_are_copied() {
        let (inside, peer) = memory::pair(8);
        let mut reader = RecvBuffer::new(9000);
        peer.inject.send(Bytes::from(vec![1; 5000])).await.unwrap();
        peer.inject.send(Bytes::from(vec![2; 6000])).await.unwrap();
        const { assert!(5000 >= 9000 / COPY_BELOW_FRACTION) };
        let a = reader.recv(&inside).await.unwrap();
        let b = reader.recv(&inside).await.unwrap();
        assert_eq!((a.len(), a[0], b.len(), b[0]), (5000, 1, 6000, 2));
        assert_eq!(reader.pool.free.lock().unwrap().len(), 0);
        drop(a);
        drop(b);
        assert_eq!(reader.pool.free.lock().unwrap().len(), 2);
        // The next large packet reuses a pooled buffer; a small one leaves
        // the buffer with the reader.
        peer.inject.send(Bytes::from(vec![3; 7000])).await.unwrap();
        let c = reader.recv(&inside).await.unwrap();
        assert_eq!(reader.pool.free.lock().unwrap().len(), 1);
        peer.inject.send(Bytes::from(vec![4; 2000])).await.unwrap();
        let d = reader.recv(&inside).await.unwrap();
        assert_eq!((c.len(), c[0], d.len(), d[0]), (7000, 3, 2000, 4));
        assert_eq!(reader.pool.free.lock().unwrap().len(), 0);
        assert!(reader.current.is_some());
    }
}
