//! The relay: moves packets between an inside (TUN) and an outside (framed
//! TLS stream, and the UDP channel beside it when the session has one) and
//! counts them. It knows no configuration: what may enter the inside is
//! decided by the filter its caller passes in.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

use crate::frame::{self, FrameType};
use crate::gather::Gather;
use crate::inside::{Inside, RecvBuffer};
use crate::message::{self, Bye, ByeReason};
use crate::offload;
use crate::outside::tcp_info::TcpUse;
use crate::outside::udp::datagram::Kind;
use crate::outside::udp::path as udp_path;
use crate::outside::udp::Role;
use crate::outside::{Outside, OutsideError, READ_CHUNK};
use crate::queue::{QueueRx, QueueTx};

mod choice;
pub mod train;
mod udp;

pub use udp::{Udp, UdpInput};
use udp::{UdpOut, UdpTx};

/// Coalesce queued frames into one write up to this many bytes.
pub const WRITE_BATCH: usize = 64 * 1024;
/// Queued packets sealed into datagrams before they are sent.
const UDP_BATCH: usize = 64;
/// How long a closing side waits for its Bye to be written.
const BYE_GRACE: Duration = Duration::from_secs(2);

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a parsable IP packet.
    Malformed,
    /// Source address not assigned to the sender.
    Spoofed,
    /// Client-to-client traffic that policy does not allow.
    ClientToClient,
    /// Destination is no known session, or an address family the tunnel does not carry.
    NoRoute,
    /// The session's queue was full (slow peer).
    QueueFull,
    /// An offload header the kernel must not see; the session is closed too.
    BadOffload,
    /// A UDP datagram whose counter was seen before (or is too old).
    Replayed,
    /// A UDP datagram that did not authenticate (or is not ours at all).
    Forged,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 8] = [
        Self::Malformed,
        Self::Spoofed,
        Self::ClientToClient,
        Self::NoRoute,
        Self::QueueFull,
        Self::BadOffload,
        Self::Replayed,
        Self::Forged,
    ];

    /// Name used in status output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Spoofed => "spoofed",
            Self::ClientToClient => "client_to_client",
            Self::NoRoute => "no_route",
            Self::QueueFull => "queue_full",
            Self::BadOffload => "bad_offload",
            Self::Replayed => "replayed",
            Self::Forged => "forged",
        }
    }
}

/// Traffic counters of one session (or one device), shared with status readers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from the outside and delivered inside.
    pub rx_bytes: AtomicU64,
    /// Packets received from the outside and delivered inside.
    pub rx_packets: AtomicU64,
    /// Bytes of packets sent to the outside.
    pub tx_bytes: AtomicU64,
    /// Packets sent to the outside.
    pub tx_packets: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts a dropped packet.
    pub fn drop_packet(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` dropped packets.
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Packets dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Keepalive timing of a session.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// A Ping is sent this often.
    pub interval: Duration,
    /// The peer is dead when nothing arrived for this long.
    pub timeout: Duration,
}

/// The Path frame's byte: 1 data on UDP, 0 data on the TLS connection
/// because UDP does not work, 2 data on the TLS connection because the path
/// is clean and busy.
fn path_byte(why: TcpUse) -> u8 {
    match why {
        TcpUse::Control => 1,
        TcpUse::Fallback => 0,
        TcpUse::CleanData => 2,
    }
}

fn path_use(byte: u8) -> Option<TcpUse> {
    [TcpUse::Control, TcpUse::Fallback, TcpUse::CleanData]
        .into_iter()
        .find(|&why| path_byte(why) == byte)
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The peer said Bye.
    PeerBye(Bye),
    /// We said Bye (stop requested or the peer broke the protocol).
    SentBye(Bye),
    /// The outside failed, closed or timed out.
    Lost(OutsideError),
}

enum Control {
    Pong(Bytes),
    Bye(Bye),
    /// The peer said Bye: end the TLS stream with close_notify.
    Close,
    /// Client: send a UDP probe with this number.
    Probe(u64),
    /// Server: answer a UDP probe (its body) at the address it came from,
    /// from the address it was sent to.
    ProbeReply(Bytes, std::net::SocketAddr, Option<std::net::IpAddr>),
    /// Server: challenge a new address of the client (from the address its
    /// datagram was sent to).
    Challenge(
        [u8; udp_path::CHALLENGE_LEN],
        std::net::SocketAddr,
        Option<std::net::IpAddr>,
    ),
    /// Client: echo the server's challenge.
    Respond([u8; udp_path::CHALLENGE_LEN]),
    /// Client: tell the server where data goes now, and why.
    Path(TcpUse),
    /// Server: the payload of an Update frame.
    Update(Bytes),
}

/// The Update frames of a session (PROTOCOL.md, "Update"). The relay carries
/// their payloads and knows nothing of what is in them; each one replaces
/// the one before, so only the latest that is not yet sent (or read) is kept.
#[derive(Debug, Default)]
pub enum Updates {
    /// Not enabled on this session: an Update frame from the peer is a
    /// protocol error.
    #[default]
    Off,
    /// Server: each new value is sent to the peer as an Update frame.
    Send(watch::Receiver<Bytes>),
    /// Client: the payload of each Update frame received.
    Receive(watch::Sender<Bytes>),
}

/// What the two ends agreed on for this session.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// Keepalive timing.
    pub keepalive: Keepalive,
    /// Both ends carry offloaded packets whole (Data frames with an offload header).
    pub offload: bool,
}

/// Relays until the peer leaves, the connection fails, or `stop` yields the
/// Bye to send. Packets to send arrive on `outbound` as the device gave them;
/// packets received pass `filter` (which sees the IP packet) before they
/// reach `inside`. With `udp`, data also arrives over the UDP channel, and
/// goes out over it while its path is in use (control stays on the stream).
/// `updates` says where Update frames come from or go to.
#[allow(clippy::too_many_arguments)]
pub async fn relay<S, I, F, Stop>(
    outside: Outside<S>,
    inside: &I,
    outbound: &mut QueueRx,
    filter: F,
    counters: &Counters,
    session: Session,
    udp: Option<Udp>,
    updates: Updates,
    stop: Stop,
) -> RelayEnd
where
    S: AsyncRead + AsyncWrite + Send,
    I: Inside,
    F: Fn(&[u8]) -> Result<(), DropReason>,
    Stop: Future<Output = Bye>,
{
    let (reader, writer) = tokio::io::split(outside.stream);
    let (control_tx, control_rx) = mpsc::channel(64);
    let (udp_tx, mut udp_rx) = match udp.map(Udp::split) {
        Some((tx, receiver, input, role)) => (Some(tx), Some((receiver, input, role))),
        None => (None, None),
    };
    let path = udp_tx.as_ref().map(|u| u.path.clone());
    let (to_send, received) = match updates {
        Updates::Off => (None, None),
        Updates::Send(rx) => (Some(rx), None),
        Updates::Receive(tx) => (None, Some(tx)),
    };
    let read = read_loop(
        reader,
        outside.rbuf,
        inside,
        &filter,
        counters,
        &control_tx,
        session,
        path.as_deref(),
        received.as_ref(),
    );
    let mode = Mode {
        device_offload: inside.offload(),
        session_offload: session.offload,
    };
    let write = write_loop(
        writer,
        outbound,
        control_rx,
        counters,
        session.keepalive,
        mode,
        udp_tx,
    );
    // Server: Updates from the owner join the control frames to write.
    let updates_out = async {
        if let Some(mut next) = to_send {
            while next.changed().await.is_ok() {
                let payload = next.borrow_and_update().clone();
                if control_tx.send(Control::Update(payload)).await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await
    };
    // The UDP side: datagrams in, and on the client the probes. A failing
    // UDP socket ends only the UDP side; data stays on the stream.
    let udp_side = async {
        let (Some((receiver, input, (role, clean_tcp))), Some(path)) =
            (udp_rx.as_mut(), path.as_deref())
        else {
            return std::future::pending().await;
        };
        let read = udp::read_loop(
            input,
            receiver,
            path,
            inside,
            &filter,
            counters,
            &control_tx,
        );
        let probe = async {
            if *role == Role::Client {
                udp::probe_loop(path, &control_tx, *clean_tcp).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            end = read => if let Err(e) = end {
                tracing::warn!(error = %e, "UDP channel failed; data stays on the TLS connection");
            },
            _ = probe => {}
        }
        path.carry_on(TcpUse::Fallback);
        if *role == Role::Client {
            let _ = control_tx.send(Control::Path(TcpUse::Fallback)).await;
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(read, write, stop, udp_side, updates_out);
    let bye = tokio::select! {
        end = &mut read => match end {
            Ok(bye) => {
                // Answer with close_notify, so the peer sees a clean end.
                let closed = async {
                    let _ = tokio::join!(control_tx.send(Control::Close), &mut write);
                };
                let _ = tokio::time::timeout(BYE_GRACE, closed).await;
                return RelayEnd::PeerBye(bye);
            }
            Err(e) if e.is_protocol_violation() => Bye::new(ByeReason::ProtocolError, e.to_string()),
            Err(e) => return RelayEnd::Lost(e),
        },
        end = &mut write => return RelayEnd::Lost(end.err().unwrap_or(OutsideError::Closed)),
        bye = &mut stop => bye,
        () = &mut udp_side => unreachable!("the UDP side never ends the relay"),
        () = &mut updates_out => unreachable!("passing on Updates never ends the relay"),
    };
    // Hand the Bye to the writer and give it a moment to reach the peer. The
    // writer runs meanwhile, so a control queue full of Pongs drains; a peer
    // that reads nothing costs at most BYE_GRACE.
    let handed = async {
        let _ = tokio::join!(control_tx.send(Control::Bye(bye.clone())), &mut write);
    };
    let _ = tokio::time::timeout(BYE_GRACE, handed).await;
    RelayEnd::SentBye(bye)
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<S, I, F>(
    mut reader: ReadHalf<S>,
    mut rbuf: BytesMut,
    inside: &I,
    filter: &F,
    counters: &Counters,
    control: &mpsc::Sender<Control>,
    session: Session,
    udp: Option<&udp_path::UdpPath>,
    updates: Option<&watch::Sender<Bytes>>,
) -> Result<Bye, OutsideError>
where
    S: AsyncRead,
    I: Inside,
    F: Fn(&[u8]) -> Result<(), DropReason>,
{
    let mut batch = Batch::default();
    let mut sizing = ReadSizing::default();
    loop {
        while let Some(frame) = frame::decode(&mut rbuf)? {
            if frame.kind != FrameType::Data {
                // Keep packet order: what is batched goes first.
                batch.flush(inside).await?;
            }
            match frame.kind {
                FrameType::Data => match filter(&frame.payload) {
                    Ok(()) => {
                        if inside.offload() {
                            batch.push(&frame.payload);
                            if batch.is_full() {
                                batch.flush(inside).await?;
                            }
                        } else {
                            inside.send(&frame.payload).await?;
                        }
                        Counters::add(&counters.rx_packets, 1);
                        Counters::add(&counters.rx_bytes, frame.payload.len() as u64);
                    }
                    Err(reason) => counters.drop_packet(reason),
                },
                FrameType::DataOffload if session.offload && inside.offload() => {
                    let checked = offload::Header::split_checked(&frame.payload);
                    let (header, packet) = checked.map_err(|e| {
                        counters.drop_packet(DropReason::BadOffload);
                        OutsideError::BadOffload(e)
                    })?;
                    match filter(packet) {
                        Ok(()) => {
                            inside.send_parts(&header.to_device(), packet).await?;
                            Counters::add(&counters.rx_packets, 1);
                            Counters::add(&counters.rx_bytes, packet.len() as u64);
                        }
                        Err(reason) => counters.drop_packet(reason),
                    }
                }
                FrameType::Ping => {
                    // A full control queue means Pongs are already pending.
                    let _ = control.try_send(Control::Pong(frame.payload));
                }
                FrameType::Pong => {}
                // The client says where data goes (it decides from its probes).
                FrameType::Path if udp.is_some() => match frame.payload.as_ref() {
                    [b] => match (path_use(*b), udp) {
                        (Some(why), Some(path)) => path.carry_on(why),
                        _ => return Err(OutsideError::Unexpected(FrameType::Path)),
                    },
                    _ => return Err(OutsideError::Unexpected(FrameType::Path)),
                },
                // The owner reads it; a newer one replaces one not yet read.
                FrameType::Update => match updates {
                    Some(tx) => {
                        tx.send_replace(frame.payload);
                    }
                    None => return Err(OutsideError::Unexpected(FrameType::Update)),
                },
                FrameType::Bye => {
                    return message::decode(&frame.payload).map_err(|source| {
                        OutsideError::Message {
                            kind: FrameType::Bye,
                            source,
                        }
                    })
                }
                other => return Err(OutsideError::Unexpected(other)),
            }
        }
        batch.flush(inside).await?;
        sizing.before_read(&mut rbuf);
        let limit = session.keepalive.timeout;
        let read = tokio::time::timeout(limit, reader.read_buf(&mut rbuf));
        match read.await {
            Err(_) => return Err(OutsideError::Timeout(limit)),
            Ok(Ok(0)) => return Err(OutsideError::Closed),
            Ok(Ok(n)) => sizing.after_read(n),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Read buffer sizing: large reads while traffic flows, a small buffer while
/// the session idles, so a thousand idle sessions cost little memory.
#[derive(Debug, Default)]
struct ReadSizing {
    /// The last read filled most of the room it had: expect more.
    busy: bool,
}

/// Room for a read while idle.
const IDLE_READ: usize = 4 * 1024;

impl ReadSizing {
    fn before_read(&mut self, rbuf: &mut BytesMut) {
        if !self.busy && rbuf.is_empty() && rbuf.capacity() > 4 * IDLE_READ {
            // Give the large buffer back; a Ping or two fit in a small one.
            *rbuf = BytesMut::with_capacity(IDLE_READ);
        }
        let want = if self.busy { READ_CHUNK } else { IDLE_READ };
        if rbuf.capacity() - rbuf.len() < want / 2 {
            rbuf.reserve(want);
        }
    }

    fn after_read(&mut self, n: usize) {
        self.busy = n >= IDLE_READ / 2;
    }
}

/// Plain packets received together, written to an offload device in one
/// batch so that its GRO merges each TCP flow into few large writes.
#[derive(Default)]
struct Batch {
    bufs: Vec<BytesMut>,
    len: usize,
}

impl Batch {
    /// Packets per batch (tun-rs's ideal batch size).
    const MAX: usize = 128;

    fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            self.bufs.push(BytesMut::new());
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.extend_from_slice(&offload::PLAIN);
        b.extend_from_slice(packet);
        self.len += 1;
    }

    fn is_full(&self) -> bool {
        self.len >= Self::MAX
    }

    async fn flush<I: Inside>(&mut self, inside: &I) -> std::io::Result<()> {
        if self.len > 0 {
            let n = std::mem::take(&mut self.len);
            inside.send_batch(&mut self.bufs[..n]).await?;
        }
        Ok(())
    }
}

/// How packets from the device become frames.
#[derive(Debug, Clone, Copy)]
struct Mode {
    device_offload: bool,
    session_offload: bool,
}

async fn write_loop<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    outbound: &mut QueueRx,
    mut control: mpsc::Receiver<Control>,
    counters: &Counters,
    keepalive: Keepalive,
    mode: Mode,
    mut udp: Option<UdpTx>,
) -> Result<(), OutsideError> {
    let mut out = Gather::default();
    let mut datagrams = UdpOut::default();
    let mut ping = tokio::time::interval(keepalive.interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        tokio::select! {
            biased;
            msg = control.recv() => match msg {
                Some(Control::Pong(payload)) => out.frame(FrameType::Pong, &payload),
                Some(Control::Bye(bye)) => {
                    out.frame(FrameType::Bye, &message::encode(&bye));
                    out.write_to(&mut writer).await?;
                    writer.flush().await?;
                    writer.shutdown().await?;
                    return Ok(());
                }
                Some(Control::Close) => {
                    out.write_to(&mut writer).await?;
                    writer.flush().await?;
                    writer.shutdown().await?;
                    return Ok(());
                }
                Some(Control::Path(why)) => out.frame(FrameType::Path, &[path_byte(why)]),
                Some(Control::Update(payload)) => out.frame(FrameType::Update, &payload),
                Some(Control::Probe(n)) => {
                    if let Some(u) = udp.as_mut() {
                        let pad = [0u8; udp::PROBE_BODY - 8];
                        let sent = async {
                            datagrams.push(u, Kind::Probe, &[&n.to_be_bytes(), &pad], counters).await?;
                            datagrams.flush(&u.path).await
                        }
                        .await;
                        keep_udp(&mut udp, &mut datagrams, sent);
                    }
                    continue;
                }
                Some(Control::ProbeReply(body, to, src)) => {
                    if let Some(u) = udp.as_mut() {
                        let sent = udp::send_to(u, Kind::ProbeReply, &body, to, src).await;
                        keep_udp(&mut udp, &mut datagrams, sent);
                    }
                    continue;
                }
                Some(Control::Challenge(bytes, to, src)) => {
                    if let Some(u) = udp.as_mut() {
                        let sent = udp::send_to(u, Kind::Challenge, &bytes, to, src).await;
                        keep_udp(&mut udp, &mut datagrams, sent);
                    }
                    continue;
                }
                Some(Control::Respond(bytes)) => {
                    if let Some(u) = udp.as_mut() {
                        let sent = async {
                            datagrams.push(u, Kind::Response, &[&bytes], counters).await?;
                            datagrams.flush(&u.path).await
                        }
                        .await;
                        keep_udp(&mut udp, &mut datagrams, sent);
                    }
                    continue;
                }
                None => return Ok(()),
            },
            packet = outbound.recv() => {
                let Some(packet) = packet else { return Ok(()) };
                if let Some(u) = udp.as_mut().filter(|u| u.path.sending()) {
                    let sent = async {
                        datagrams.push_device_packet(u, &packet, mode.device_offload, counters).await?;
                        // Gather whatever else is ready into as few sends as possible.
                        for _ in 0..UDP_BATCH {
                            let Some(packet) = outbound.try_recv() else { break };
                            datagrams.push_device_packet(u, &packet, mode.device_offload, counters).await?;
                        }
                        datagrams.flush(&u.path).await
                    }
                    .await;
                    keep_udp(&mut udp, &mut datagrams, sent);
                    if out.is_empty() {
                        continue;
                    }
                } else {
                    encode_data(packet, &mut out, counters, mode);
                    // Gather whatever else is ready into the same write.
                    while out.len() < WRITE_BATCH {
                        match outbound.try_recv() {
                            Some(packet) => encode_data(packet, &mut out, counters, mode),
                            None => break,
                        }
                    }
                }
            }
            _ = ping.tick() => out.frame(FrameType::Ping, &[]),
        }
        debug_assert!(datagrams.is_empty());
        out.write_to(&mut writer).await?;
        writer.flush().await?;
    }
}

/// After a send over UDP: an error the socket reports for itself, not for
/// one datagram (those the socket calls transient and drops), ends the UDP
/// side of this session, not the session: data goes on over the TLS
/// connection, and the client, whose probes then go unanswered, falls back
/// to it as it does when UDP is blocked.
fn keep_udp(udp: &mut Option<UdpTx>, queued: &mut UdpOut, sent: std::io::Result<()>) {
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot send over UDP; data stays on the TLS connection");
        *udp = None;
        queued.clear();
    }
}

fn encode_data(raw: Bytes, out: &mut Gather, counters: &Counters, mode: Mode) {
    let count = |n: usize| {
        Counters::add(&counters.tx_packets, 1);
        Counters::add(&counters.tx_bytes, n as u64);
    };
    if !mode.device_offload {
        count(raw.len());
        return out.frame_shared(FrameType::Data, &[], raw);
    }
    if raw.len() <= offload::HEADER_LEN {
        return counters.drop_packet(DropReason::Malformed);
    }
    let header = offload::Header::from_device(&raw[..offload::HEADER_LEN]);
    if mode.session_offload {
        let packet = raw.slice(offload::HEADER_LEN..);
        count(packet.len());
        return out.frame_shared(FrameType::DataOffload, &header.to_wire(), packet);
    }
    // The peer takes only plain packets: cut the large one here.
    let split = offload::split(&header, &raw[offload::HEADER_LEN..], |segment| {
        out.frame(FrameType::Data, segment);
        count(segment.len());
    });
    if split.is_err() {
        counters.drop_packet(DropReason::Malformed);
    }
}

/// Reads packets from `inside` and queues them for the outside until the
/// queue closes or the device fails. Used by the client; the server's device
/// reader dispatches to many sessions instead.
pub async fn inside_to_queue<I: Inside>(
    inside: &I,
    queue: QueueTx,
    max_packet: usize,
) -> std::io::Result<()> {
    let mut reader = RecvBuffer::new(max_packet);
    let offset = if inside.offload() {
        offload::HEADER_LEN
    } else {
        0
    };
    loop {
        let packet = reader.recv(inside).await?;
        let queued = if crate::ippacket::is_interactive(packet.get(offset..).unwrap_or_default()) {
            // A full urgent lane drops: these packets are worthless late.
            queue.try_send_urgent(packet).or(Ok(()))
        } else {
            queue.send(packet).await
        };
        if queued == Err(crate::queue::Full::Closed) {
            return Ok(());
        }
    }
}
