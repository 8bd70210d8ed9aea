//! One client connection, typed by how far it got: `Connected` (TLS done,
//! hello read) → `Identified` (identity from the certificate) → `Assigned`
//! (addresses sent). Only an `Assigned` session can relay packets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use twoway_common::identity::{self, IdentitySource};
use twoway_common::inside::Inside;
use twoway_common::message::{Assignment, Bye, Hello, Refusal, RefuseCode, PROTOCOL_VERSION};
use twoway_common::outside::tcp::record::frame::FrameType;
use twoway_common::outside::tcp::record::secure::{self, SecureStream};
use twoway_common::outside::tcp::{Outside, OutsideError};
use twoway_common::queue::QueueRx;
use twoway_common::relay::{self, Counters, DropReason, RelayEnd};
use twoway_common::tls::ALPN;

use crate::refusal::RefusalReason;

type Stream = SecureStream<TcpStream>;

/// Why a connection did not become a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A limit kept it out before or during the handshake.
    #[error("not admitted: {}", .0.label())]
    NotAdmitted(RefusalReason),
    /// TLS failed: no or a bad client certificate, wrong version, garbage.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    /// The handshake and hello did not finish in time.
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The client did not negotiate the twoway ALPN protocol.
    #[error("client did not negotiate ALPN twoway/1")]
    Alpn,
    /// The hello could not be read.
    #[error("hello: {0}")]
    Hello(#[source] OutsideError),
    /// We refused the client (and told it why).
    #[error("refused ({code:?}): {message}")]
    Refused {
        /// The refusal code sent.
        code: RefuseCode,
        /// The explanation sent.
        message: String,
        /// How metrics count it: by its code, unless the server knows
        /// better (the cluster store did not answer).
        reason: RefusalReason,
    },
    /// Sending the assignment failed.
    #[error("sending assignment: {0}")]
    Assign(#[source] OutsideError),
}

impl SessionError {
    /// Why, as logs and metrics name it.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            Self::NotAdmitted(why) => *why,
            Self::Handshake(_) => RefusalReason::Tls,
            Self::Timeout(_) => RefusalReason::Timeout,
            Self::Alpn => RefusalReason::Alpn,
            Self::Hello(_) => RefusalReason::Hello,
            Self::Refused { reason, .. } => *reason,
            Self::Assign(_) => RefusalReason::Assign,
        }
    }
}

/// TLS is established with a verified client certificate and the hello is read.
#[derive(Debug)]
pub struct Connected {
    outside: Outside<Stream>,
    /// The client's address.
    pub remote: SocketAddr,
    leaf: Vec<u8>,
    /// What the client said in its hello.
    pub hello: Hello,
}

impl Connected {
    /// Runs the TLS handshake (client certificate verified against CA and CRL
    /// by the acceptor's config) and reads the hello, all within `limit`.
    pub async fn accept(
        tcp: TcpStream,
        remote: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> Result<Self, SessionError> {
        tokio::time::timeout(limit, async {
            let (stream, peer) = secure::accept(tls, tcp)
                .await
                .map_err(SessionError::Handshake)?;
            if peer.alpn.as_deref() != Some(ALPN) {
                return Err(SessionError::Alpn);
            }
            // The verifier refuses a handshake without a certificate, so a leaf exists.
            let leaf = peer
                .certificates
                .first()
                .map(|c| c.to_vec())
                .ok_or(SessionError::Alpn)?;
            let mut outside = Outside::new(stream);
            let hello: Hello = outside
                .read_message(FrameType::Hello, limit)
                .await
                .map_err(SessionError::Hello)?;
            let mut connected = Self {
                outside,
                remote,
                leaf,
                hello,
            };
            if connected.hello.version != PROTOCOL_VERSION {
                let message = format!(
                    "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                    connected.hello.version
                );
                let code = RefuseCode::VersionUnsupported;
                let reason = RefusalReason::Refused(code);
                return Err(refuse(&mut connected.outside, code, message, reason).await);
            }
            Ok(connected)
        })
        .await
        .map_err(|_| SessionError::Timeout(limit))?
    }

    /// Serial number of the client certificate, lowercase hex.
    pub fn serial(&self) -> String {
        use x509_parser::prelude::{FromDer, X509Certificate};
        X509Certificate::from_der(&self.leaf)
            .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
            .unwrap_or_default()
    }

    /// Reads the identity from the certificate, refusing the client if the
    /// configured field is missing.
    pub async fn identify(mut self, source: IdentitySource) -> Result<Identified, SessionError> {
        match identity::extract(source, &self.leaf) {
            Ok(identity) => Ok(Identified {
                serial: self.serial(),
                features: self.hello.features,
                outside: self.outside,
                remote: self.remote,
                identity,
            }),
            Err(e) => {
                let code = RefuseCode::NoIdentity;
                let reason = RefusalReason::Refused(code);
                Err(refuse(&mut self.outside, code, e.to_string(), reason).await)
            }
        }
    }
}

/// The identity is known; policy decides what it gets.
#[derive(Debug)]
pub struct Identified {
    outside: Outside<Stream>,
    /// The client's address.
    pub remote: SocketAddr,
    /// The identity read from the certificate.
    pub identity: String,
    /// Serial number of the certificate (hex).
    pub serial: String,
    /// Optional features the client offered in its hello.
    pub features: Vec<String>,
}

impl Identified {
    /// Whether the client offered optional feature `name` in its hello.
    pub fn offers(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// Reads the TLS connection's TCP retransmissions (for UDP path reports).
    pub fn tcp_handle(
        &self,
        congestion: &str,
    ) -> Option<std::sync::Arc<twoway_common::outside::tcp::info::TcpHandle>> {
        twoway_common::outside::tcp::info::TcpHandle::new(self.outside.stream.get_ref(), congestion)
    }

    /// Tells the client why it is refused and closes.
    pub async fn refuse(self, code: RefuseCode, message: String) -> SessionError {
        self.refuse_as(RefusalReason::Refused(code), code, message)
            .await
    }

    /// Like [`Self::refuse`], counted in metrics as `reason`.
    pub async fn refuse_as(
        mut self,
        reason: RefusalReason,
        code: RefuseCode,
        message: String,
    ) -> SessionError {
        refuse(&mut self.outside, code, message, reason).await
    }

    /// Sends the assignment; the session may relay from now on.
    pub async fn assign(mut self, mut assignment: Assignment) -> Result<Assigned, SessionError> {
        self.outside
            .write_message(FrameType::Assign, &assignment)
            .await
            .map_err(SessionError::Assign)?;
        // The session's UDP keys hold what they need; the kept assignment
        // does not keep the secrets.
        assignment.udp_secret = None;
        Ok(Assigned {
            outside: self.outside,
            remote: self.remote,
            identity: self.identity,
            assignment,
        })
    }
}

/// The client has its addresses; packets may flow.
#[derive(Debug)]
pub struct Assigned {
    outside: Outside<Stream>,
    /// The client's address.
    pub remote: SocketAddr,
    /// The identity.
    pub identity: String,
    /// What the client was given.
    pub assignment: Assignment,
}

impl Assigned {
    /// Relays until the session ends (see [`relay::relay`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn relay<I: Inside>(
        self,
        inside: &I,
        outbound: &mut QueueRx,
        filter: impl Fn(&[u8]) -> Result<(), DropReason>,
        counters: &Counters,
        session: relay::Session,
        udp: Option<relay::Udp>,
        updates: relay::Updates,
        stop: impl std::future::Future<Output = Bye>,
    ) -> RelayEnd {
        relay::relay(
            self.outside,
            inside,
            outbound,
            filter,
            counters,
            session,
            udp,
            updates,
            stop,
        )
        .await
    }
}

async fn refuse(
    outside: &mut Outside<Stream>,
    code: RefuseCode,
    message: String,
    reason: RefusalReason,
) -> SessionError {
    let refusal = Refusal {
        code,
        message: message.clone(),
    };
    if outside
        .write_message(FrameType::Refuse, &refusal)
        .await
        .is_ok()
    {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut outside.stream).await;
    }
    SessionError::Refused {
        code,
        message,
        reason,
    }
}
