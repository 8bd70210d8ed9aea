//! The data phase: the unbuffered connection that ran the handshake stays in
//! charge, seals every record into our send buffer and opens every record
//! of our receive buffer; it answers KeyUpdate, refreshes its own keys before
//! their limit, sends and understands alerts and enforces the record limits.
//! Writes are sealed into a buffer that reaches the socket on flush (or when
//! it holds TX_HIGH bytes): callers flush after each batch. A TCP stream that
//! ends without close_notify reads as an error (truncation, RFC 8446 6.1).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{protocol_error, tls_error, MAX_RECORD};

/// Receive room while busy: many records per read.
const RX_ROOM: usize = 256 * 1024;
/// Receive room at the start and again once idle. An idle session (most of
/// a server's) holds this much, not [`RX_ROOM`]; a larger record makes the
/// room grow (it doubles whenever it is full).
const RX_IDLE: usize = 4 * 1024;
/// Send room first tried for a record: enough for control messages and
/// small packets; rustls says when a record needs more.
const TX_FIRST: usize = 1024;
/// A read this small counts towards giving a grown receive room back ...
const SMALL_READ: usize = 2 * 1024;
/// ... once this many come in a row (with what is left over fitting).
const SMALL_READS_TO_SHRINK: u8 = 8;
/// Sealed bytes we hold before a write waits for the socket.
const TX_HIGH: usize = 256 * 1024;
/// Pieces of a write shorter than this are staged and sealed together.
const STAGE_BELOW: usize = 2048;
/// An encrypted TLS 1.3 alert: header, 2 bytes, content type, 16-byte tag.
const ALERT_RECORD: usize = 5 + 2 + 1 + 16;
/// Most content one record carries.
const MAX_PLAINTEXT: usize = 1 << 14;

/// The connection that ran the handshake.
pub(super) enum Conn {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

/// What the caller wants once rustls has worked through the received bytes.
#[derive(Clone, Copy)]
enum Goal<'d> {
    /// Plaintext.
    Read,
    /// To seal these bytes as application data.
    Write(&'d [u8]),
    /// A KeyUpdate of our own.
    Refresh,
    /// To queue close_notify.
    Close,
    /// To queue the alert rustls has after a failure.
    Alert,
}

/// What a step of rustls came to.
enum Next {
    /// It produced something (data, a record to send): ask again.
    Again,
    /// It needs more bytes from the peer.
    NeedInput,
    /// The peer closed the connection (close_notify).
    Closed,
    /// The goal is reached.
    Done,
}

/// Where one round of rustls's output goes.
struct Sink<'a, 'b> {
    /// Plaintext for the caller, as much as fits.
    buf: Option<&'a mut ReadBuf<'b>>,
    /// Plaintext that did not fit.
    plain: &'a mut Vec<u8>,
    /// Records to send.
    tx: &'a mut SendBuf,
}

impl Sink<'_, '_> {
    fn deliver(&mut self, payload: &[u8]) {
        let mut rest = payload;
        if self.plain.is_empty() {
            if let Some(buf) = self.buf.as_mut() {
                let n = buf.remaining().min(rest.len());
                buf.put_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
        self.plain.extend_from_slice(rest);
    }

    fn encode(&mut self, encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
        let _ = self.tx.encode(encode);
    }
}

/// Sealed records waiting for the socket: buf[start..end]. The buffer keeps
/// its length between uses, so room is zeroed only when it grows, not for
/// every record.
#[derive(Default)]
pub(super) struct SendBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl SendBuf {
    /// Bytes waiting.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Runs `write` into the free room, growing it as asked; returns
    /// write's error if it is not about room.
    fn append<E>(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
        needs: impl Fn(&E) -> Option<usize>,
    ) -> Option<E> {
        let mut room = TX_FIRST;
        loop {
            if self.buf.len() < self.end + room {
                self.buf.resize(self.end + room, 0);
            }
            match write(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return None;
                }
                Err(e) => match needs(&e) {
                    Some(required) if required > self.buf.len() - self.end => room = required,
                    _ => return Some(e),
                },
            }
        }
    }

    /// Appends a record rustls encodes (handshake messages, alerts).
    pub(super) fn encode(
        &mut self,
        encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> io::Result<()> {
        match self.append(encode, |e| match e {
            EncodeError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        }) {
            None => Ok(()),
            Some(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// `n` bytes reached the socket.
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            // Empty: start again at the front; a burst's large buffer is
            // given back once the traffic is small again.
            if self.end < 4096 && self.buf.len() > 2 * MAX_RECORD {
                self.buf = Vec::new();
            }
            self.start = 0;
            self.end = 0;
        }
    }
}

/// One step of rustls over the received bytes towards `goal`; returns the
/// bytes it consumed. rustls keeps a post-handshake message that spans
/// records in those bytes, so every step, a write's too, sees all of them.
fn step<D>(
    status: UnbufferedStatus<'_, '_, D>,
    sink: &mut Sink<'_, '_>,
    goal: Goal<'_>,
) -> io::Result<(usize, Next)> {
    let UnbufferedStatus { mut discard, state } = status;
    let state = state.map_err(tls_error)?;
    if let Goal::Alert = goal {
        // rustls queues its alert before it deframes anything more: take
        // that and stop, so the bytes that failed are not looked at again.
        if let ConnectionState::EncodeTlsData(mut encode) = state {
            let before = sink.tx.end;
            sink.encode(|out| encode.encode(out));
            // A pending KeyUpdate answer goes out in front of the alert
            // (rustls queues both); an encrypted alert record is 24 bytes.
            if sink.tx.end - before != ALERT_RECORD {
                return Ok((discard, Next::Again));
            }
        }
        return Ok((discard, Next::Done));
    }
    let next = match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                let record = record.map_err(tls_error)?;
                discard += record.discard;
                sink.deliver(record.payload);
            }
            Next::Again
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            sink.encode(|out| encode.encode(out));
            Next::Again
        }
        // The records are in our send buffer, which goes out in order.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Next::Again
        }
        ConnectionState::WriteTraffic(mut traffic) => {
            let room = |e: &EncryptError| match e {
                EncryptError::InsufficientSize(s) => Some(s.required_size),
                _ => None,
            };
            let failed = match goal {
                Goal::Read => return Ok((discard, Next::NeedInput)),
                Goal::Alert => None,
                Goal::Write(data) => sink.tx.append(|out| traffic.encrypt(data, out), room),
                Goal::Close => sink.tx.append(|out| traffic.queue_close_notify(out), room),
                Goal::Refresh => {
                    traffic.refresh_traffic_keys().map_err(tls_error)?;
                    None
                }
            };
            if let Some(e) = failed {
                return Err(io::Error::other(e.to_string()));
            }
            Next::Done
        }
        ConnectionState::BlockedHandshake => Next::NeedInput,
        ConnectionState::PeerClosed | ConnectionState::Closed => match goal {
            Goal::Read => Next::Closed,
            Goal::Write(_) | Goal::Refresh => return Err(io::ErrorKind::BrokenPipe.into()),
            Goal::Close | Goal::Alert => Next::Done,
        },
        _ => return Err(protocol_error("unexpected TLS state")),
    };
    Ok((discard, next))
}

/// A TLS 1.3 stream after the handshake (see the module comment).
pub struct SecureStream<T> {
    io: T,
    conn: Conn,
    /// Received bytes not yet given to rustls: rx[..rx_end]. The room
    /// grows (to [`RX_ROOM`]) while reads fill it and shrinks back to
    /// [`RX_IDLE`] after a run of small reads.
    rx: Vec<u8>,
    rx_end: usize,
    /// Small reads in a row (see [`SMALL_READ`]).
    small_reads: u8,
    /// Opened content not yet delivered: plain[plain_start..].
    plain: Vec<u8>,
    plain_start: usize,
    /// Sealed bytes not yet written.
    tx: SendBuf,
    /// Small pieces of a vectored write, sealed together.
    stage: Vec<u8>,
    peer_closed: bool,
    failed: bool,
    closing: bool,
}

impl<T> std::fmt::Debug for SecureStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("rx_pending", &self.rx_end)
            .field("tx_pending", &self.tx.pending().len())
            .finish_non_exhaustive()
    }
}

impl<T> SecureStream<T> {
    /// Takes over after the handshake: `rx` holds bytes rustls has not
    /// processed yet, `early` data that came with the handshake.
    pub(super) fn new(
        io: T,
        conn: Conn,
        mut rx: Vec<u8>,
        early: Vec<u8>,
        peer_closed: bool,
    ) -> Self {
        let rx_end = rx.len();
        rx.resize(rx_end.max(RX_IDLE), 0);
        // The handshake's buffer may have grown for a large flight.
        rx.shrink_to_fit();
        Self {
            io,
            conn,
            rx,
            rx_end,
            small_reads: 0,
            plain: early,
            plain_start: 0,
            tx: SendBuf::default(),
            stage: Vec::new(),
            peer_closed,
            failed: false,
            closing: false,
        }
    }

    /// Doubles the receive room, up to [`RX_ROOM`].
    fn grow_rx(&mut self) {
        let len = (2 * self.rx.len()).clamp(RX_IDLE, RX_ROOM);
        self.rx.resize(len, 0);
    }

    /// After a read of `n` bytes into `room`: a read that filled the room
    /// (the socket had more) grows it; a run of small reads with nothing
    /// left over gives a grown room back.
    fn size_rx(&mut self, n: usize, room: usize) {
        if n == room && self.rx.len() < RX_ROOM {
            self.small_reads = 0;
            self.grow_rx();
        } else if n < SMALL_READ && self.rx.len() > RX_IDLE {
            self.small_reads = self.small_reads.saturating_add(1);
            if self.small_reads >= SMALL_READS_TO_SHRINK && self.rx_end <= RX_IDLE {
                self.small_reads = 0;
                self.rx.truncate(RX_IDLE);
                self.rx.shrink_to_fit();
            }
        } else {
            self.small_reads = 0;
        }
    }

    /// The receive room it holds now, allocated (for tests of its sizing).
    #[cfg(any(test, feature = "test-util"))]
    pub fn receive_room(&self) -> usize {
        self.rx.capacity()
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The transport underneath; bytes written to it bypass TLS.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Lets rustls work through the received bytes (plaintext into `buf`
    /// as far as it fits, the rest set aside) until `goal` is reached or it
    /// needs more input. A failure queues rustls's alert for the peer.
    fn drive(&mut self, mut buf: Option<&mut ReadBuf<'_>>, goal: Goal<'_>) -> io::Result<Next> {
        if self.failed {
            // rustls must not see the bytes that failed again.
            return Err(protocol_error("connection failed earlier"));
        }
        // Consumed bytes leave the front of rx once per call, not per
        // record (rustls returns after every record): rx[start..] is what
        // rustls has not discarded.
        let mut start = 0;
        let result = loop {
            let mut sink = Sink {
                buf: buf.as_deref_mut(),
                plain: &mut self.plain,
                tx: &mut self.tx,
            };
            let incoming = &mut self.rx[start..self.rx_end];
            let stepped = match &mut self.conn {
                Conn::Client(c) => step(c.process_tls_records(incoming), &mut sink, goal),
                Conn::Server(s) => step(s.process_tls_records(incoming), &mut sink, goal),
            };
            match stepped {
                Ok((discard, Next::Again)) => start += discard,
                Ok((discard, other)) => {
                    start += discard;
                    break Ok(other);
                }
                Err(e) => break Err(e),
            }
        };
        self.rx.copy_within(start..self.rx_end, 0);
        self.rx_end -= start;
        if result.is_err() {
            if !matches!(goal, Goal::Alert) {
                let _ = self.drive(None, Goal::Alert);
            }
            self.failed = true;
        }
        result
    }

    /// Replaces our send key now (a KeyUpdate that asks the peer to update
    /// too); it goes out with the next write or flush. rustls does this by
    /// itself before a key reaches its confidentiality limit.
    pub fn refresh_traffic_keys(&mut self) -> io::Result<()> {
        self.drive(None, Goal::Refresh)?;
        // Have rustls hand the KeyUpdate over now, so a flush sends it.
        self.drive(None, Goal::Write(&[])).map(drop)
    }

    /// Seals `data` as application data into the send buffer (records
    /// rustls has queued, such as a KeyUpdate answer, go first).
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.drive(None, Goal::Write(data))? {
            Next::Done => Ok(()),
            // A handshake message in progress cannot block a TLS 1.3 write.
            _ => Err(protocol_error("TLS state does not allow writing")),
        }
    }

    fn seal_stage(&mut self) -> io::Result<()> {
        let stage = std::mem::take(&mut self.stage);
        let sealed = self.encrypt(&stage);
        self.stage = stage;
        self.stage.clear();
        sealed
    }
}

impl<T: AsyncWrite + Unpin> SecureStream<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.tx.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.tx.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx.consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(protocol_error("connection failed earlier")));
        }
        let result = this.poll_read_inner(cx, buf);
        if matches!(result, Poll::Ready(Err(_))) {
            this.failed = true;
            // The fatal alert rustls queued tells the peer why, if the
            // socket takes it now; nothing else is written after it.
            let _ = this.poll_drain(cx);
            this.closing = true;
        }
        result
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> SecureStream<T> {
    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.plain_start < self.plain.len() {
                let n = buf.remaining().min(self.plain.len() - self.plain_start);
                buf.put_slice(&self.plain[self.plain_start..self.plain_start + n]);
                self.plain_start += n;
                if self.plain_start == self.plain.len() {
                    self.plain.clear();
                    self.plain_start = 0;
                    if self.plain.capacity() > 4 * MAX_RECORD {
                        // A burst's surplus: not kept for an idle session.
                        self.plain = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let next = self.drive(Some(buf), Goal::Read)?;
            if let Next::Closed = next {
                self.peer_closed = true;
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if self.plain_start < self.plain.len() {
                continue;
            }
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if self.rx_end == self.rx.len() {
                if self.rx.len() >= RX_ROOM {
                    // A record larger than the room: TLS allows none.
                    return Poll::Ready(Err(tls_error(rustls::Error::General(
                        "record larger than the receive buffer".into(),
                    ))));
                }
                self.grow_rx();
            }
            let room = self.rx.len() - self.rx_end;
            let mut read = ReadBuf::new(&mut self.rx[self.rx_end..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // TCP ended without close_notify: a truncation (RFC 8446 6.1).
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            self.rx_end += n;
            self.size_rx(n, room);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tx.pending().len() >= TX_HIGH {
            ready!(this.poll_drain(cx))?;
        }
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut n = 0;
        for buf in bufs {
            if buf.len() < STAGE_BELOW {
                if this.stage.len() + buf.len() > MAX_PLAINTEXT {
                    this.seal_stage()?;
                }
                this.stage.extend_from_slice(buf);
            } else {
                this.seal_stage()?;
                this.encrypt(buf)?;
            }
            n += buf.len();
        }
        this.seal_stage()?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            // Queued if the connection still allows writing; the close goes on.
            let _ = this.drive(None, Goal::Close);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
