//! Client failures and the documented exit codes they map to, in one place.

use twoway_common::config_file::ConfigErrors;
use twoway_common::inside::tun::TunError;

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
    /// Bad configuration or files.
    #[error("{0}")]
    Config(String),
    /// The server refused our certificate or identity, or we refused the server's.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The server could not be reached or did not answer in time.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// No CAP_NET_ADMIN or no /dev/net/tun.
    #[error("missing privilege: {0}")]
    Privilege(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
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
}

impl ClientError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            Self::Auth(_) => EXIT_AUTH,
            Self::Unreachable(_) => EXIT_UNREACHABLE,
            Self::Privilege(_) => EXIT_PRIVILEGE,
            Self::Device { source } if source.is_privilege() => EXIT_PRIVILEGE,
            Self::Internal(_) | Self::Device { .. } | Self::Host(_) | Self::Ipv6Address => {
                EXIT_INTERNAL
            }
        }
    }

    /// Whether trying again later could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

impl From<ConfigErrors> for ClientError {
    fn from(e: ConfigErrors) -> Self {
        Self::Config(e.to_string())
    }
}
