//! Certificate verifiers that say why a peer's certificate was refused in
//! words an administrator can act on: which CA signed it and which file holds
//! the CA we trust, which names it carries and which one was expected.
//!
//! Both wrap rustls's WebPKI verifiers and change no decision. The client's
//! turns an issuer or name refusal into an [`Explained`] error (the server
//! then gets a `certificate_unknown` alert instead of `decrypt_error`,
//! `unknown_ca` or `bad_certificate`). The server's logs the issuer it saw
//! and returns rustls's error as it was, so the client gets the usual alert.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate says about itself, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject, e.g. `CN=alice`.
    pub subject: String,
    /// The issuer, e.g. `CN=twoway CA vpn.example.com`.
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub names: Vec<String>,
    /// The end of its validity, RFC 3339.
    pub not_after: String,
}

/// Reads subject, issuer, names and expiry of a DER certificate.
pub fn summary(der: &[u8]) -> Option<CertSummary> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip_of(b).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_after: cert
            .validity()
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| cert.validity().not_after.to_string()),
    })
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// The summary of the first certificate in a PEM file.
pub fn summary_of_file(path: &Path) -> Option<CertSummary> {
    let certs = crate::tls::load_certs(path).ok()?;
    summary(certs.first()?)
}

/// Why our verifier refused the peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not signed by the CA we trust.
    Issuer,
    /// Not issued for the name we expected.
    Name,
}

/// A refusal of the peer's certificate, with a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// What was wrong.
    pub problem: Problem,
    /// The message, complete.
    pub message: String,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Explained {}

impl Explained {
    /// The explanation inside a rustls error, if our verifier made it.
    pub fn find(err: &rustls::Error) -> Option<&Explained> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) => {
                e.downcast_ref::<Explained>()
            }
            _ => None,
        }
    }
}

/// The subjects of the CA certificates in `ca`, for messages.
fn ca_subjects(ca: &[CertificateDer<'_>]) -> Vec<String> {
    ca.iter()
        .filter_map(|c| summary(c).map(|s| s.subject))
        .collect()
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "not signed by the CA in FILE (SUBJECT): it was issued by ISSUER", with a
/// word about a different CA of the same name.
fn issuer_message(whose: &str, cert: &[u8], ca_file: &Path, cas: &[String]) -> String {
    let (subject, issuer) = summary(cert)
        .map(|s| (s.subject, s.issuer))
        .unwrap_or_else(|| ("?".into(), "an unreadable issuer".into()));
    let mut text = format!(
        "{whose} certificate ({subject:?}) is not signed by the CA in {} ({}): its issuer is {issuer:?}",
        ca_file.display(),
        quoted_list(cas)
    );
    if cas.contains(&issuer) {
        text.push_str(
            ", a different CA of the same name (made by another `pki init`?); \
             both sides need the ca.pem of the same CA",
        );
    }
    text
}

/// A rustls verifier `V` that explains its refusals: it knows the CA file
/// we trust and the subjects of the CAs in it.
#[derive(Debug)]
pub struct Explaining<V: ?Sized> {
    inner: Arc<V>,
    ca_file: PathBuf,
    cas: Vec<String>,
}

impl<V: ?Sized> Explaining<V> {
    /// Wraps `inner`, which trusts the CA certificates `ca` read from `ca_file`.
    pub fn new(inner: Arc<V>, ca_file: &Path, ca: &[CertificateDer<'_>]) -> Self {
        Self {
            inner,
            ca_file: ca_file.to_owned(),
            cas: ca_subjects(ca),
        }
    }
}

/// Verifies the server's certificate as rustls's WebPKI verifier does, and
/// explains an issuer or name refusal ([`Explained`]).
pub type ServerVerifier = Explaining<WebPkiServerVerifier>;

impl ServerVerifier {
    fn explain(&self, err: rustls::Error, cert: &[u8], expected: &ServerName<'_>) -> rustls::Error {
        let explained = match &err {
            rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer,
            ) => Explained {
                problem: Problem::Issuer,
                message: issuer_message("the server's", cert, &self.ca_file, &self.cas),
            },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                let names = summary(cert).map(|s| s.names).unwrap_or_default();
                let names = if names.is_empty() {
                    "no name at all (no subjectAltName)".to_owned()
                } else {
                    names.join(", ")
                };
                Explained {
                    problem: Problem::Name,
                    message: format!(
                        "the server's certificate is for {names}, not for {}",
                        expected.to_str()
                    ),
                }
            }
            _ => return err,
        };
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(explained))))
    }
}

/// The handshake signature checks of a verifier that wraps `self.inner`:
/// both of ours explain refusals of certificates, never of signatures.
macro_rules! signatures_as_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }

        fn requires_raw_public_keys(&self) -> bool {
            self.inner.requires_raw_public_keys()
        }
    };
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| self.explain(e, end_entity, server_name))
    }

    signatures_as_inner!();

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Verifies client certificates as the wrapped verifier does; when one is
/// not signed by our CA, logs which issuer it has. The decision and the
/// error (and so the alert the client gets) are the wrapped verifier's.
pub type ClientVerifier = Explaining<dyn ClientCertVerifier>;

impl ClientVerifier {
    /// The log line for a refused client certificate, if it explains more
    /// than rustls's error does.
    pub fn explain(&self, err: &rustls::Error, cert: &[u8]) -> Option<String> {
        match err {
            rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer,
            ) => Some(issuer_message(
                "the client's",
                cert,
                &self.ca_file,
                &self.cas,
            )),
            _ => None,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                if let Some(why) = self.explain(e, end_entity) {
                    tracing::warn!("client certificate refused: {why}");
                }
            })
    }

    signatures_as_inner!();
}

/// What the client tells its user when the server ended the handshake with
/// `alert`, given our certificate file: who refused what, and what to check.
pub fn alert_from_server(
    alert: rustls::AlertDescription,
    cert_source: &crate::pem_source::PemSource,
) -> Option<String> {
    use rustls::AlertDescription as A;
    let ours = cert_source.certs().ok().and_then(|c| summary(c.first()?));
    let issuer = ours
        .as_ref()
        .map(|s| format!(", issued by {:?}", s.issuer))
        .unwrap_or_default();
    let cert = format!("{cert_source}{issuer}");
    Some(match alert {
        A::DecryptError | A::UnknownCA | A::BadCertificate | A::CertificateUnknown => format!(
            "the server refused our certificate ({cert}): it is likely signed by another CA \
             than the one the server trusts (TLS alert {alert:?}; the server's log names the \
             issuer it saw)"
        ),
        A::CertificateRevoked => format!("the server says our certificate ({cert}) is revoked"),
        A::CertificateExpired => format!(
            "the server says our certificate ({cert}) has expired or is not valid yet{}",
            ours.map(|s| format!(" (valid until {})", s.not_after))
                .unwrap_or_default()
        ),
        A::UnsupportedCertificate => format!(
            "the server refused our certificate ({cert}) as unsuitable for a client \
             (key usage or extended key usage)"
        ),
        A::CertificateRequired => "the server wants a client certificate".to_owned(),
        _ => return None,
    })
}

/// What the server logs when a client ended the handshake with `alert`: the
/// client refused this server's certificate, and what the client must have.
pub fn alert_from_client(alert: rustls::AlertDescription) -> Option<String> {
    use rustls::AlertDescription as A;
    match alert {
        A::DecryptError | A::UnknownCA | A::BadCertificate | A::CertificateUnknown => {
            Some(format!(
                "the client refused this server's certificate (TLS alert {alert:?}): its `tls.ca` \
             must be this server's CA and its `server_name` one of the certificate's names \
             (the client's message says which)"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = include_str!("../../testdata/alice-sans.pem");

    fn alice_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), ALICE).expect("write pem");
        f
    }

    #[test]
    fn summary_reads_names_subject_and_issuer() {
        let f = alice_file();
        let s = summary_of_file(f.path()).expect("summary");
        assert_eq!(s.subject, "CN=alice");
        assert_eq!(s.issuer, "CN=alice");
        assert_eq!(s.names, vec!["alice.example.com".to_owned()]);
        assert!(!s.not_after.is_empty());
        assert_eq!(ip_of(&[127, 0, 0, 1]), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(ip_of(&[1, 2, 3]), None);
    }

    #[test]
    fn alerts_from_the_server_say_who_refused_what() {
        use rustls::AlertDescription as A;
        let f = alice_file();
        for alert in [A::DecryptError, A::UnknownCA, A::BadCertificate] {
            let text = alert_from_server(
                alert,
                &crate::pem_source::PemSource::File(f.path().to_owned()),
            )
            .expect("explained");
            assert!(
                text.contains("the server refused our certificate")
                    && text.contains("another CA")
                    && text.contains(r#"issued by "CN=alice""#)
                    && text.contains(&f.path().display().to_string()),
                "{text}"
            );
        }
        let text = alert_from_server(
            A::CertificateRevoked,
            &crate::pem_source::PemSource::File(f.path().to_owned()),
        )
        .expect("explained");
        assert!(text.contains("revoked"), "{text}");
        assert!(alert_from_server(
            A::InternalError,
            &crate::pem_source::PemSource::File(f.path().to_owned())
        )
        .is_none());
        let text = alert_from_client(A::CertificateUnknown).expect("explained");
        assert!(
            text.contains("the client refused this server's certificate"),
            "{text}"
        );
        assert!(alert_from_client(A::CloseNotify).is_none());
    }
}
