//! The handshake: rustls's unbuffered connection driven over an async
//! stream until the handshake is complete; the same connection then carries
//! the data phase in a [`SecureStream`].

use std::io;
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::{Conn, SendBuf};
use super::{protocol_error, tls_error, SecureStream, MAX_RECORD};

/// Largest buffer the handshake may need (a long certificate chain).
const MAX_HANDSHAKE_BUF: usize = 256 * 1024;

/// What the handshake learned about the peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The ALPN protocol agreed on.
    pub alpn: Option<Vec<u8>>,
    /// The peer's certificate chain, leaf first (empty if it sent none).
    pub certificates: Vec<CertificateDer<'static>>,
}

/// Runs a client handshake over `io`.
pub async fn connect<T>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: T,
) -> io::Result<SecureStream<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let wants_alpn = !config.alpn_protocols.is_empty();
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let (stream, peer) = handshake(conn, io).await?;
    // rustls refuses a protocol we did not offer, but accepts a server that
    // chose none; ours always chooses one.
    if wants_alpn && peer.alpn.is_none() {
        return Err(tls_error(rustls::Error::NoApplicationProtocol));
    }
    Ok(stream)
}

/// Runs a server handshake over `io`; the caller checks the peer.
pub async fn accept<T>(config: Arc<ServerConfig>, io: T) -> io::Result<(SecureStream<T>, PeerInfo)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    handshake(conn, io).await
}

/// The two unbuffered connection kinds, driven by one handshake loop.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
    fn into_conn(self) -> Conn;
}

/// Both sides' unbuffered connections drive the handshake alike.
macro_rules! handshaking {
    ($conn:ty, $data:ty, $variant:path) => {
        impl Handshaking for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn common(&self) -> &CommonState {
                self
            }
            fn into_conn(self) -> Conn {
                $variant(self)
            }
        }
    };
}

handshaking!(
    UnbufferedClientConnection,
    ClientConnectionData,
    Conn::Client
);
handshaking!(
    UnbufferedServerConnection,
    ServerConnectionData,
    Conn::Server
);

/// What the handshake loop does after rustls has looked at the input.
enum Step {
    Read,
    PeerClosed,
    Writable,
    Failed(rustls::Error),
}

async fn handshake<C, T>(mut conn: C, mut io: T) -> io::Result<(SecureStream<T>, PeerInfo)>
where
    C: Handshaking,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0u8; MAX_RECORD];
    let mut filled = 0;
    let mut outgoing = SendBuf::default();
    let mut early_plain = Vec::new();
    let mut peer_closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[..filled]);
        let step = match state {
            Err(e) => Some(Step::Failed(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                // Data that came with the peer's last handshake flight.
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    early_plain.extend_from_slice(record.payload);
                }
                None
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                outgoing.encode(|out| encode.encode(out))?;
                None
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                io.write_all(outgoing.pending()).await?;
                io.flush().await?;
                outgoing.consume(outgoing.pending().len());
                transmit.done();
                None
            }
            Ok(ConnectionState::BlockedHandshake) => Some(Step::Read),
            // A server may send before the client's last flight arrived; we
            // wait for the handshake to complete.
            Ok(ConnectionState::WriteTraffic(_)) => Some(Step::Writable),
            // close_notify right behind the peer's Finished (and its data).
            Ok(ConnectionState::PeerClosed) => Some(Step::PeerClosed),
            Ok(ConnectionState::Closed) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Err(protocol_error("unexpected handshake state")),
        };
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        match step {
            None => continue,
            Some(Step::Writable) if !conn.common().is_handshaking() => break,
            Some(Step::PeerClosed) if !conn.common().is_handshaking() => {
                peer_closed = true;
                break;
            }
            Some(Step::PeerClosed) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Some(Step::Read | Step::Writable) => {
                if filled == incoming.len() {
                    if incoming.len() >= MAX_HANDSHAKE_BUF {
                        return Err(protocol_error("handshake message too large"));
                    }
                    incoming.resize(incoming.len() * 2, 0);
                }
                let n = io.read(&mut incoming[filled..]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                filled += n;
                continue;
            }
            Some(Step::Failed(err)) => {
                // rustls queued an alert for the peer: tell it why, if we can.
                let UnbufferedStatus { state, .. } = conn.process(&mut incoming[..filled]);
                if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
                    if outgoing.encode(|out| encode.encode(out)).is_ok() {
                        let _ = io.write_all(outgoing.pending()).await;
                        let _ = io.flush().await;
                    }
                }
                return Err(tls_error(err));
            }
        }
    }
    let common = conn.common();
    let peer = PeerInfo {
        alpn: common.alpn_protocol().map(<[u8]>::to_vec),
        certificates: common
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    };
    // Bytes of records rustls did not process start the receive buffer.
    incoming.truncate(filled);
    let stream = SecureStream::new(io, conn.into_conn(), incoming, early_plain, peer_closed);
    Ok((stream, peer))
}
