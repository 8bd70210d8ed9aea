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

/// Where a client's files go, and what they are made from.
pub(crate) struct ClientFiles<'a> {
    /// The PKI folder (holds ca.pem).
    dir: &'a Path,
    /// Where the client's files go.
    out: &'a Path,
    /// The index: server name, addresses and port for IDENTITY.toml.
    index: &'a Index,
    /// The identity, which names the files.
    identity: &'a str,
}

impl<'a> ClientFiles<'a> {
    /// The files of `identity` in `out`, from the PKI in `dir` and its `index`.
    pub fn new(dir: &'a Path, out: &'a Path, index: &'a Index, identity: &'a str) -> Self {
        Self {
            dir,
            out,
            index,
            identity,
        }
    }

    /// Writes OUT/IDENTITY.pem (`cert_pem`, the new certificate), a copy of
    /// ca.pem when OUT is not DIR, and, as `config` says, OUT/IDENTITY.toml
    /// pointing at IDENTITY.key next to it.
    pub fn write(
        &self,
        written: &mut Vec<PathBuf>,
        cert_pem: &str,
        config: ConfigWrite,
    ) -> Result<(), PkiError> {
        let identity = self.identity;
        put_public(written, &self.out.join(format!("{identity}.pem")), cert_pem)?;
        if !same_dir(self.dir, self.out)? {
            put_public(written, &self.out.join(CA_CERT_FILE), &read_ca(self.dir)?)?;
        }
        let config_path = self.out.join(format!("{identity}.toml"));
        if config == ConfigWrite::Always || !exists(&config_path) {
            let index = self.index;
            let server = templates::server_address(&index.server_name, &index.ips, index.port);
            let config = templates::client_toml(identity, &server, &index.server_name);
            put_public(written, &config_path, &config)?;
        }
        Ok(())
    }
}
