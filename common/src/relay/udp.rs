//! The relay's UDP half: datagrams in (open, check, filter, into the
//! inside), packets out (sealed, batched for one segmentation-offloaded
//! send), and on the client the probes that decide whether data uses the
//! path. Like the rest of the relay it knows no configuration.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::choice::{Chooser, Path as Choice, Round};
use super::read::Batch;
use super::train::{Collector, Splitter, Step, TAG_LEN};
use super::{Control, Counters, DropReason, UdpControl};
use crate::inside::Inside;
use crate::offload;
use crate::outside::tcp::info::TcpUse;
use crate::outside::udp::datagram::{DatagramError, Kind, OVERHEAD};
use crate::outside::udp::inbox::InboxRx;
use crate::outside::udp::path::{self as udp_path, PathReport};
use crate::outside::udp::path::{Validation, CHALLENGE_LEN};
use crate::outside::udp::socket::MAX_SEND;
use crate::outside::udp::{Receiver, RecvBatch, RecvPool, Role, Sender, UdpPath};

/// Without any answer to a probe for this long, the client moves data back
/// to the TLS connection.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// Probe interval while the path is up, and while it is down after the
/// first seconds of a session.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Probe interval right after the session starts, and while data is on a
/// busy UDP path (a clean round then moves it to TCP sooner).
pub const PROBE_FAST: Duration = Duration::from_millis(200);
/// How long after the start the fast probes go on.
const FAST_FOR: Duration = Duration::from_secs(3);
/// Receives taken in one go before the device is written to.
const DRAIN_ROUNDS: usize = 16;
/// How long the rest of an unfinished train is waited for.
const TRAIN_WAIT: Duration = Duration::from_millis(2);
/// Bytes of a probe's body: a number the reply echoes, and room for the
/// report the reply carries (so the reply is never larger).
pub(super) const PROBE_BODY: usize = 8 + PathReport::LEN;

/// Where a session's datagrams come from.
#[derive(Debug)]
pub enum UdpInput {
    /// The server's shared socket demultiplexes by session number.
    Channel(InboxRx),
    /// The client reads its own socket.
    Socket(RecvPool),
}

/// One session's UDP channel, handed to the relay.
#[derive(Debug)]
pub struct Udp {
    /// The shared path state.
    pub path: Arc<UdpPath>,
    /// Seals what we send.
    pub sender: Sender,
    /// Opens what we receive.
    pub receiver: Receiver,
    /// Where datagrams arrive.
    pub input: UdpInput,
    /// Our end.
    pub role: Role,
    /// Client: data may move to the TLS connection while the path is clean
    /// and busy (`transport = "auto"`; `"udp"` keeps it on UDP).
    pub clean_tcp: bool,
}

/// What the write loop needs of the channel.
#[derive(Debug)]
pub(super) struct UdpTx {
    pub(super) path: Arc<UdpPath>,
    pub(super) sender: Sender,
}

impl Udp {
    /// The halves the relay's loops take: sending, receiving, and the role.
    pub(super) fn split(self) -> (UdpTx, Receiver, UdpInput, (Role, bool)) {
        let tx = UdpTx {
            path: self.path,
            sender: self.sender,
        };
        (tx, self.receiver, self.input, (self.role, self.clean_tcp))
    }
}

impl UdpInput {
    async fn next(&mut self, path: &UdpPath) -> io::Result<Option<Vec<RecvBatch>>> {
        match self {
            Self::Channel(rx) => Ok(rx.recv().await),
            Self::Socket(pool) => path.socket.recv(pool).await.map(Some),
        }
    }

    /// Datagrams dropped on their way to us after the socket (the server's
    /// inbox).
    fn dropped_here(&self) -> u64 {
        match self {
            Self::Channel(rx) => rx.dropped(),
            Self::Socket(_) => 0,
        }
    }

    /// More datagrams if they are already there (never waits).
    fn try_next(&mut self, path: &UdpPath) -> io::Result<Option<Vec<RecvBatch>>> {
        match self {
            Self::Channel(rx) => Ok(rx.try_recv()),
            Self::Socket(pool) => path.socket.try_recv(pool),
        }
    }
}

/// Receives datagrams until the input closes; packets go through `filter`
/// into `inside`, probes are answered through the write loop.
pub(super) async fn read_loop<I, F>(
    input: &mut UdpInput,
    receiver: &mut Receiver,
    path: &UdpPath,
    inside: &I,
    filter: &F,
    counters: &Counters,
    control: &mpsc::Sender<Control>,
) -> io::Result<()>
where
    I: Inside,
    F: Fn(&[u8]) -> Result<(), DropReason>,
{
    let mut batch = Batch::default();
    let mut trains = Collector::default();
    loop {
        // A train's segments come in a few sends: wait a moment for the rest
        // before writing what arrived of it segment by segment.
        let next = if trains.is_pending() {
            match tokio::time::timeout(TRAIN_WAIT, input.next(path)).await {
                Ok(next) => next?,
                Err(_) => {
                    trains.release(&mut |s: &[u8]| batch.push(s));
                    batch.flush(inside).await?;
                    continue;
                }
            }
        } else {
            input.next(path).await?
        };
        let Some(mut batches) = next else { break };
        // Take whatever else has arrived before writing to the device, so
        // that trains complete and its GRO merges as much as it can; a
        // bounded number of times, so the rest of the relay gets its turn.
        let mut rounds = 0;
        loop {
            for b in batches {
                let mut rx = Rx {
                    inside,
                    filter,
                    counters,
                    batch: &mut batch,
                    trains: &mut trains,
                };
                receive(b, receiver, path, control, &mut rx).await?;
            }
            rounds += 1;
            if rounds == DRAIN_ROUNDS {
                break;
            }
            match input.try_next(path)? {
                Some(more) => batches = more,
                None => break,
            }
        }
        // What the path lost: the gaps in the peer's counters, less the
        // datagrams our own inbox dropped (a relay falling behind is not a
        // lossy path, and must not keep data on UDP for being one).
        let (received, lost) = receiver.stats();
        path.set_rx_stats(received, lost.saturating_sub(input.dropped_here()));
        batch.flush(inside).await?;
    }
    Ok(())
}

/// Where received packets go.
struct Rx<'a, I, F> {
    inside: &'a I,
    filter: &'a F,
    counters: &'a Counters,
    batch: &'a mut Batch,
    trains: &'a mut Collector,
}

impl<I: Inside, F: Fn(&[u8]) -> Result<(), DropReason>> Rx<'_, I, F> {
    /// One packet (or a tagged segment) that authenticated.
    async fn packet(&mut self, tag: Option<[u8; TAG_LEN]>, packet: &[u8]) -> io::Result<()> {
        if let Err(reason) = (self.filter)(packet) {
            self.counters.drop_packet(reason);
            return Ok(());
        }
        self.counters.received(packet.len());
        if !self.inside.offload() {
            return self.inside.send(packet).await;
        }
        match tag {
            Some(tag) => {
                let batch = &mut *self.batch;
                if let Step::Whole(header, whole) =
                    self.trains.push(tag, packet, &mut |s: &[u8]| batch.push(s))
                {
                    // Keep order: what is batched goes first.
                    self.batch.flush(self.inside).await?;
                    self.inside.send_parts(&header.to_device(), &whole).await?;
                }
            }
            None => self.batch.push(packet),
        }
        if self.batch.is_full() {
            self.batch.flush(self.inside).await?;
        }
        Ok(())
    }
}

async fn receive<I, F>(
    mut b: RecvBatch,
    receiver: &mut Receiver,
    path: &UdpPath,
    control: &mpsc::Sender<Control>,
    rx: &mut Rx<'_, I, F>,
) -> io::Result<()>
where
    I: Inside,
    F: Fn(&[u8]) -> Result<(), DropReason>,
{
    // Our address it was sent to is where answers go out from: only a
    // unicast one (a copy sent to a broadcast or multicast address of ours
    // would make the send fail).
    let (from, to) = (
        b.from,
        b.to.filter(|ip| udp_path::replyable(&SocketAddr::new(*ip, 1))),
    );
    if !udp_path::replyable(&from) {
        // Port 0, broadcast...: nothing we could answer or send to.
        let n = b.datagrams_mut().count() as u64;
        rx.counters.drop_n(DropReason::Forged, n);
        return Ok(());
    }
    // The datagrams of a batch share their source: the path and the
    // counts are updated once per batch, not per datagram.
    let (mut authenticated, mut newest, mut largest) = (false, false, 0);
    let mut replies: Vec<Vec<u8>> = Vec::new();
    for datagram in b.datagrams_mut() {
        let size = datagram.len();
        let opened = match receiver.open(datagram) {
            Ok(o) => o,
            Err(e) => {
                rx.counters.drop_packet(match e {
                    DatagramError::Replayed => DropReason::Replayed,
                    _ => DropReason::Forged,
                });
                continue;
            }
        };
        authenticated = true;
        newest |= opened.newest;
        largest = largest.max(size);
        match opened.kind {
            Kind::Packet => rx.packet(None, opened.body).await?,
            Kind::Segment => match opened.body.split_first_chunk::<TAG_LEN>() {
                Some((tag, segment)) => rx.packet(Some(*tag), segment).await?,
                None => rx.counters.drop_packet(DropReason::Malformed),
            },
            // Answered after the batch (below), with the same size or less.
            // A probe with room for it gets our report of the path back.
            Kind::Probe => {
                let mut body = Vec::with_capacity(PROBE_BODY);
                body.extend_from_slice(&opened.body[..opened.body.len().min(8)]);
                if opened.body.len() >= PROBE_BODY {
                    body.extend_from_slice(&path.local_report().encode());
                }
                replies.push(body);
            }
            Kind::ProbeReply => {
                path.answered();
                if let Some(report) = opened.body.get(8..).and_then(PathReport::decode) {
                    path.set_peer_report(report);
                }
            }
            // Client: the server saw us at a new address; prove it is ours.
            Kind::Challenge => match <[u8; CHALLENGE_LEN]>::try_from(opened.body) {
                Ok(bytes) => {
                    path.answered();
                    let _ = control.try_send(Control::Udp(UdpControl::Respond(bytes)));
                }
                Err(_) => rx.counters.drop_packet(DropReason::Malformed),
            },
            // A move away from a validated address challenges it: a peer
            // still there pulls the path back (RFC 9000 9.3.3).
            Kind::Response => {
                if let Validation::MovedFrom(old, src, bytes) = path.validated(from, opened.body) {
                    let _ = control.try_send(Control::Udp(UdpControl::Challenge(bytes, old, src)));
                }
            }
        }
    }
    if authenticated {
        let proved = path.peer() == Some(from);
        let challenge = path.received_from(from, to, newest);
        let (challenge, replies) = answers(proved, largest, challenge, replies);
        if let Some(bytes) = challenge {
            let _ = control.try_send(Control::Udp(UdpControl::Challenge(bytes, from, to)));
        }
        for body in replies {
            let _ = control.try_send(Control::Udp(UdpControl::ProbeReply(body.into(), from, to)));
        }
    }
    Ok(())
}

/// Never an amplifier: what one batch from `from` draws. A proved address
/// gets its probe replies (each no larger than its probe). An address not
/// yet proved gets one challenge, no larger than the largest datagram of the
/// batch, and nothing else: one datagram answers one or more, and the
/// client takes the challenge as a sign of life as it would a reply.
fn answers(
    proved: bool,
    largest: usize,
    challenge: Option<[u8; CHALLENGE_LEN]>,
    replies: Vec<Vec<u8>>,
) -> (Option<[u8; CHALLENGE_LEN]>, Vec<Vec<u8>>) {
    if proved {
        return (None, replies);
    }
    let challenge = challenge.filter(|_| largest >= OVERHEAD + CHALLENGE_LEN);
    (challenge, Vec::new())
}

/// The client's probes: fast right after the start, then once a second;
/// each reply carries the server's report, and [`Chooser`] decides from both
/// ends' reports where data goes (see `choice.rs`). Each move is announced to
/// the server with a Path frame.
pub(super) async fn probe_loop(path: &UdpPath, control: &mpsc::Sender<Control>, clean_tcp: bool) {
    let start = tokio::time::Instant::now();
    let mut chooser = Chooser::new(clean_tcp);
    let mut n: u64 = 0;
    loop {
        let starting = start.elapsed() < FAST_FOR && !chooser.expects_udp();
        let every = if starting || chooser.busy_on_udp() {
            PROBE_FAST
        } else {
            PROBE_EVERY
        };
        n += 1;
        if control
            .send(Control::Udp(UdpControl::Probe(n)))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(every).await;
        let since = path.since_answer();
        let limit = if chooser.expects_udp() {
            DEAD_AFTER
        } else {
            every + Duration::from_millis(100)
        };
        let round = Round {
            udp_works: since.is_some_and(|s| s <= limit),
            local: path.local_report(),
            peer: path.peer_report(),
            now: start.elapsed(),
        };
        let Some(next) = chooser.round(round) else {
            continue;
        };
        let udp = next == Choice::Udp;
        let why = if udp {
            TcpUse::Control
        } else if round.udp_works {
            TcpUse::CleanData
        } else {
            TcpUse::Fallback
        };
        path.carry_on(why);
        if udp {
            tracing::info!("UDP path works; data moves to UDP");
        } else if round.udp_works {
            tracing::info!(
                "the path is clean and busy; data moves to the TLS connection (offload)"
            );
        } else {
            tracing::warn!(
                "no answer to our probes for {limit:?}; data moves to the TLS connection"
            );
        }
        if control.send(Control::Path(why)).await.is_err() {
            return;
        }
    }
}

/// Sealed datagrams waiting for one send: all `stride` bytes long but the
/// last, as UDP segmentation offload wants them.
#[derive(Debug, Default)]
pub(super) struct UdpOut {
    buf: Vec<u8>,
    stride: usize,
    count: usize,
    /// The last datagram was shorter than the stride: nothing may follow.
    closed: bool,
    splitter: Splitter,
}

impl UdpOut {
    /// Seals one packet (or probe) and queues it, sending first what cannot
    /// share a send with it.
    pub(super) async fn push(
        &mut self,
        udp: &mut UdpTx,
        kind: Kind,
        parts: &[&[u8]],
        counters: &Counters,
    ) -> io::Result<()> {
        let len = OVERHEAD + parts.iter().map(|p| p.len()).sum::<usize>();
        let max = udp.path.socket.max_segments().max(1);
        if self.count > 0
            && (self.closed
                || len > self.stride
                || self.buf.len() + len > MAX_SEND
                || self.count >= max)
        {
            self.flush(&udp.path).await?;
        }
        if udp.sender.seal(kind, parts, &mut self.buf).is_err() {
            // 2^64 datagrams: the session must end; until then, drop.
            counters.drop_packet(DropReason::QueueFull);
            return Ok(());
        }
        if self.count == 0 {
            self.stride = len;
        } else if len < self.stride {
            self.closed = true;
        }
        self.count += 1;
        Ok(())
    }

    /// Seals a packet the device gave (with an offload header if it does
    /// offload), cut into MTU-sized packets first if it is a large one.
    pub(super) async fn push_device_packet(
        &mut self,
        udp: &mut UdpTx,
        raw: &[u8],
        device_offload: bool,
        counters: &Counters,
    ) -> io::Result<()> {
        let count = |n: usize| counters.sent(n);
        if !device_offload {
            count(raw.len());
            return self.push(udp, Kind::Packet, &[raw], counters).await;
        }
        if raw.len() <= offload::HEADER_LEN {
            counters.drop_packet(DropReason::Malformed);
            return Ok(());
        }
        let header = offload::Header::from_device(&raw[..offload::HEADER_LEN]);
        let packet = &raw[offload::HEADER_LEN..];
        if header.flags == 0 && !header.is_gso() {
            count(packet.len());
            return self.push(udp, Kind::Packet, &[packet], counters).await;
        }
        if !header.is_gso() {
            // One packet whose checksum the device left to us.
            let mut copy = packet.to_vec();
            offload::finish_checksum(&mut copy, &header);
            count(copy.len());
            return self.push(udp, Kind::Packet, &[&copy], counters).await;
        }
        let mut splitter = std::mem::take(&mut self.splitter);
        let result = self
            .push_train(&mut splitter, udp, &header, packet, counters)
            .await;
        self.splitter = splitter;
        result
    }

    async fn push_train(
        &mut self,
        splitter: &mut Splitter,
        udp: &mut UdpTx,
        header: &offload::Header,
        packet: &[u8],
        counters: &Counters,
    ) -> io::Result<()> {
        let Ok(n) = splitter.cut(header, packet) else {
            counters.drop_packet(DropReason::Malformed);
            return Ok(());
        };
        for i in 0..n {
            let (tag, segment) = splitter.segment(i);
            counters.sent(segment.len());
            self.push(udp, Kind::Segment, &[&tag, segment], counters)
                .await?;
        }
        Ok(())
    }

    /// Sends what is queued, to the peer's current address; what was queued
    /// is gone afterwards, sent or not.
    pub(super) async fn flush(&mut self, path: &UdpPath) -> io::Result<()> {
        let mut sent = Ok(());
        if self.count > 0 {
            if let Some((to, from)) = path.route() {
                sent = path.socket.send(to, from, &self.buf, self.stride).await;
            }
        }
        self.clear();
        sent
    }

    /// Forgets what is queued.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A probe reply goes to where the probe came from, not to the path's peer:
/// it proves that this address works before the path moves there.
pub(super) async fn send_to(
    udp: &mut UdpTx,
    kind: Kind,
    body: &[u8],
    to: SocketAddr,
    src: Option<IpAddr>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(OVERHEAD + body.len());
    if udp.sender.seal(kind, &[body], &mut buf).is_ok() {
        // From the address the datagram we answer was sent to (the peer's
        // connected socket takes nothing else), else the path's.
        let from = src.or_else(|| udp.path.route().and_then(|r| r.1));
        udp.path.socket.send(to, from, &buf, buf.len()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unproved_address_gets_one_challenge_no_larger_than_what_it_sent() {
        let ch = Some([7u8; CHALLENGE_LEN]);
        let reply = vec![1u8; PROBE_BODY];
        let probe = OVERHEAD + PROBE_BODY;
        assert_eq!(
            answers(false, probe, ch, vec![reply.clone(); 3]),
            (ch, vec![])
        );
        // A datagram shorter than the challenge draws nothing.
        let short = OVERHEAD + CHALLENGE_LEN - 1;
        assert_eq!(
            answers(false, short, ch, vec![reply.clone()]),
            (None, vec![])
        );
        assert_eq!(answers(false, probe, None, vec![reply]), (None, vec![]));
    }

    #[test]
    fn a_proved_address_gets_its_probe_replies() {
        let reply = vec![1u8; PROBE_BODY];
        let (c, r) = answers(true, OVERHEAD + PROBE_BODY, None, vec![reply; 3]);
        assert_eq!((c, r.len()), (None, 3));
    }
}
