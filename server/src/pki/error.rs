//! The errors of the built-in PKI. Every message names the file, path or
//! identity it is about, so that the CLI can print it as it is.

use std::io;
use std::path::{Path, PathBuf};

/// Why a PKI operation failed.
#[derive(thiserror::Error, Debug)]
pub enum PkiError {
    /// `init` found an existing CA (ca.key or ca.pem) in the folder.
    #[error("CA already exists at {}: refusing to overwrite", .0.display())]
    AlreadyInitialized(PathBuf),

    /// `init` would overwrite a file that already exists.
    #[error("{} already exists: refusing to overwrite (pki init needs a fresh folder)", .0.display())]
    FileExists(PathBuf),

    /// The folder holds no PKI state (index.json is missing).
    #[error("no PKI at {}: index.json not found (run `twoway-server pki init` first)", .0.display())]
    NotInitialized(PathBuf),

    /// The identity name is not allowed.
    #[error("invalid identity name {name:?}: {reason}")]
    InvalidIdentity {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The server name given to `init` is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}: expected a DNS name (vpn.example.com) or an IP address")]
    InvalidServerName(String),

    /// The requested validity is zero or runs past the CA's own expiry.
    #[error("invalid validity: {0}")]
    InvalidDays(String),

    /// The identity already holds a certificate that is neither revoked nor expired.
    #[error(
        "identity {identity:?} already has a valid certificate (serial {serial}, until \
         {not_after}); revoke it first (`pki revoke`), or extend it with `pki renew`"
    )]
    AlreadyIssued {
        /// The identity asked for.
        identity: String,
        /// Serial number (hex) of the valid certificate.
        serial: String,
        /// Its end of validity, RFC 3339.
        not_after: String,
    },

    /// A certificate request that cannot be signed.
    #[error("{}: not a usable certificate request: {reason}", path.display())]
    InvalidRequest {
        /// The request file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The key of a request was certified before (a reused or stolen key).
    #[error(
        "the key of this request is already certified (serial {serial} of {identity:?}): \
         every request needs a fresh key (`twoway request` makes one)"
    )]
    KeyReused {
        /// The identity whose certificate holds the key.
        identity: String,
        /// That certificate's serial (hex).
        serial: String,
    },

    /// `renew` cannot find the key of the certificate to renew.
    #[error(
        "the PKI does not know the key of {identity:?}'s certificate (serial {serial}; issued \
         before twoway recorded keys, and no {identity}.pem of it in {}): revoke it and \
         issue a new one, or sign a new request (`twoway request`, `pki sign`)",
        dir.display()
    )]
    KeyUnknown {
        /// The identity.
        identity: String,
        /// Serial (hex) of its live certificate.
        serial: String,
        /// Where its certificate was looked for.
        dir: PathBuf,
    },

    /// A key file where `sign` would point a config, but not the request's key.
    #[error(
        "{} is not the key of this request: a config next to it would pair the new \
         certificate with the wrong key (choose another --out)",
        path.display()
    )]
    ForeignKey {
        /// The key file found.
        path: PathBuf,
    },

    /// A one-file profile whose key is not the certified one.
    #[error(
        "{} holds a private key that is not the key of {identity:?}'s certificate: refusing \
         to put the new certificate into it (choose another --out)",
        path.display()
    )]
    ProfileKeyMismatch {
        /// The profile.
        path: PathBuf,
        /// The identity being renewed.
        identity: String,
    },

    /// The identity was never issued a certificate by this PKI.
    #[error("unknown identity {identity:?}: not found in {}", index.display())]
    UnknownIdentity {
        /// The identity asked for.
        identity: String,
        /// The index that was searched.
        index: PathBuf,
    },

    /// Every certificate of the identity is already revoked.
    #[error("identity {0:?} is revoked (no live certificate left)")]
    AlreadyRevoked(String),

    /// A private key file (or a one-file profile) exists that does not
    /// belong to an earlier certificate of the identity.
    #[error(
        "{} already exists and is not the key of an earlier certificate of {identity:?}: \
         refusing to overwrite (remove it or choose another --out)",
        path.display()
    )]
    KeyExists {
        /// The key file found.
        path: PathBuf,
        /// The identity being issued.
        identity: String,
    },

    /// The CA private key does not belong to the CA certificate.
    #[error("{} does not belong to the CA certificate {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The CA key file.
        key: PathBuf,
        /// The CA certificate file.
        cert: PathBuf,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file exists but its content could not be understood.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The file involved.
        path: PathBuf,
        /// What could not be parsed.
        reason: String,
    },

    /// Generating a key, a certificate or a CRL failed.
    #[error("{context}: {source}")]
    Crypto {
        /// What was being made or loaded (names the file where there is one).
        context: String,
        /// The underlying error.
        source: rcgen::Error,
    },

    /// A private key file (ca.key) that other users can read.
    #[error(transparent)]
    ExposedKey(#[from] twoway_common::key_file::ExposedKey),

    /// A serial number is not hexadecimal.
    #[error("serial {0:?} is not a hexadecimal number")]
    InvalidSerial(String),

    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl PkiError {
    /// An I/O error about `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        PkiError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A parse error about `path`.
    pub(crate) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        PkiError::Parse {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A key, certificate or CRL generation error.
    pub(crate) fn crypto(context: impl Into<String>, source: rcgen::Error) -> Self {
        PkiError::Crypto {
            context: context.into(),
            source,
        }
    }
}
