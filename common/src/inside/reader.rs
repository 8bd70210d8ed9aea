//! The client's device reader: packets from the inside into the queue for
//! the outside, small interactive ones into the urgent lane.

use super::{Inside, RecvBuffer};
use crate::offload;
use crate::queue::{Full, QueueTx};

/// Reads packets from `inside` and queues them for the outside until the
/// queue closes or the device fails. Used by the client; the server's device
/// reader dispatches to many sessions instead.
pub async fn to_queue<I: Inside>(
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
        if queued == Err(Full::Closed) {
            return Ok(());
        }
    }
}
