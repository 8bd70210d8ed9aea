//! What a reload re-reads: the TLS acceptor (certificate, key, CA, CRL), the
//! policy and the CRL's serials. They are read together and swapped in as one
//! snapshot, so whatever reads them sees all three from the same reload.

use std::collections::HashSet;
use std::sync::Arc;

use std::path::{Path, PathBuf};

use twoway_common::config_file::{ConfigError, ConfigErrors};
use twoway_common::tls::{self, TlsError};

use crate::config::ServerConfig;
use crate::policy::Policy;
use crate::revocation::{self, CrlError};

/// The reloadable configuration in force.
#[derive(Debug)]
pub struct Loaded {
    /// What the TLS handshakes of new connections use.
    pub tls: Arc<rustls::ServerConfig>,
    /// Who may connect, and what each identity gets.
    pub policy: Policy,
    /// Serials on the CRL, to cut live sessions of revoked certificates.
    pub revoked: HashSet<String>,
}

/// Why the reloadable configuration could not be read; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The policy file; one that cannot be read is named by the key
    /// `policy` of the server config at `config`.
    #[error("{}", policy_problems(.errors, .config).join("\n"))]
    Policy {
        /// Its problems.
        errors: ConfigErrors,
        /// The server config that names it.
        config: PathBuf,
    },
    /// Certificates, key or CRL unusable for TLS.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The CRL's serials could not be read.
    #[error("{0}")]
    Crl(#[from] CrlError),
}

impl Loaded {
    /// Reads the files `config` names.
    pub fn read(config: &ServerConfig) -> Result<Self, LoadError> {
        Ok(Self {
            tls: tls::server_config(&config.tls_files())?,
            policy: Policy::load(&config.policy, &config.tunnel).map_err(|errors| {
                LoadError::Policy {
                    errors,
                    config: config.path.clone(),
                }
            })?,
            revoked: revocation::revoked_serials(&config.tls.crl)?,
        })
    }
}

/// The policy file's problems; a file that cannot be read with the key that
/// names it in the server config at `config`.
pub fn policy_problems(errors: &ConfigErrors, config: &Path) -> Vec<String> {
    errors
        .0
        .iter()
        .map(|e| match e {
            ConfigError::Read { .. } => {
                format!("{e} (key `policy` in {})", config.display())
            }
            _ => e.to_string(),
        })
        .collect()
}
