//! A session's inbox on the server: the datagram batches the shared socket
//! read for it, waiting for its relay. Bounded in bytes, not in batches (a
//! batch is one datagram or a 64 KiB GRO aggregate): beyond the bound the
//! socket's reader drops the session's own datagrams, as a router drops at a
//! full queue, so a session whose relay falls behind loses datagrams (its
//! inner TCP backs off) instead of queueing milliseconds of them in front of
//! every ping and DNS answer. It never holds up another session.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::socket::RecvBatch;

/// Messages (each the batches of one receive call) queued at most.
const MESSAGES: usize = 256;

/// The socket reader's end.
#[derive(Debug)]
pub struct InboxTx {
    tx: mpsc::Sender<Vec<RecvBatch>>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    max_bytes: usize,
}

/// The session relay's end.
#[derive(Debug)]
pub struct InboxRx {
    rx: mpsc::Receiver<Vec<RecvBatch>>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

/// An inbox of about `max_bytes` bytes.
pub fn inbox(max_bytes: usize) -> (InboxTx, InboxRx) {
    let (tx, rx) = mpsc::channel(MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        InboxTx {
            tx,
            queued: queued.clone(),
            dropped: dropped.clone(),
            max_bytes,
        },
        InboxRx {
            rx,
            queued,
            dropped,
        },
    )
}

fn weight(batches: &[RecvBatch]) -> usize {
    batches.iter().map(|b| b.data.len()).sum()
}

impl InboxTx {
    /// Queues what fits of `batches`, in order, and drops the rest (an
    /// empty inbox takes the first batch, however large); all of them when
    /// the relay is gone. Gives back how many were dropped.
    pub fn send_or_drop(&self, mut batches: Vec<RecvBatch>) -> usize {
        let queued = self.queued.load(Ordering::Acquire);
        let (mut n, mut taken) = (0, 0);
        for b in &batches {
            let w = b.data.len();
            if (queued > 0 || taken > 0) && queued + n + w > self.max_bytes {
                break;
            }
            n += w;
            taken += 1;
        }
        let mut rest = batches.split_off(taken);
        if !batches.is_empty() {
            self.queued.fetch_add(n, Ordering::AcqRel);
            if let Err(e) = self.tx.try_send(batches) {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                let (mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) = e;
                rest.extend(b);
            }
        }
        let datagrams: usize = rest.iter().map(|b| b.count()).sum();
        self.dropped.fetch_add(datagrams as u64, Ordering::Relaxed);
        rest.len()
    }
}

impl InboxRx {
    /// The next message; None when the reader is gone.
    pub async fn recv(&mut self) -> Option<Vec<RecvBatch>> {
        let batches = self.rx.recv().await?;
        self.queued.fetch_sub(weight(&batches), Ordering::AcqRel);
        Some(batches)
    }

    /// Datagrams dropped so far because the inbox was full: gaps in the
    /// peer's counters that the path did not cause.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<RecvBatch>> {
        let batches = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(weight(&batches), Ordering::AcqRel);
        Some(batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn batch(len: usize) -> Vec<RecvBatch> {
        vec![RecvBatch {
            from: "192.0.2.1:9".parse().unwrap(),
            to: None,
            data: BytesMut::zeroed(len),
            stride: len,
        }]
    }

    fn batches(n: usize, len: usize) -> Vec<RecvBatch> {
        (0..n).flat_map(|_| batch(len)).collect()
    }

    #[tokio::test]
    async fn bounded_in_bytes_batch_by_batch_and_freed_as_the_relay_reads() {
        let (tx, mut rx) = inbox(100_000);
        // The first batch always passes an empty inbox, however large.
        assert_eq!(tx.send_or_drop(batch(200_000)), 0);
        assert_eq!(tx.send_or_drop(batch(10)), 1, "over the bound");
        assert_eq!(rx.recv().await.map(|b| weight(&b)), Some(200_000));
        // What fits of one receive call goes in, the rest is dropped.
        assert_eq!(tx.send_or_drop(batches(5, 30_000)), 2);
        assert_eq!(
            tx.send_or_drop(batch(30_000)),
            1,
            "90,000 + 30,000 > 100,000"
        );
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(3));
        assert_eq!(tx.send_or_drop(batches(2, 30_000)), 0, "room again");
        // An empty inbox takes its first batch, and only what fits after it.
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(2));
        assert_eq!(tx.send_or_drop(batches(3, 64_000)), 2);
        assert_eq!(rx.dropped(), 1 + 2 + 1 + 2, "datagrams dropped");
        let dropped = rx.dropped.clone();
        drop(rx);
        assert_eq!(tx.send_or_drop(batches(2, 1)), 2, "relay gone");
        assert_eq!(dropped.load(Ordering::Relaxed), 8);
    }
}
