//! The client's TLS credentials: the CA, certificate and key its config
//! names (files, or PEM text inside a one-file profile), the rule on a
//! profile that holds the key, and what the certificate says about itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use twoway_common::key_file;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::ClientConfig;
use crate::error::ClientError;

/// What `up` needs from the certificate besides presenting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Its common name (the identity of the default `cn` source), if it has one.
    pub identity: Option<String>,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// The TLS setup of the client and its certificate.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The rustls client configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// The client certificate (the first of its chain).
    pub certificate: Certificate,
}

/// Reads the CA, certificate and key. A profile that holds the key
/// (`tls.key_pem`) and that anyone but its owner may open is refused, as a
/// key file other users can read is (exit 2, with the `chmod` that fixes it).
pub fn load(config: &ClientConfig) -> Result<Credentials, ClientError> {
    if config.tls.key_pem.is_some() {
        key_file::check_profile_mode(&config.path, config.file_mode)?;
    }
    let [ca, cert, key] = config.tls_sources();
    let tls = twoway_common::tls::client_config_from(&ca, &cert, &key)?;
    let chain = cert.certs()?;
    let certificate = chain
        .first()
        .and_then(|der| describe(der))
        .ok_or_else(|| ClientError::NotCertificate(cert.to_string()))?;
    Ok(Credentials { tls, certificate })
}

/// The common name and the end of validity of a certificate (DER).
pub fn describe(der: &[u8]) -> Option<Certificate> {
    let (_, x509) = X509Certificate::from_der(der).ok()?;
    let identity = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let secs = x509.validity().not_after.timestamp();
    let not_after = match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    Some(Certificate {
        identity,
        not_after,
    })
}
