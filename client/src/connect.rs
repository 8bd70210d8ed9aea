//! Reaching the server: TCP, the TLS 1.3 handshake with both certificates,
//! the hello, and the server's answer (an assignment or a refusal).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use twoway_common::message::{
    self, Assignment, Hello, Refusal, FEATURE_OFFLOAD, FEATURE_UDP, FEATURE_UPDATE,
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

/// Why reaching the server, or getting a session from it, failed. The exit
/// code of each is in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No answer within `connect_timeout_secs`.
    #[error("{server}: no answer within {limit:?}")]
    TimedOut {
        /// The configured server.
        server: String,
        /// The time limit.
        limit: Duration,
    },
    /// The configured server is not `host:port`.
    #[error("server {0:?} is not host:port")]
    NotHostPort(String),
    /// The configured `server_name` cannot be a TLS server name.
    #[error(transparent)]
    ServerName(tls::TlsError),
    /// The TCP connection failed, or the TLS connection failed below TLS.
    #[error("{server}: {source}")]
    Tcp {
        /// The configured server.
        server: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The connection's local address cannot be read.
    #[error("local address: {0}")]
    LocalAddress(#[source] std::io::Error),
    /// The server closed the connection before it answered the hello.
    #[error("{0} closed the connection before answering")]
    Closed(String),
    /// Reading the server's answer failed.
    #[error("{server}: {source}")]
    Outside {
        /// The configured server.
        server: String,
        /// What went wrong.
        #[source]
        source: OutsideError,
    },
    /// The server's answer cannot be read.
    #[error("bad {what} from server: {source}")]
    BadMessage {
        /// `assignment` or `refusal`.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: message::MessageError,
    },
    /// The server answered with something else than an assignment or a refusal.
    #[error("server sent {0:?} instead of an assignment")]
    Unexpected(FrameType),
    /// The server refused the session.
    #[error("server refused the session ({:?}): {}", .0.code, .0.message)]
    Refused(Refusal),
    /// We did not accept the server's certificate.
    #[error("{server}: {explained} (key `{key}` in {})", .config.display())]
    ServerCertificate {
        /// The configured server.
        server: String,
        /// What was wrong, in words.
        explained: String,
        /// The config key that would fix it.
        key: &'static str,
        /// The config file.
        config: std::path::PathBuf,
    },
    /// The server did not accept our certificate (its alert, explained).
    #[error("{server}: {text}")]
    ClientCertificate {
        /// The configured server.
        server: String,
        /// What the alert means for our certificate.
        text: String,
    },
    /// Any other TLS failure.
    #[error("{server}: {}{source}", if tls::is_auth_failure(.source) { "" } else { "TLS failed: " })]
    Tls {
        /// The configured server.
        server: String,
        /// What went wrong.
        #[source]
        source: rustls::Error,
    },
}

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
    /// Which entry of the config's `server` list it went to.
    pub server: usize,
    /// The UDP secrets the assignment carried, taken out of it at once so
    /// that no kept copy of the assignment (status, the tunnel) holds them.
    udp_secret: Option<twoway_common::outside::udp::UdpSecret>,
}

/// Connects, authenticates and waits for the assignment: to the first
/// entry of `server` that answers, in `server_order`.
pub async fn connect(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
) -> Result<Connection, ClientError> {
    let first = config.server.start(config.server_order);
    connect_any(config, tls_config, first).await
}

/// Tries the entries of `server` once each, from entry `first` on; a
/// refusal that another node would repeat (authentication, configuration)
/// ends the round. The connection's `server` is the entry that worked.
pub async fn connect_any(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
    first: usize,
) -> Result<Connection, ClientError> {
    let mut last: Option<ClientError> = None;
    let several = config.server.all().len() > 1;
    for i in config.server.round(first) {
        let mut one = config.clone();
        one.server = config.server.at(i);
        match connect_to(&one, tls_config.clone(), None).await {
            Ok(c) => return Ok(c),
            // One node down, or one node whose certificate does not verify
            // (a node's own mistake; our certificate is the same for all):
            // the next may do. A refusal of our identity would not.
            Err(e) if several && (e.is_retryable() || e.is_server_certificate()) => {
                tracing::warn!(server = %one.server, error = %e, "server failed; trying the next one");
                // What is reported if all fail: an unreachable node over a
                // bad certificate, since trying again later may then work.
                if last.as_ref().is_none_or(|l| !l.is_retryable()) {
                    last = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::NotHostPort("an empty server list".into()).into()))
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
        .map_err(|_| ConnectError::TimedOut {
            server: config.server.to_string(),
            limit,
        })?
        .map_err(ClientError::from)
}

async fn handshake(
    config: &ClientConfig,
    tls_config: Arc<rustls::ClientConfig>,
    limit: Duration,
    pinned: Option<SocketAddr>,
) -> Result<Connection, ConnectError> {
    let (host, port) = split_host_port(&config.server)
        .ok_or_else(|| ConnectError::NotHostPort(config.server.to_string()))?;
    let unreachable = |source| ConnectError::Tcp {
        server: config.server.to_string(),
        source,
    };
    let tcp = match pinned {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect((host, port)).await,
    }
    .map_err(unreachable)?;
    twoway_common::outside::tcp::tune::tune(&tcp, &config.tunnel.congestion);
    let peer = tcp.peer_addr().map_err(unreachable)?;
    let local = tcp.local_addr().map_err(ConnectError::LocalAddress)?;
    let name = tls::server_name(&config.server_name).map_err(ConnectError::ServerName)?;
    let stream = secure::connect(tls_config, name, tcp)
        .await
        .map_err(|e| tls_failure(e, config))?;
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
        OutsideError::Io(io) => tls_failure(io, config),
        OutsideError::Closed => ConnectError::Closed(config.server.to_string()),
        source => ConnectError::Outside {
            server: config.server.to_string(),
            source,
        },
    })?;
    match frame.kind {
        FrameType::Assign => {
            let mut assignment: Assignment =
                message::decode(&frame.payload).map_err(|source| ConnectError::BadMessage {
                    what: "assignment",
                    source,
                })?;
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
                server: config.server.current(),
                udp_secret,
            })
        }
        FrameType::Refuse => {
            let r: Refusal =
                message::decode(&frame.payload).map_err(|source| ConnectError::BadMessage {
                    what: "refusal",
                    source,
                })?;
            Err(ConnectError::Refused(r))
        }
        other => Err(ConnectError::Unexpected(other)),
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

/// A failed handshake, in words that say which side refused what.
fn tls_failure(e: std::io::Error, config: &ClientConfig) -> ConnectError {
    let server = config.server.to_string();
    let Some(r) = tls::rustls_error(&e).cloned() else {
        return ConnectError::Tcp { server, source: e };
    };
    if let Some(explained) = verify::Explained::find(&r) {
        let key = match explained.problem {
            verify::Problem::Issuer if config.tls.ca_pem.is_some() => "tls.ca_pem",
            verify::Problem::Issuer => "tls.ca",
            verify::Problem::Name => "server_name",
        };
        return ConnectError::ServerCertificate {
            server,
            explained: explained.to_string(),
            key,
            config: config.path.clone(),
        };
    }
    if let rustls::Error::AlertReceived(alert) = r {
        let [_, cert, _] = config.tls_sources();
        if let Some(text) = verify::alert_from_server(alert, &cert) {
            return ConnectError::ClientCertificate { server, text };
        }
    }
    ConnectError::Tls { server, source: r }
}
