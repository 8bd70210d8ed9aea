//! A client that speaks the wire protocol but sends frames of its own making:
//! the real handshake and hello (with `offload` announced), then chosen
//! DataOffload frames, then it reads what the server answers. For tests of
//! what the server does with a malicious, authenticated peer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use twoway_client::config::ClientConfig;
use twoway_client::connect::connect;
use twoway_common::message::{self, Assignment, Bye, FEATURE_OFFLOAD};
use twoway_common::offload::Header;
use twoway_common::outside::tcp::record::frame::{self, FrameType};
use twoway_common::outside::tcp::OutsideError;

/// One forged frame: an offload header, the packet behind it, and how long
/// to wait after sending it.
#[derive(Debug, Clone)]
pub struct OffloadFrame {
    /// The 10-byte header, as the peer would put it on the wire.
    pub header: Header,
    /// The IP packet.
    pub packet: Vec<u8>,
    /// Pause after the frame.
    pub pause: Duration,
}

/// What the server did.
#[derive(Debug)]
pub struct Outcome {
    /// The assignment the session got.
    pub assignment: Assignment,
    /// The server's Bye, if it sent one.
    pub bye: Option<Bye>,
    /// Whether the server closed the connection within the wait.
    pub closed: bool,
}

/// Connects from namespace `ns` with the client config at `config`, lets
/// `frames` build the frames from the assignment, sends them and reads until
/// the server closes or `wait` has passed.
pub fn offload_frames(
    ns: &str,
    config: &Path,
    wait: Duration,
    frames: impl FnOnce(&Assignment) -> Vec<OffloadFrame> + Send + 'static,
) -> anyhow::Result<Outcome> {
    let config: PathBuf = config.to_owned();
    crate::in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime")?
            .block_on(run(&config, wait, frames))
    })
    .context("thread in the namespace")?
}

async fn run(
    config: &Path,
    wait: Duration,
    frames: impl FnOnce(&Assignment) -> Vec<OffloadFrame>,
) -> anyhow::Result<Outcome> {
    let mut config = ClientConfig::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.tunnel.offload = true;
    let tls = twoway_client::credentials::load(&config)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .tls;
    let mut conn = connect(&config, tls)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    if !conn
        .assignment
        .features
        .iter()
        .any(|f| f == FEATURE_OFFLOAD)
    {
        bail!("the server did not enable offload: {:?}", conn.assignment);
    }
    for f in frames(&conn.assignment) {
        let mut out = BytesMut::new();
        frame::encode_parts(
            FrameType::DataOffload,
            &f.header.to_wire(),
            &f.packet,
            &mut out,
        );
        conn.outside.stream.write_all(&out).await?;
        conn.outside.stream.flush().await?;
        tokio::time::sleep(f.pause).await;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut bye = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.outside.read_frame(left).await {
            Ok(f) if f.kind == FrameType::Bye => bye = Some(message::decode(&f.payload)?),
            Ok(_) => {}
            Err(OutsideError::Timeout(_)) => {
                return Ok(Outcome {
                    assignment: conn.assignment,
                    bye,
                    closed: false,
                })
            }
            Err(_) => break,
        }
    }
    Ok(Outcome {
        assignment: conn.assignment,
        bye,
        closed: true,
    })
}

/// The Internet checksum's one's-complement sum of `data`, folded, not inverted.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// An IPv6 UDP packet whose checksum field holds the pseudo-header sum, as a
/// kernel leaves it for checksum offload (`NEEDS_CSUM`, start 40, offset 6).
pub fn udp6_partial(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let partial = sum16(&pseudo, 0) as u16;
    udp[6..8].copy_from_slice(&partial.to_be_bytes());
    let mut p = twoway_common::ippacket::build::ipv6(src, dst, &udp);
    p[6] = 17;
    p
}
