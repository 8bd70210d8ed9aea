//! Where a certificate or a private key comes from: a PEM file of its own
//! (`[tls] cert = "alice.pem"`), or PEM text inside the config file itself
//! (`[tls] cert_pem = """..."""`, a one-file profile). Errors name the file
//! and, for text inside a config, the key that holds it.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::key_file::{self, ExposedKey, KeyFileError};

/// PEM text of a private key held in memory: wiped when dropped, and never
/// printed by `Debug`.
#[derive(Clone, Default)]
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    /// Wraps PEM text.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The PEM text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(MASKED)")
    }
}

impl<'de> Deserialize<'de> for SecretPem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Where one PEM item is read from.
#[derive(Debug, Clone)]
pub enum PemSource {
    /// A file of its own.
    File(PathBuf),
    /// Text inside a config file.
    Inline {
        /// The config file.
        file: PathBuf,
        /// The dotted key holding the text, e.g. `tls.cert_pem`.
        key: &'static str,
        /// The PEM text.
        pem: SecretPem,
    },
}

/// A PEM item that could not be read or holds nothing of the expected kind.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// A file of its own.
    #[error("{}: {what}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was looked for in it.
        what: &'static str,
        /// What went wrong.
        source: pem::Error,
    },
    /// Text inside a config file.
    #[error("{}: key `{key}`: {what}: {source}", file.display())]
    Inline {
        /// The config file.
        file: PathBuf,
        /// The key holding the text.
        key: &'static str,
        /// What was looked for in it.
        what: &'static str,
        /// What went wrong.
        source: pem::Error,
    },
    /// A private key file that other users can read.
    #[error(transparent)]
    ExposedKey(#[from] ExposedKey),
}

impl fmt::Display for PemSource {
    /// The file, or the file and key, as messages name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline { file, key, .. } => write!(f, "{} (key `{key}`)", file.display()),
        }
    }
}

impl PemSource {
    fn error(&self, what: &'static str, source: pem::Error) -> PemError {
        match self {
            Self::File(path) => PemError::File {
                path: path.clone(),
                what,
                source,
            },
            Self::Inline { file, key, .. } => PemError::Inline {
                file: file.clone(),
                key,
                what,
                source,
            },
        }
    }

    /// Every certificate in it; at least one.
    pub fn certs(&self) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let what = "certificates";
        let certs = match self {
            Self::File(path) => CertificateDer::pem_file_iter(path)
                .map_err(|e| self.error(what, e))?
                .collect::<Result<Vec<_>, _>>(),
            Self::Inline { pem, .. } => {
                CertificateDer::pem_slice_iter(pem.as_str().as_bytes()).collect()
            }
        }
        .map_err(|e| self.error(what, e))?;
        if certs.is_empty() {
            return Err(self.error(what, pem::Error::NoItemsFound));
        }
        Ok(certs)
    }

    /// The private key in it. A file must pass the key-file mode rule
    /// ([`key_file`]); text inside a config is checked by the config's
    /// loader, which knows the mode of the file it read.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PemError> {
        let what = "private key";
        match self {
            Self::File(path) => {
                let pem = Zeroizing::new(key_file::read(path).map_err(|e| match e {
                    KeyFileError::Read { source, .. } => self.error(what, pem::Error::Io(source)),
                    KeyFileError::Exposed(e) => PemError::ExposedKey(e),
                })?);
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| self.error(what, e))
            }
            Self::Inline { pem, .. } => PrivateKeyDer::from_pem_slice(pem.as_str().as_bytes())
                .map_err(|e| self.error(what, e)),
        }
    }

    /// The path of a file source; `None` for text inside a config.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Inline { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../testdata/bare.pem");

    fn inline(key: &'static str, text: &str) -> PemSource {
        PemSource::Inline {
            file: "/etc/twoway/alice.toml".into(),
            key,
            pem: SecretPem::new(text.into()),
        }
    }

    #[test]
    fn inline_certificates_parse_and_errors_name_file_and_key() {
        assert_eq!(inline("tls.cert_pem", CERT).certs().unwrap().len(), 1);
        let e = inline("tls.cert_pem", "not a pem").certs().unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/twoway/alice.toml: key `tls.cert_pem`: certificates: no items found"
        );
        let e = inline("tls.key_pem", CERT).private_key().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/twoway/alice.toml: key `tls.key_pem`: private key: "),
            "{e}"
        );
    }

    #[test]
    fn a_secret_never_prints() {
        let s = inline("tls.key_pem", "-----BEGIN PRIVATE KEY-----\nsecret\n");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("secret") && shown.contains("MASKED"),
            "{shown}"
        );
        assert_eq!(s.to_string(), "/etc/twoway/alice.toml (key `tls.key_pem`)");
    }

    #[test]
    fn a_file_source_keeps_the_key_file_rule() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = crate::temp_path::temp_path("k.key");
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PemSource::File(path).private_key().unwrap_err();
        assert!(matches!(e, PemError::ExposedKey(_)), "{e}");
    }
}
