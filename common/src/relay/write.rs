//! The relay's writing side: packets from the queue framed into gathered
//! writes on the TLS connection, or sealed into datagrams while the UDP path
//! carries data; control frames (Pong, Bye, Path, Update), UDP probes and the
//! keepalive Ping in between.

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;

use super::udp::{self, UdpOut, UdpTx};
use super::{path_byte, Control, Counters, DropReason, Keepalive, UdpControl};
use crate::message;
use crate::offload;
use crate::outside::tcp::info::TcpUse;
use crate::outside::tcp::record::frame::FrameType;
use crate::outside::tcp::record::gather::Gather;
use crate::outside::tcp::OutsideError;
use crate::outside::udp::datagram::Kind;
use crate::queue::QueueRx;

/// Coalesce queued frames into one write up to this many bytes.
pub const WRITE_BATCH: usize = 64 * 1024;
/// Queued packets sealed into datagrams before they are sent.
const UDP_BATCH: usize = 64;

/// How packets from the device become frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    pub(super) device_offload: bool,
    pub(super) session_offload: bool,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn write_loop<S: AsyncWrite>(
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
                    return close(&mut out, &mut writer).await;
                }
                Some(Control::Close) => return close(&mut out, &mut writer).await,
                Some(Control::Path(why)) => out.frame(FrameType::Path, &[path_byte(why)]),
                Some(Control::Update(payload)) => out.frame(FrameType::Update, &payload),
                Some(Control::Udp(c)) => {
                    if let Some(u) = udp.as_mut() {
                        let sent = send_udp_control(u, &mut datagrams, c, counters).await;
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

/// Writes what is gathered, then ends the TLS stream with close_notify.
async fn close<S: AsyncWrite>(
    out: &mut Gather,
    writer: &mut WriteHalf<S>,
) -> Result<(), OutsideError> {
    out.write_to(writer).await?;
    writer.flush().await?;
    writer.shutdown().await?;
    Ok(())
}

/// Sends one datagram of the UDP path: a client's own (probe, challenge
/// echo) over the path, a server's answer to the address it answers.
async fn send_udp_control(
    u: &mut UdpTx,
    datagrams: &mut UdpOut,
    control: UdpControl,
    counters: &Counters,
) -> std::io::Result<()> {
    match control {
        UdpControl::Probe(n) => {
            let pad = [0u8; udp::PROBE_BODY - 8];
            datagrams
                .push(u, Kind::Probe, &[&n.to_be_bytes(), &pad], counters)
                .await?;
            datagrams.flush(&u.path).await
        }
        UdpControl::Respond(bytes) => {
            datagrams
                .push(u, Kind::Response, &[&bytes], counters)
                .await?;
            datagrams.flush(&u.path).await
        }
        UdpControl::ProbeReply(body, to, src) => {
            udp::send_to(u, Kind::ProbeReply, &body, to, src).await
        }
        UdpControl::Challenge(bytes, to, src) => {
            udp::send_to(u, Kind::Challenge, &bytes, to, src).await
        }
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
        if let Some(u) = udp.take() {
            u.path.carry_on(TcpUse::Fallback);
        }
        queued.clear();
    }
}

fn encode_data(raw: Bytes, out: &mut Gather, counters: &Counters, mode: Mode) {
    let count = |n: usize| counters.sent(n);
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
