//! Reaching the server: TCP, the TLS 1.3 handshake with both certificates,
//! the hello, and the server's answer (an assignment or a refusal).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use twoway_common::message::{
    self, Assignment, Hello, Refusal, RefuseCode, FEATURE_OFFLOAD, FEATURE_UDP, FEATURE_UPDATE,
    PROTOCOL_VERSION,
};
use twoway_common::outside::tcp::info::TcpHandle;
use twoway_common::outside::tcp::record::frame::FrameType;
use twoway_common::outside::tcp::record::secure::{self, SecureStream};
use twoway_common::outside::tcp::{Outside, OutsideError};
use twoway_common::outside::udp::keys::REKEY_AFTER;
use twoway_common::outside::udp::{self, RecvPool, Role, UdpPath, UdpSocket};
use twoway_common::relay::{Udp, UdpInput};
use twoway_common::tls::{self, verify};
use twoway_common::tuning::Transport;

use crate::config::{split_host_port, ClientConfig};
use crate::error::ClientError;

/// An established session, ready to relay.
#[derive(Debug)]
pub struct Connection {
    /// The framed TLS stream.
    pub outside: Outside<SecureStream<TcpStream>>,
    /// What the server assigned.
    pub assignment: Assignment,
    /// The server's address this connection went to.
    pub peer: SocketAddr,
    /// This host's end of the connection.
    pub local: SocketAddr,
    /// The UDP secrets the assignment carried, taken out of it at once so
    /// that no kept copy of the assignment (status, the tunnel) holds them.
    udp_secret: Option<twoway_common::outside::udp::UdpSecret>,
}

/// Connects, authenticates and waits for the assignment.
pub async fn connect(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
) -> Result<Connection, ClientError> {
    connect_to(config, tls_config, None).await
}

/// Like [`connect`]; with `pinned`, the TCP connection goes to that address
/// instead of resolving `server` again (while a full tunnel is up, only the
/// pinned address is routed outside it).
pub async fn connect_to(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
    pinned: Option<SocketAddr>,
) -> Result<Connection, ClientError> {
    let limit = Duration::from_secs(config.connect_timeout_secs.into());
    tokio::time::timeout(limit, handshake(config, tls_config, limit, pinned))
        .await
        .map_err(|_| {
            ClientError::Unreachable(format!("{}: no answer within {limit:?}", config.server))
        })?
}

async fn handshake(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
    limit: Duration,
    pinned: Option<SocketAddr>,
) -> Result<Connection, ClientError> {
    let (host, port) = split_host_port(&config.server).ok_or_else(|| {
        ClientError::Config(format!("server {:?} is not host:port", config.server))
    })?;
    let tcp = match pinned {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect((host, port)).await,
    }
    .map_err(|e| ClientError::Unreachable(format!("{}: {e}", config.server)))?;
    twoway_common::outside::tcp::tune::tune(&tcp, &config.tunnel.congestion);
    let peer = tcp
        .peer_addr()
        .map_err(|e| ClientError::Unreachable(format!("{}: {e}", config.server)))?;
    let local = tcp
        .local_addr()
        .map_err(|e| ClientError::Internal(format!("local address: {e}")))?;
    let name =
        tls::server_name(&config.server_name).map_err(|e| ClientError::Config(e.to_string()))?;
    let stream = secure::connect(tls_config, name, tcp)
        .await
        .map_err(|e| tls_failure(&e, config))?;
    let mut outside = Outside::new(stream);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        features: [
            (config.tunnel.offload && cfg!(target_os = "linux")).then_some(FEATURE_OFFLOAD),
            (config.transport != Transport::Tcp).then_some(FEATURE_UDP),
            Some(FEATURE_UPDATE),
        ]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .collect(),
        software: format!("twoway {}", env!("CARGO_PKG_VERSION")),
    };
    // If the server refused our certificate, the write may fail before the
    // alert is read; the read below reports the real reason.
    let _ = outside.write_message(FrameType::Hello, &hello).await;
    let frame = outside.read_frame(limit).await.map_err(|e| match e {
        OutsideError::Io(io) => tls_failure(&io, config),
        OutsideError::Closed => ClientError::Unreachable(format!(
            "{} closed the connection before answering",
            config.server
        )),
        other => ClientError::Internal(format!("{}: {other}", config.server)),
    })?;
    match frame.kind {
        FrameType::Assign => {
            let mut assignment: Assignment = message::decode(&frame.payload)
                .map_err(|e| ClientError::Internal(format!("bad assignment from server: {e}")))?;
            let udp_secret = assignment.udp_secret.take();
            let bad = message::drop_bad_search_domains(&mut assignment.search);
            if !bad.is_empty() {
                tracing::warn!(domains = ?bad, "the server pushed search domains that are not domain names; left out");
            }
            Ok(Connection {
                outside,
                assignment,
                peer,
                local,
                udp_secret,
            })
        }
        FrameType::Refuse => {
            let r: Refusal = message::decode(&frame.payload)
                .map_err(|e| ClientError::Internal(format!("bad refusal from server: {e}")))?;
            Err(refused(r))
        }
        other => Err(ClientError::Internal(format!(
            "server sent {other:?} instead of an assignment"
        ))),
    }
}

/// Datagram batches the client reads per receive.
const UDP_RECV_BATCHES: usize = 32;

impl Connection {
    /// The UDP channel of this session, when the server offered it: a socket
    /// to the server's address and port, keys from the secrets in the assignment. None
    /// when the server did not offer it or the socket cannot be made (data
    /// then stays on the TLS connection).
    pub fn udp_channel(&mut self, transport: Transport, congestion: &str) -> Option<Udp> {
        if !self.assignment.features.iter().any(|f| f == FEATURE_UDP) {
            return None;
        }
        let number = self.assignment.udp_session?;
        let secret = self.udp_secret.take()?;
        let socket = match UdpSocket::connect(self.peer) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, server = %self.peer, "cannot open a UDP socket; data stays on the TLS connection");
                return None;
            }
        };
        let (seal, open) = secret.split(Role::Client, REKEY_AFTER);
        let path = UdpPath::new(std::sync::Arc::new(socket), Some(self.peer))
            .with_tcp(TcpHandle::new(self.outside.stream.get_ref(), congestion));
        Some(Udp {
            path: std::sync::Arc::new(path),
            sender: udp::Sender::new(number, seal),
            receiver: udp::Receiver::new(number, open),
            input: UdpInput::Socket(RecvPool::new(UDP_RECV_BATCHES)),
            role: Role::Client,
            clean_tcp: transport == Transport::Auto,
        })
    }
}

fn refused(r: Refusal) -> ClientError {
    let text = format!("server refused the session ({:?}): {}", r.code, r.message);
    match r.code {
        c if c.is_permanent() => ClientError::Auth(text),
        RefuseCode::PoolExhausted | RefuseCode::Busy | RefuseCode::Duplicate => {
            ClientError::Unreachable(text)
        }
        _ => ClientError::Internal(text),
    }
}

/// A failed handshake, in words that say which side refused what.
fn tls_failure(e: &std::io::Error, config: &ClientConfig) -> ClientError {
    let server = &config.server;
    let Some(r) = tls::rustls_error(e) else {
        return ClientError::Unreachable(format!("{server}: {e}"));
    };
    if let Some(explained) = verify::Explained::find(r) {
        let key = match explained.problem {
            verify::Problem::Issuer if config.tls.ca_pem.is_some() => "tls.ca_pem",
            verify::Problem::Issuer => "tls.ca",
            verify::Problem::Name => "server_name",
        };
        return ClientError::Auth(format!(
            "{server}: {explained} (key `{key}` in {})",
            config.path.display()
        ));
    }
    if let rustls::Error::AlertReceived(alert) = r {
        let [_, cert, _] = config.tls_sources();
        if let Some(text) = verify::alert_from_server(*alert, &cert) {
            return ClientError::Auth(format!("{server}: {text}"));
        }
    }
    if tls::is_auth_failure(r) {
        ClientError::Auth(format!("{server}: {r}"))
    } else {
        ClientError::Unreachable(format!("{server}: TLS failed: {r}"))
    }
}
