//! Why a connection did not become a session. Each reason has one label, the
//! name it has in logs and on /metrics (`twoway_connections_refused{reason}`).

use twoway_common::message::RefuseCode;

/// Why a connection did not become a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The source opens connections faster than its rate.
    RateLimited,
    /// The source has too many handshakes in progress.
    SourceHandshakes,
    /// `limits.max_handshakes` are running and none could make room.
    TooManyHandshakes,
    /// The handshake was closed to make room for a newer connection.
    Evicted,
    /// TLS failed (no or a bad client certificate, wrong version, garbage).
    Tls,
    /// The handshake and hello did not finish in time.
    Timeout,
    /// The client did not negotiate the twoway ALPN protocol.
    Alpn,
    /// The hello could not be read.
    Hello,
    /// The server refused the client with this code (and told it why).
    Refused(RefuseCode),
    /// Sending the assignment failed.
    Assign,
}

impl RefusalReason {
    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate-limited",
            Self::SourceHandshakes => "too-many-handshakes-from-source",
            Self::TooManyHandshakes => "too-many-handshakes",
            Self::Evicted => "evicted",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Alpn => "alpn",
            Self::Hello => "hello",
            Self::Assign => "assign",
            Self::Refused(code) => match code {
                RefuseCode::VersionUnsupported => "refused-version-unsupported",
                RefuseCode::IdentityNotAllowed => "refused-identity-not-allowed",
                RefuseCode::NoIdentity => "refused-no-identity",
                RefuseCode::PoolExhausted => "refused-pool-exhausted",
                RefuseCode::Duplicate => "refused-duplicate",
                RefuseCode::Busy => "refused-busy",
                RefuseCode::Internal => "refused-internal",
                RefuseCode::Unknown => "refused-unknown",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_code_is_labelled_by_its_wire_name() {
        for code in [
            RefuseCode::VersionUnsupported,
            RefuseCode::IdentityNotAllowed,
            RefuseCode::NoIdentity,
            RefuseCode::PoolExhausted,
            RefuseCode::Duplicate,
            RefuseCode::Busy,
            RefuseCode::Internal,
            RefuseCode::Unknown,
        ] {
            assert_eq!(
                RefusalReason::Refused(code).label(),
                format!("refused-{}", code.as_str())
            );
        }
    }
}
