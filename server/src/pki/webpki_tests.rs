//! Checks that rustls (webpki) accepts what the PKI makes: the client
//! certificate against the CA with the CRL, the server certificate for its
//! name and addresses, and that a revoked certificate is refused.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use super::*;

fn cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(cert(&dir.join(CA_CERT_FILE))).unwrap();
    Arc::new(roots)
}

fn client_verifier(dir: &Path) -> Arc<dyn ClientCertVerifier> {
    let crl = CertificateRevocationListDer::from_pem_file(dir.join(CRL_FILE)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots(dir), provider)
        .with_crls([crl])
        .enforce_revocation_expiration()
        .build()
        .unwrap()
}

#[test]
fn rustls_accepts_the_client_until_it_is_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = InitOptions {
        dir: dir.to_path_buf(),
        name: "vpn.example.com".into(),
        ips: vec![],
        port: DEFAULT_PORT,
        days: DEFAULT_DAYS_SERVER,
    };
    init(&opts).unwrap();
    for identity in ["alice", "bob@example.com"] {
        issue(&IssueOptions {
            dir: dir.to_path_buf(),
            identity: identity.into(),
            days: DEFAULT_DAYS_CLIENT,
            out: None,
        })
        .unwrap();
    }
    let alice = cert(&dir.join("alice.pem"));
    let bob = cert(&dir.join("bob@example.com.pem"));
    let now = UnixTime::now();
    client_verifier(dir)
        .verify_client_cert(&alice, &[], now)
        .unwrap();

    revoke(dir, "alice").unwrap();
    let verifier = client_verifier(dir);
    let err = verifier.verify_client_cert(&alice, &[], now).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked),
        "{err}"
    );
    verifier.verify_client_cert(&bob, &[], now).unwrap();
    // A server certificate is not a client certificate.
    let server = cert(&dir.join(SERVER_CERT_FILE));
    assert!(verifier.verify_client_cert(&server, &[], now).is_err());
}

#[test]
fn rustls_accepts_the_server_by_name_and_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(&InitOptions {
        dir: dir.to_path_buf(),
        name: "vpn.example.com".into(),
        ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        port: DEFAULT_PORT,
        days: DEFAULT_DAYS_SERVER,
    })
    .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(dir), provider)
        .build()
        .unwrap();
    let server = cert(&dir.join(SERVER_CERT_FILE));
    let now = UnixTime::now();
    for name in ["vpn.example.com", "192.0.2.1", "2001:db8::1"] {
        let name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&server, &[], &name, &[], now)
            .unwrap();
    }
    let other = ServerName::try_from("other.example.com").unwrap();
    assert!(verifier
        .verify_server_cert(&server, &[], &other, &[], now)
        .is_err());
}
