//! The queue of packets waiting for the outside, bounded in bytes as well as
//! in packets: a 64 KiB offloaded packet weighs what it is. Small interactive
//! packets (pings, DNS, bare TCP acknowledgements) take a lane of their own
//! that the relay empties first, so a bulk transfer does not delay them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

#[derive(Debug, Default)]
struct Shared {
    queued: AtomicUsize,
    room: Notify,
}

/// Sending half, cloned by every producer.
#[derive(Debug, Clone)]
pub struct QueueTx {
    tx: mpsc::Sender<Bytes>,
    urgent: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    max_bytes: usize,
}

/// Receiving half, owned by the relay.
#[derive(Debug)]
pub struct QueueRx {
    rx: mpsc::Receiver<Bytes>,
    urgent: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

/// Packets the urgent lane holds; it carries only small packets.
const URGENT_PACKETS: usize = 256;

/// A queue of at most `packets` packets and about `max_bytes` bytes.
pub fn channel(packets: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(packets);
    let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_PACKETS);
    let shared = Arc::new(Shared::default());
    (
        QueueTx {
            tx,
            urgent: urgent_tx,
            shared: shared.clone(),
            max_bytes,
        },
        QueueRx {
            rx,
            urgent: urgent_rx,
            shared,
        },
    )
}

/// Why a packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The queue is at its packet or byte limit.
    Full,
    /// The receiver is gone.
    Closed,
}

impl QueueTx {
    fn over_budget(&self, len: usize) -> bool {
        // One packet may always pass an empty queue, however large.
        let queued = self.shared.queued.load(Ordering::Relaxed);
        queued > 0 && queued + len > self.max_bytes
    }

    /// Queues a small interactive packet in the urgent lane, without waiting.
    pub fn try_send_urgent(&self, packet: Bytes) -> Result<(), Full> {
        self.urgent.try_send(packet).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Full::Full,
            mpsc::error::TrySendError::Closed(_) => Full::Closed,
        })
    }

    /// Queues a packet without waiting; drops it when the queue is full.
    pub fn try_send(&self, packet: Bytes) -> Result<(), Full> {
        let len = packet.len();
        if self.over_budget(len) {
            return Err(Full::Full);
        }
        self.shared.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(packet).map_err(|e| {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => Full::Full,
                mpsc::error::TrySendError::Closed(_) => Full::Closed,
            }
        })
    }

    /// Queues a packet, waiting while the queue is full (for a single
    /// producer that should slow down rather than drop: the client's device reader).
    pub async fn send(&self, packet: Bytes) -> Result<(), Full> {
        let len = packet.len();
        while self.over_budget(len) {
            if self.tx.is_closed() {
                return Err(Full::Closed);
            }
            // Wait until the relay takes something off (a wakeup that came
            // before this wait is kept as a permit, so none is lost).
            self.shared.room.notified().await;
        }
        // Count the bytes only once the packet surely goes in, so a send
        // cancelled while waiting for a slot leaves the count right.
        let permit = self.tx.reserve().await.map_err(|_| Full::Closed)?;
        self.shared.queued.fetch_add(len, Ordering::Relaxed);
        permit.send(packet);
        Ok(())
    }
}

impl QueueRx {
    fn taken(&self, packet: Bytes) -> Bytes {
        self.shared
            .queued
            .fetch_sub(packet.len(), Ordering::Relaxed);
        self.shared.room.notify_one();
        packet
    }

    /// Waits for the next packet, urgent ones first; `None` when every sender is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            Some(p) = self.urgent.recv() => Some(p),
            p = self.rx.recv() => p.map(|p| self.taken(p)),
        }
    }

    /// The next packet if one is ready, urgent ones first.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        if let Ok(p) = self.urgent.try_recv() {
            return Some(p);
        }
        let p = self.rx.try_recv().ok()?;
        Some(self.taken(p))
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn byte_budget_drops_what_does_not_fit() {
        let (tx, mut rx) = channel(100, 3000);
        tx.try_send(Bytes::from(vec![0u8; 2000])).unwrap();
        assert_eq!(tx.try_send(Bytes::from(vec![0u8; 2000])), Err(Full::Full));
        tx.try_send(Bytes::from(vec![0u8; 500])).unwrap();
        assert_eq!(rx.queued_bytes(), 2500);
        assert_eq!(rx.recv().await.unwrap().len(), 2000);
        assert_eq!(rx.queued_bytes(), 500);
        tx.try_send(Bytes::from(vec![0u8; 2000])).unwrap();
    }

    #[tokio::test]
    async fn one_large_packet_always_fits_an_empty_queue() {
        let (tx, mut rx) = channel(4, 1000);
        tx.try_send(Bytes::from(vec![0u8; 60_000])).unwrap();
        assert_eq!(rx.try_recv().unwrap().len(), 60_000);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn urgent_packets_overtake_bulk() {
        let (tx, mut rx) = channel(100, 1 << 20);
        tx.try_send(Bytes::from_static(b"bulk-1")).unwrap();
        tx.try_send(Bytes::from_static(b"bulk-2")).unwrap();
        tx.try_send_urgent(Bytes::from_static(b"ping")).unwrap();
        assert_eq!(&rx.recv().await.unwrap()[..], b"ping");
        assert_eq!(&rx.try_recv().unwrap()[..], b"bulk-1");
        assert_eq!(rx.queued_bytes(), 6);
    }

    #[tokio::test]
    async fn packet_limit_still_applies() {
        let (tx, _rx) = channel(2, 1_000_000);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(tx.try_send(Bytes::from_static(b"c")), Err(Full::Full));
    }

    #[tokio::test]
    async fn blocking_send_waits_for_room() {
        let (tx, mut rx) = channel(100, 1000);
        tx.send(Bytes::from(vec![0u8; 900])).await.unwrap();
        let sender = tokio::spawn(async move { tx.send(Bytes::from(vec![0u8; 900])).await });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        rx.recv().await.unwrap();
        sender.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 900);
    }
}
