//! Our own TLS 1.3 record layer for the data phase: rustls runs the
//! handshake (unbuffered API), then hands the traffic keys over and
//! `OwnStream` protects the data records itself (crate::record), reading and
//! writing through buffers it reuses. Compared with rustls's buffered
//! connection this saves two copies and an allocation per received record
//! and one copy per sent record; the bytes on the wire are the same standard
//! TLS 1.3.
//!
//! After the handshake rustls still derives new keys for KeyUpdate messages
//! (both when the peer asks and before our own key reaches its cipher's
//! confidentiality limit).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::handshake::Kernel;
use super::{control, protocol_error, record_error};
use crate::record::{self, Opener, Sealer, ALERT, APPLICATION_DATA};

/// Receive buffer while traffic flows: many records per read.
const BUSY_RX: usize = 256 * 1024;
/// Receive buffer of an idle session (grown when a larger record arrives).
const IDLE_RX: usize = 4 * 1024;
/// Sealed bytes we hold before a write waits for the socket.
const TX_HIGH: usize = 256 * 1024;
/// Pieces of a write shorter than this are staged and sealed together.
const STAGE_BELOW: usize = 2048;

/// A TLS 1.3 stream after the handshake (see the module comment). Writes
/// are sealed into a buffer that reaches the socket on flush (or when it
/// holds TX_HIGH bytes): callers flush after each batch. End of stream
/// without close_notify reads as end of stream; the relay treats both as a
/// lost connection. A KeyUpdate that arrives before the handshake loop hands
/// over (together with the client's Finished) is not supported: rustls keeps
/// its answer to itself; twoway's own peers never send one then.
pub struct OwnStream<T> {
    pub(super) io: T,
    pub(super) kernel: Kernel,
    pub(super) opener: Opener,
    pub(super) sealer: Sealer,
    pub(super) rekey_after: u64,
    pub(super) tx_key_updates: u64,
    /// Received bytes not yet opened: rx[rx_start..rx_end].
    pub(super) rx: Vec<u8>,
    pub(super) rx_start: usize,
    pub(super) rx_end: usize,
    /// The last read filled much of its room: keep the large buffer.
    pub(super) rx_busy: bool,
    /// Opened content not yet delivered: plain[plain_start..].
    pub(super) plain: Vec<u8>,
    pub(super) plain_start: usize,
    /// Sealed bytes not yet written: tx[tx_start..tx_end].
    pub(super) tx: Vec<u8>,
    pub(super) tx_start: usize,
    pub(super) tx_end: usize,
    /// Small pieces of a vectored write, sealed together.
    pub(super) stage: Vec<u8>,
    /// Bytes the last drain wrote: a small one after a burst gives the buffer back.
    pub(super) tx_last: usize,
    /// KeyUpdates received since the last application data.
    pub(super) key_updates_in_a_row: u32,
    /// Our answer to a KeyUpdate request is sealed and no application data
    /// has been sealed since: it answers further requests too (RFC 8446 4.6.3).
    pub(super) key_update_answer_pending: bool,
    /// Warning alerts (user_canceled) since the last application data.
    pub(super) warnings_in_a_row: u32,
    /// The start of a post-handshake message continued in the next record.
    pub(super) hs_partial: Vec<u8>,
    /// A read failed: the connection cannot be read any further.
    pub(super) read_failed: bool,
    /// The peer sent close_notify.
    pub(super) peer_closed: bool,
    /// We sealed close_notify: nothing more may be written.
    pub(super) closing: bool,
}

impl<T> std::fmt::Debug for OwnStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnStream")
            .field("rx_pending", &(self.rx_end - self.rx_start))
            .field("tx_pending", &(self.tx_end - self.tx_start))
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl<T> OwnStream<T> {
    /// The transport underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Replaces our send key after this many records instead of half the
    /// cipher's confidentiality limit (tests use a small number).
    pub fn set_rekey_after(&mut self, records: u64) {
        self.rekey_after = records.max(1);
    }

    /// How often our send key was replaced.
    pub fn tx_key_updates(&self) -> u64 {
        self.tx_key_updates
    }

    /// Seals one record into the send buffer, replacing our key first when it
    /// has sealed its share.
    pub(super) fn seal(&mut self, content_type: u8, content: &[u8]) -> io::Result<()> {
        if self.sealer.records() >= self.rekey_after {
            self.update_tx_key(false)?;
        }
        if content_type == APPLICATION_DATA {
            // Our answer to a KeyUpdate request goes out before this data; a
            // request that arrives from now on needs an answer of its own.
            self.key_update_answer_pending = false;
        }
        self.seal_now(content_type, content)
    }

    pub(super) fn seal_now(&mut self, content_type: u8, content: &[u8]) -> io::Result<()> {
        let need = self.tx_end + record::sealed_len(content.len());
        if self.tx.len() < need {
            self.tx.resize(need.max(2 * self.tx.len()), 0);
        }
        let n = self
            .sealer
            .seal(content_type, content, &mut self.tx[self.tx_end..])
            .map_err(record_error)?;
        self.tx_end += n;
        Ok(())
    }

    /// Seals what is staged (at most one record's worth).
    fn seal_stage(&mut self) -> io::Result<()> {
        if self.stage.is_empty() {
            return Ok(());
        }
        let stage = std::mem::take(&mut self.stage);
        let sealed = self.seal(APPLICATION_DATA, &stage);
        self.stage = stage;
        self.stage.clear();
        sealed
    }

    /// Seals `data` as application data: large pieces straight from where
    /// they are, in records of their own; small ones staged together.
    fn seal_data(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() < STAGE_BELOW {
            if self.stage.len() + data.len() > record::MAX_PLAINTEXT {
                self.seal_stage()?;
            }
            self.stage.extend_from_slice(data);
            return Ok(());
        }
        self.seal_stage()?;
        for chunk in data.chunks(record::MAX_PLAINTEXT) {
            self.seal(APPLICATION_DATA, chunk)?;
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> OwnStream<T> {
    /// Reads more ciphertext from the transport. Ready(0) is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
            if !self.rx_busy && self.rx.len() > IDLE_RX {
                // An idle session keeps a small buffer.
                self.rx = vec![0; IDLE_RX];
            }
        }
        // Room for the record under way, or for many while busy.
        let partial = record::record_len(&self.rx[self.rx_start..self.rx_end])
            .map_err(record_error)?
            .unwrap_or(record::HEADER_LEN);
        let room = if self.rx_busy { BUSY_RX } else { IDLE_RX };
        let need = partial.max(room / 2);
        if self.rx.len() - self.rx_end < need {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
            let want = (self.rx_end + need).max(room);
            if self.rx.len() < want {
                self.rx.resize(want, 0);
            }
        }
        let mut buf = ReadBuf::new(&mut self.rx[self.rx_end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.rx_busy = n >= IDLE_RX / 2;
        self.rx_end += n;
        Poll::Ready(Ok(n))
    }

    /// Opens the complete records in the receive buffer into `buf` while they
    /// fit; a record larger than the room left goes to `plain`. Returns
    /// whether anything was delivered or set aside.
    fn open_records(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let mut progress = false;
        while !self.peer_closed && self.plain_start == self.plain.len() {
            let pending = &self.rx[self.rx_start..self.rx_end];
            let Some(len) = record::record_len(pending).map_err(record_error)? else {
                break;
            };
            if pending.len() < len {
                break;
            }
            let room = Opener::room(len);
            let record = &self.rx[self.rx_start..self.rx_start + len];
            let (content_type, n, direct) = if buf.remaining() >= room {
                let out = buf.initialize_unfilled_to(room);
                let (t, n) = self.opener.open(record, out).map_err(record_error)?;
                (t, n, true)
            } else if progress {
                // Deliver what we have; this record waits for a larger read.
                break;
            } else {
                self.plain.resize(room, 0);
                let (t, n) = self
                    .opener
                    .open(record, &mut self.plain)
                    .map_err(record_error)?;
                self.plain.truncate(n);
                self.plain_start = 0;
                (t, n, false)
            };
            self.rx_start += len;
            progress = true;
            if content_type == APPLICATION_DATA {
                if !self.hs_partial.is_empty() {
                    // RFC 8446 5.1: a handshake message may not be interleaved.
                    return Err(protocol_error("application data inside a handshake message"));
                }
                if n > 0 {
                    self.key_updates_in_a_row = 0;
                    self.warnings_in_a_row = 0;
                }
                if direct {
                    buf.advance(n);
                }
                continue;
            }
            let content = if direct {
                buf.initialize_unfilled_to(n)[..n].to_vec()
            } else {
                std::mem::take(&mut self.plain)
            };
            self.handle_control(content_type, &content)?;
        }
        Ok(progress)
    }

    /// Copies set-aside content into `buf`.
    fn deliver_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.plain.len() - self.plain_start);
        buf.put_slice(&self.plain[self.plain_start..self.plain_start + n]);
        self.plain_start += n;
        if self.plain_start == self.plain.len() {
            self.plain = Vec::new();
            self.plain_start = 0;
        }
    }
}

impl<T: AsyncWrite + Unpin> OwnStream<T> {
    /// Seals `bufs` in order (all of them: only a full send buffer makes a
    /// write wait, before anything is taken).
    fn poll_seal(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.tx_end - self.tx_start >= TX_HIGH {
            ready!(self.poll_drain(cx))?;
        }
        if self.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut n = 0;
        for buf in bufs {
            self.seal_data(buf)?;
            n += buf.len();
        }
        self.seal_stage()?;
        Poll::Ready(Ok(n))
    }

    /// Writes the send buffer out.
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_start < self.tx_end {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.tx[self.tx_start..self.tx_end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_start += n;
        }
        self.tx_last = self.tx_end;
        self.tx_start = 0;
        self.tx_end = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for OwnStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_failed {
            return Poll::Ready(Err(protocol_error("connection failed earlier")));
        }
        let result = this.poll_read_inner(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            this.read_failed = true;
            if let Some(alert) = control::alert_for(e) {
                this.send_fatal_alert(alert, cx);
            }
        }
        result
    }
}

impl<T: AsyncRead + Unpin> OwnStream<T> {
    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            if this.plain_start < this.plain.len() {
                this.deliver_plain(buf);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let progress = this.open_records(buf)?;
            if buf.filled().len() > before || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if progress {
                // Control records or set-aside content: look again.
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                // The TCP stream ended without close_notify: the data may
                // have been cut short (RFC 8446 6.1), which is an error.
                let what = if this.rx_start != this.rx_end {
                    "connection closed inside a TLS record"
                } else {
                    "connection closed without close_notify"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, what)));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OwnStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_seal(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_seal(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.tx_last < IDLE_RX && this.tx.len() > IDLE_RX * 4 {
            // A small write after a burst: do not keep the burst's buffer.
            this.tx = Vec::new();
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.seal(ALERT, &[1, 0])?;
            this.closing = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
