//! The relay's reading side on the TLS connection: frames from the outside,
//! data through the filter into the inside (batched for an offload device),
//! control frames answered or handed on, with the read buffer sized to the
//! traffic.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadHalf};
use tokio::sync::{mpsc, watch};

use super::{path_use, Control, Counters, DropReason, Session};
use crate::inside::Inside;
use crate::message::{self, Bye};
use crate::offload;
use crate::outside::tcp::record::frame::{self, FrameType};
use crate::outside::tcp::{OutsideError, READ_CHUNK};
use crate::outside::udp::path as udp_path;

#[allow(clippy::too_many_arguments)]
pub(super) async fn read_loop<S, I, F>(
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
                        counters.received(frame.payload.len());
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
                            counters.received(packet.len());
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
pub(super) struct Batch {
    bufs: Vec<BytesMut>,
    len: usize,
}

impl Batch {
    /// Packets per batch (tun-rs's ideal batch size).
    const MAX: usize = 128;

    pub(super) fn push(&mut self, packet: &[u8]) {
        if self.len == self.bufs.len() {
            self.bufs.push(BytesMut::new());
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.extend_from_slice(&offload::PLAIN);
        b.extend_from_slice(packet);
        self.len += 1;
    }

    pub(super) fn is_full(&self) -> bool {
        self.len >= Self::MAX
    }

    pub(super) async fn flush<I: Inside>(&mut self, inside: &I) -> std::io::Result<()> {
        if self.len > 0 {
            let n = std::mem::take(&mut self.len);
            inside.send_batch(&mut self.bufs[..n]).await?;
        }
        Ok(())
    }
}
