//! The UDP socket of the data channel, with Linux's segmentation offloads:
//! a burst of equal-sized datagrams leaves in one `sendmsg` (UDP_SEGMENT)
//! and arrives in one `recvmsg` (UDP_GRO). quinn-udp sets these up.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// Socket buffer sizes asked for: a few milliseconds of a multi-Gbit/s
/// burst, so the kernel does not drop while a thread is busy elsewhere.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Largest UDP payload that fits one IP packet; a GSO send stays below it.
pub const MAX_SEND: usize = 65_000;
/// Room for one receive: a GRO batch of up to 64 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Datagrams received together from one source, `stride` bytes apart (the
/// last may be shorter).
#[derive(Debug)]
pub struct RecvBatch {
    /// Where they came from.
    pub from: SocketAddr,
    /// The local address they were sent to, if the kernel said.
    pub to: Option<IpAddr>,
    /// The datagrams, back to back (opened in place).
    pub data: BytesMut,
    /// Size of each datagram but the last.
    pub stride: usize,
}

impl RecvBatch {
    /// The datagrams one by one.
    pub fn datagrams_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let stride = self.stride.max(1);
        self.data.chunks_mut(stride)
    }

    /// How many datagrams the batch holds.
    pub fn count(&self) -> usize {
        self.data.len().div_ceil(self.stride.max(1))
    }

    /// The session number of the first datagram, if it has a header.
    pub fn session(&self) -> Option<u32> {
        super::datagram::Header::parse(&self.data[..self.stride.min(self.data.len())])
            .ok()
            .map(|h| h.session)
    }
}

/// A non-blocking UDP socket with offload state.
#[derive(Debug)]
pub struct UdpSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

impl UdpSocket {
    /// Binds `addr` (the server: the same address and port as the TCP listener).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// A socket for talking to `server` only (the client).
    pub fn connect(server: SocketAddr) -> io::Result<Self> {
        let any: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = std::net::UdpSocket::bind(any)?;
        sock.connect(server)?;
        Self::from_std(sock)
    }

    fn from_std(sock: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&sock).into())?;
        // Best effort: without the privilege to exceed rmem_max/wmem_max the
        // kernel caps these, which only costs drops under load.
        let _ = state.set_recv_buffer_size((&sock).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&sock).into(), SOCKET_BUFFER);
        let io = tokio::net::UdpSocket::from_std(sock)?;
        Ok(Self { io, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Most datagrams one send may carry.
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends `contents` to `to` from local address `from` (None: the
    /// kernel's choice): one datagram, or with `segment` below the length,
    /// datagrams of `segment` bytes (the last may be shorter).
    pub async fn send(
        &self,
        to: SocketAddr,
        from: Option<IpAddr>,
        contents: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (segment < contents.len()).then_some(segment),
            src_ip: from,
        };
        loop {
            self.io.writable().await?;
            let sent = self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), &transmit)
            });
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A datagram the path refuses (ICMP errors reported on a
                // connected socket, a route that went away) is lost like any
                // datagram; the path's liveness check notices.
                Err(e) if transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for datagrams; returns at least one batch.
    pub async fn recv(&self, pool: &mut RecvPool) -> io::Result<Vec<RecvBatch>> {
        loop {
            self.io.readable().await?;
            if let Some(batches) = self.try_recv(pool)? {
                return Ok(batches);
            }
        }
    }
}

impl UdpSocket {
    /// Datagrams that are already there, without waiting (None: none).
    pub fn try_recv(&self, pool: &mut RecvPool) -> io::Result<Option<Vec<RecvBatch>>> {
        let got = self.io.try_io(Interest::READABLE, || {
            let mut slices: Vec<IoSliceMut<'_>> = pool
                .bufs
                .iter_mut()
                .map(|b| IoSliceMut::new(&mut b[..]))
                .collect();
            self.state
                .recv((&self.io).into(), &mut slices, &mut pool.meta)
        });
        match got {
            Ok(n) => Ok(Some(pool.take(n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || transient(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Errors a UDP socket reports for one datagram, not for itself.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::ECONNREFUSED
                | nix::libc::EHOSTUNREACH
                | nix::libc::ENETUNREACH
                | nix::libc::EMSGSIZE
                | nix::libc::EPERM
                | nix::libc::ENOBUFS
        )
    )
}

/// Receive buffers, reused across calls.
#[derive(Debug)]
pub struct RecvPool {
    bufs: Vec<BytesMut>,
    meta: Vec<RecvMeta>,
}

impl RecvPool {
    /// Room for `batches` GRO batches per receive.
    pub fn new(batches: usize) -> Self {
        let n = batches.max(1);
        Self {
            bufs: (0..n).map(|_| BytesMut::zeroed(RECV_BUF)).collect(),
            meta: vec![RecvMeta::default(); n],
        }
    }

    fn take(&mut self, n: usize) -> Vec<RecvBatch> {
        let mut out = Vec::with_capacity(n);
        for (buf, meta) in self.bufs.iter_mut().zip(&self.meta).take(n) {
            // The pool keeps its buffers; the batch gets a copy of its bytes.
            out.push(RecvBatch {
                from: meta.addr,
                to: meta.dst_ip,
                data: BytesMut::from(&buf[..meta.len]),
                stride: meta.stride,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Audit finding: a datagram from source port 0 (legal on the wire, and
    /// delivered by Linux) that authenticates moves the server's path there
    /// (or gets a probe reply sent there). Sending to port 0 fails with
    /// EINVAL, which `send` reports as fatal (the relay's write loop, and so
    /// the whole TLS session, ends), and quinn-udp reacts to EINVAL by
    /// switching segmentation offload off for good, on the socket every
    /// session shares. The read loop now refuses such sources before it
    /// opens anything (`path::replyable`).
    #[tokio::test]
    async fn sending_to_port_zero_fails_and_halts_offload_on_the_shared_socket() {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let before = socket.max_segments();
        let to: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let err = socket
            .send(to, None, &[0u8; 64], 64)
            .await
            .expect_err("port 0 is no destination");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EINVAL));
        assert!(!transient(&err), "the relay treats it as fatal");
        if before > 1 {
            // Loopback offers GSO on any recent kernel (64 segments here).
            assert_eq!(socket.max_segments(), 1, "GSO is off for every session");
        }
    }
}
