//! The relay: moves packets between an inside (TUN) and an outside (framed
//! TLS stream, and the UDP channel beside it when the session has one) and
//! counts them. It knows no configuration: what may enter the inside is
//! decided by the filter its caller passes in.
//!
//! [`relay`] runs the reading side ([`read`]) and the writing side
//! ([`write`]) of the TLS connection, and the UDP side ([`udp`]) when the
//! session has one, and ends them together; [`counters`] is what they count.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use crate::inside::Inside;
use crate::message::{Bye, ByeReason};
use crate::outside::tcp::info::TcpUse;
use crate::outside::tcp::{Outside, OutsideError};
use crate::outside::udp::path as udp_path;
use crate::outside::udp::Role;
use crate::queue::QueueRx;

mod choice;
mod counters;
mod read;
pub mod train;
mod udp;
mod write;

pub use counters::{Counters, DropReason};
use read::read_loop;
pub use udp::{Udp, UdpInput};
pub use write::WRITE_BATCH;
use write::{write_loop, Mode};
/// How long a closing side waits for its Bye to be written.
const BYE_GRACE: Duration = Duration::from_secs(2);

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
    /// A datagram of the UDP path itself, sent when the session has one.
    Udp(UdpControl),
    /// Client: tell the server where data goes now, and why.
    Path(TcpUse),
    /// Server: the payload of an Update frame.
    Update(Bytes),
}

/// The datagrams that keep the UDP path (not data): probes and challenges.
enum UdpControl {
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
