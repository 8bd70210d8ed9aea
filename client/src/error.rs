//! Client failures and the documented exit codes they map to, in one place
//! ([`ClientError::exit_code`]). Each variant keeps the error it comes from
//! as its source; connection failures have their own enum
//! ([`ConnectError`]), host network failures theirs ([`HostError`]).

use std::path::PathBuf;
use std::time::Duration;

use twoway_common::config_file::ConfigErrors;
use twoway_common::control::ControlError;
use twoway_common::inside::tun::TunError;
use twoway_common::key_file::ExposedProfile;
use twoway_common::pem_source::PemError;
use twoway_common::tls::TlsError;

pub use crate::connect::ConnectError;
use crate::host::HostError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: internal error.
pub const EXIT_INTERNAL: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: authentication refused.
pub const EXIT_AUTH: u8 = 3;
/// Exit code: server unreachable or timed out.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: missing privilege.
pub const EXIT_PRIVILEGE: u8 = 5;

/// Text for --help.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 ok; 1 internal error; 2 usage or configuration error; \
3 authentication refused (certificate not accepted, revoked, identity not allowed); \
4 server unreachable or timed out; 5 missing privilege (no CAP_NET_ADMIN or /dev/net/tun; \
the control socket may not be opened; `down` needs root).";

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config file is missing, unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A profile holding the key that others may open.
    #[error(transparent)]
    ExposedProfile(#[from] ExposedProfile),
    /// The CA, certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate file cannot be read.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The certificate file holds something that is not a certificate.
    #[error("{0}: not an X.509 certificate")]
    NotCertificate(String),
    /// `request --identity` with a name that cannot be one.
    #[error("invalid identity name {name:?}: {reason}")]
    IdentityName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `request` would overwrite a private key.
    #[error("{} already exists: a private key is never overwritten \
             (remove it, or choose another --out)", .0.display())]
    KeyExists(PathBuf),
    /// A file or folder the command needs (exit 2).
    #[error("{what}{}: {source}", .path.display())]
    File {
        /// What it is, as the start of the message ("control socket ", or nothing).
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Reaching the server, or the session it answered with.
    #[error("{}{source}", prefix(connect_exit_code(.source)))]
    Connect {
        /// What went wrong.
        #[from]
        source: ConnectError,
    },
    /// The server ended the session because our certificate was revoked.
    #[error("authentication refused: server: {0}")]
    Revoked(String),
    /// No CAP_NET_ADMIN.
    #[error(
        "missing privilege: CAP_NET_ADMIN is needed to create the TUN device and routes \
             ({}, e.g. with the twoway@ systemd unit)",
        twoway_common::capability::NET_ADMIN_HINT
    )]
    NoNetAdmin,
    /// `list` could not look at every socket.
    #[error("missing privilege: some tunnels may be missing from the list (see above)")]
    ListIncomplete,
    /// The config cannot be read, nor the run folder where its socket would be.
    #[error("missing privilege: {config}, and cannot look into {}: {}",
            .run_dir.display(), twoway_common::control::permission_hint())]
    RunDirDenied {
        /// Why the config could not be read.
        config: ConfigErrors,
        /// The run folder.
        run_dir: PathBuf,
    },
    /// The config cannot be read, and a socket that may be its client's may not be asked.
    #[error("missing privilege: {config}, and {source}")]
    SocketDenied {
        /// Why the config could not be read.
        config: ConfigErrors,
        /// Why the socket could not be asked.
        #[source]
        source: ControlError,
    },
    /// Talking to the running client over its control socket failed.
    #[error("{}{source}", if .source.permission_denied() { "missing privilege: " } else { "" })]
    Control {
        /// What went wrong.
        #[from]
        source: ControlError,
    },
    /// The TUN device could not be made.
    #[error("{}{source}", if .source.is_privilege() { "missing privilege: " } else { "" })]
    Device {
        /// What went wrong.
        #[from]
        source: TunError,
    },
    /// Routes or DNS could not be put in force.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The server's assignment had an IPv6 address where the IPv4 one belongs.
    #[error("server assigned an IPv6 address as IPv4")]
    Ipv6Address,
    /// `down` asked the client to stop, and it did not.
    #[error("client did not stop within {0:?}")]
    DidNotStop(Duration),
    /// Making a key or a certificate request failed.
    #[error("{what}: {source}")]
    Key {
        /// What was being made.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: rcgen::Error,
    },
    /// A process could not be started (the runtime, the background client).
    #[error("{what}{source}")]
    Process {
        /// What was being started, as the start of the message.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::ExposedProfile(_)
            | Self::Tls(_)
            | Self::Pem(_)
            | Self::NotCertificate(_)
            | Self::IdentityName { .. }
            | Self::KeyExists(_)
            | Self::File { .. } => EXIT_CONFIG,
            Self::Connect { source } => connect_exit_code(source),
            Self::Revoked(_) => EXIT_AUTH,
            Self::NoNetAdmin
            | Self::ListIncomplete
            | Self::RunDirDenied { .. }
            | Self::SocketDenied { .. } => EXIT_PRIVILEGE,
            Self::Control { source } if source.permission_denied() => EXIT_PRIVILEGE,
            Self::Device { source } if source.is_privilege() => EXIT_PRIVILEGE,
            Self::Control { .. }
            | Self::Device { .. }
            | Self::Host(_)
            | Self::Ipv6Address
            | Self::DidNotStop(_)
            | Self::Key { .. }
            | Self::Process { .. } => EXIT_INTERNAL,
        }
    }

    /// Whether trying again later could succeed.
    pub fn is_retryable(&self) -> bool {
        self.exit_code() == EXIT_UNREACHABLE
    }

    /// Whether the server's certificate did not verify (the server's
    /// failing, not ours).
    pub fn is_server_certificate(&self) -> bool {
        matches!(
            self,
            ClientError::Connect {
                source: ConnectError::ServerCertificate { .. }
            }
        )
    }
}

/// The exit code of a failed connection.
fn connect_exit_code(e: &ConnectError) -> u8 {
    use twoway_common::message::RefuseCode;
    match e {
        ConnectError::NotHostPort(_) | ConnectError::ServerName(_) => EXIT_CONFIG,
        ConnectError::TimedOut { .. } | ConnectError::Tcp { .. } | ConnectError::Closed(_) => {
            EXIT_UNREACHABLE
        }
        ConnectError::Refused(r) if r.code.is_permanent() => EXIT_AUTH,
        ConnectError::Refused(r)
            if matches!(
                r.code,
                RefuseCode::PoolExhausted | RefuseCode::Busy | RefuseCode::Duplicate
            ) =>
        {
            EXIT_UNREACHABLE
        }
        ConnectError::ServerCertificate { .. } | ConnectError::ClientCertificate { .. } => {
            EXIT_AUTH
        }
        ConnectError::Tls { source, .. } if twoway_common::tls::is_auth_failure(source) => {
            EXIT_AUTH
        }
        ConnectError::Tls { .. } => EXIT_UNREACHABLE,
        ConnectError::Refused(_)
        | ConnectError::LocalAddress(_)
        | ConnectError::Outside { .. }
        | ConnectError::BadMessage { .. }
        | ConnectError::Unexpected(_) => EXIT_INTERNAL,
    }
}

/// How a message of this exit code starts.
fn prefix(code: u8) -> &'static str {
    match code {
        EXIT_AUTH => "authentication refused: ",
        EXIT_UNREACHABLE => "server unreachable: ",
        EXIT_PRIVILEGE => "missing privilege: ",
        _ => "",
    }
}
