//! The files a client gets beside its certificate: IDENTITY.pem, a copy of
//! the CA when they go to another folder than the PKI's, and IDENTITY.toml
//! pointing at IDENTITY.key next to it.

use std::path::{Path, PathBuf};

use super::error::PkiError;
use super::files::{exists, put_public, same_dir};
use super::index::Index;
use super::{templates, CA_CERT_FILE};

/// DIR/ca.pem.
pub(crate) fn read_ca(dir: &Path) -> Result<String, PkiError> {
    let ca_path = dir.join(CA_CERT_FILE);
    std::fs::read_to_string(&ca_path).map_err(|e| PkiError::io(&ca_path, e))
}

/// Whether to write IDENTITY.toml beside a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigWrite {
    /// Always (`issue`, `sign`: a new key).
    Always,
    /// Only if there is none (`renew`: same key, same file names).
    IfMissing,
}

/// What [`write_client_files`] writes.
pub(crate) struct ClientFiles<'a> {
    /// The PKI folder (holds ca.pem).
    pub dir: &'a Path,
    /// Where the client's files go.
    pub out: &'a Path,
    /// The index: server name, addresses and port for IDENTITY.toml.
    pub index: &'a Index,
    /// The identity, which names the files.
    pub identity: &'a str,
    /// The new certificate, PEM.
    pub cert_pem: &'a str,
    /// Whether IDENTITY.toml is written.
    pub config: ConfigWrite,
}

/// Writes OUT/IDENTITY.pem, a copy of ca.pem when OUT is not DIR, and
/// OUT/IDENTITY.toml pointing at IDENTITY.key next to it.
pub(crate) fn write_client_files(
    written: &mut Vec<PathBuf>,
    f: &ClientFiles<'_>,
) -> Result<(), PkiError> {
    let identity = f.identity;
    put_public(written, &f.out.join(format!("{identity}.pem")), f.cert_pem)?;
    if !same_dir(f.dir, f.out)? {
        put_public(written, &f.out.join(CA_CERT_FILE), &read_ca(f.dir)?)?;
    }
    let config_path = f.out.join(format!("{identity}.toml"));
    if f.config == ConfigWrite::Always || !exists(&config_path) {
        let index = f.index;
        let server = templates::server_address(&index.server_name, &index.ips, index.port);
        let config = templates::client_toml(identity, &server, &index.server_name);
        put_public(written, &config_path, &config)?;
    }
    Ok(())
}
