//! TLS 1.3 setup for both sides: PEM loading, the server's client-certificate
//! verifier with the CRL, and the client's server verifier. aws-lc-rs only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::key_file::ExposedKey;
use crate::pem_source::{PemError, PemSource};

pub mod verify;

/// ALPN protocol name; the suffix is the protocol version.
pub const ALPN: &[u8] = b"twoway/1";

/// A TLS setup problem, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of the expected kind.
    #[error("{path}: {what}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What we looked for in it.
        what: &'static str,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// PEM text inside a config file holds nothing of the expected kind.
    #[error("{}: key `{key}`: {what}: {source}", file.display())]
    InlinePem {
        /// The config file.
        file: PathBuf,
        /// The key holding the text.
        key: &'static str,
        /// What we looked for in it.
        what: &'static str,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the material (e.g. key does not match certificate).
    #[error("{context}: {source}")]
    Rustls {
        /// What we were doing.
        context: String,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The verifier could not be built (e.g. an unusable CA or CRL).
    #[error("{context}: {source}")]
    Verifier {
        /// What we were doing.
        context: String,
        /// The builder error.
        source: rustls::server::VerifierBuilderError,
    },
    /// A private key file that other users can read.
    #[error(transparent)]
    ExposedKey(#[from] ExposedKey),
    /// A server name that is neither a DNS name nor an IP address.
    #[error("server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

/// The key exchange groups both sides offer, most preferred first: the
/// hybrid X25519MLKEM768 (X25519 plus ML-KEM-768, FIPS 203), so that traffic
/// recorded today stays secret against a future quantum computer as long as
/// either half holds; then the classical X25519, P-256 and P-384 for peers
/// without ML-KEM. Set here rather than left to rustls's default order,
/// which puts X25519MLKEM768 last unless rustls is built with its
/// `prefer-post-quantum` feature.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] = &[
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
    kx_group::SECP384R1,
];

/// The crypto provider used everywhere: aws-lc-rs (fast AES-GCM), with the
/// hybrid post-quantum key exchange first ([`KX_GROUPS`]).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: KX_GROUPS.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        match e {
            PemError::File { path, what, source } => Self::Pem { path, what, source },
            PemError::Inline {
                file,
                key,
                what,
                source,
            } => Self::InlinePem {
                file,
                key,
                what,
                source,
            },
            PemError::ExposedKey(e) => Self::ExposedKey(e),
        }
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(PemSource::File(path.to_owned()).certs()?)
}

/// Reads the private key in a PEM file, refusing a file that other users
/// can read (see [`crate::key_file`]).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    Ok(PemSource::File(path.to_owned()).private_key()?)
}

/// Reads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        path: path.to_owned(),
        what: "certificate revocation list",
        source,
    };
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if crls.is_empty() {
        return Err(pem_err(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(crls)
}

/// The CA certificates of `ca` and a root store holding them.
fn root_store(ca: &Path) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    root_store_from(&PemSource::File(ca.to_owned()))
}

fn root_store_from(
    ca: &PemSource,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = ca.certs()?;
    for cert in &certs {
        roots.add(cert.clone()).map_err(refused_by_rustls(format!(
            "{ca}: CA certificate not usable"
        )))?;
    }
    Ok((roots, certs))
}

/// Files the server's TLS setup is made of.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// CA that client certificates must chain to.
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA's certificate revocation list.
    pub crl: PathBuf,
}

/// For `map_err`: a rustls error as [`TlsError::Rustls`], saying what we were doing.
fn refused_by_rustls(context: impl Into<String>) -> impl FnOnce(rustls::Error) -> TlsError {
    let context = context.into();
    move |source| TlsError::Rustls { context, source }
}

/// Builds the server config: TLS 1.3 only, a client certificate that chains
/// to the CA, is valid now and not on the CRL, ALPN `twoway/1`, and no
/// session resumption (a resumed session would skip the certificate and CRL checks).
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let (roots, ca) = root_store(&files.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(load_crls(&files.crl)?)
        .build()
        .map_err(|source| TlsError::Verifier {
            context: format!(
                "client verifier from {} and {}",
                files.ca.display(),
                files.crl.display()
            ),
            source,
        })?;
    // The same decisions; a certificate of another CA is logged with its issuer.
    let verifier = Arc::new(verify::ClientVerifier::new(verifier, &files.ca, &ca));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(refused_by_rustls("TLS 1.3 setup"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(refused_by_rustls(format!(
            "{} and {} do not form a usable certificate and key",
            files.cert.display(),
            files.key.display()
        )))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Builds the client config: TLS 1.3 only, the server verified against the
/// CA, our certificate presented, ALPN `twoway/1`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_from(
        &PemSource::File(ca.to_owned()),
        &PemSource::File(cert.to_owned()),
        &PemSource::File(key.to_owned()),
    )
}

/// [`client_config`] from files or from PEM text inside a config file.
pub fn client_config_from(
    ca: &PemSource,
    cert: &PemSource,
    key: &PemSource,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let (roots, ca_certs) = root_store_from(ca)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            context: format!("server verifier from {ca}"),
            source,
        })?;
    // rustls's own WebPKI verifier, wrapped only to explain a refusal
    // (`dangerous` is the builder's name for any verifier of one's own).
    let ca_name = PathBuf::from(ca.to_string());
    let verifier = Arc::new(verify::ServerVerifier::new(webpki, &ca_name, &ca_certs));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(refused_by_rustls("TLS 1.3 setup"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.certs()?, key.private_key()?)
        .map_err(refused_by_rustls(format!(
            "{cert} and {key} do not form a usable certificate and key"
        )))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: a ticket from a server is never offered back.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Parses the name the server certificate is checked against.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// Whether a TLS error means the peer refused our credentials, or we refused
/// theirs: retrying cannot help (client exit code 3).
pub fn is_auth_failure(err: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::DecryptError
                | A::HandshakeFailure
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        _ => false,
    }
}

/// Finds a rustls error inside an I/O error, as tokio-rustls reports them.
pub fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}
