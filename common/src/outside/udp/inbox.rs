//! A session's inbox on the server: the datagram batches the shared socket
//! read for it, waiting for its relay. Bounded in bytes, not in batches (a
//! batch is one datagram or a 64 KiB GRO aggregate): beyond the bound the
//! socket's reader drops the session's own datagrams, as a router drops at a
//! full queue, so a session whose relay falls behind loses datagrams (its
//! inner TCP backs off) instead of queueing milliseconds of them in front of
//! every ping and DNS answer. It never holds up another session.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    max_bytes: usize,
}

/// The session relay's end.
#[derive(Debug)]
pub struct InboxRx {
    rx: mpsc::Receiver<Vec<RecvBatch>>,
    queued: Arc<AtomicUsize>,
}

/// An inbox of about `max_bytes` bytes.
pub fn inbox(max_bytes: usize) -> (InboxTx, InboxRx) {
    let (tx, rx) = mpsc::channel(MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        InboxTx {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        InboxRx { rx, queued },
    )
}

fn weight(batches: &[RecvBatch]) -> usize {
    batches.iter().map(|b| b.data.len()).sum()
}

impl InboxTx {
    /// Queues `batches`, or gives them back when the inbox is full (an
    /// empty inbox takes one message, however large) or its relay is gone.
    pub fn try_send(&self, batches: Vec<RecvBatch>) -> Result<(), Vec<RecvBatch>> {
        let n = weight(&batches);
        let queued = self.queued.fetch_add(n, Ordering::AcqRel);
        if queued > 0 && queued + n > self.max_bytes {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(batches);
        }
        self.tx.try_send(batches).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            }
        })
    }
}

impl InboxRx {
    /// The next message; None when the reader is gone.
    pub async fn recv(&mut self) -> Option<Vec<RecvBatch>> {
        let batches = self.rx.recv().await?;
        self.queued.fetch_sub(weight(&batches), Ordering::AcqRel);
        Some(batches)
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

    #[tokio::test]
    async fn bounded_in_bytes_and_freed_as_the_relay_reads() {
        let (tx, mut rx) = inbox(100_000);
        // One message always passes an empty inbox, however large.
        assert!(tx.try_send(batch(200_000)).is_ok());
        assert!(tx.try_send(batch(10)).is_err(), "over the bound");
        assert_eq!(rx.recv().await.map(|b| weight(&b)), Some(200_000));
        for _ in 0..3 {
            assert!(tx.try_send(batch(30_000)).is_ok());
        }
        assert!(tx.try_send(batch(30_000)).is_err(), "120,000 > 100,000");
        assert!(rx.try_recv().is_some());
        assert!(tx.try_send(batch(30_000)).is_ok(), "room again");
        drop(rx);
        assert!(tx.try_send(batch(1)).is_err(), "relay gone");
    }
}
