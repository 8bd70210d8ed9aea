//! End-to-end tests of revoke: the CRL it writes, list after it, re-issuing,
//! and recovery from a crash between writing the CRL and the index.

use std::fs;
use std::path::Path;

use x509_parser::prelude::*;

use super::tests::{fresh, issue_opts, mode, pem_of};
use super::*;

/// The CRL's number and its serials (hex), after checking its signature.
fn crl_of(dir: &Path) -> (u64, Vec<String>) {
    let ca_der = pem_of(&dir.join(CA_CERT_FILE));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let der = pem_of(&dir.join(CRL_FILE));
    let (_, crl) = parse_x509_crl(&der).unwrap();
    assert_eq!(crl.issuer(), ca.subject());
    crl.verify_signature(ca.public_key()).unwrap();
    let number = crl.crl_number().unwrap().to_u64_digits();
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| index::hex(r.raw_serial()))
        .collect();
    (number.first().copied().unwrap_or(0), serials)
}

#[test]
fn revoke_puts_the_serial_on_the_crl() {
    let (_tmp, dir) = fresh(&[]);
    assert_eq!(crl_of(&dir), (FIRST_CRL_NUMBER, vec![]));
    issue(&issue_opts(&dir, "alice")).unwrap();
    issue(&issue_opts(&dir, "bob")).unwrap();
    let alice = list(&dir).unwrap()[0].serial.clone();
    let bob = list(&dir).unwrap()[1].serial.clone();

    revoke(&dir, "alice").unwrap();
    assert_eq!(crl_of(&dir), (2, vec![alice.clone()]));
    assert_eq!(mode(&dir.join(CRL_FILE)), 0o644);
    let records = list(&dir).unwrap();
    assert!(records[0].revoked);
    assert!(!records[1].revoked);

    revoke(&dir, "bob").unwrap();
    let (number, serials) = crl_of(&dir);
    assert_eq!(number, 3);
    assert!(serials.contains(&alice) && serials.contains(&bob));

    assert!(matches!(
        revoke(&dir, "alice"),
        Err(PkiError::AlreadyRevoked(_))
    ));
    let err = revoke(&dir, "carol").unwrap_err();
    assert!(matches!(err, PkiError::UnknownIdentity { .. }));
    assert!(err.to_string().contains("unknown identity"), "{err}");
    assert_eq!(crl_of(&dir).0, 3);
}

#[test]
fn reissue_after_revoke_replaces_the_key() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "alice")).unwrap();
    let old_key = fs::read(dir.join("alice.key")).unwrap();
    revoke(&dir, "alice").unwrap();
    issue(&issue_opts(&dir, "alice")).unwrap();
    assert_ne!(fs::read(dir.join("alice.key")).unwrap(), old_key);
    assert_eq!(mode(&dir.join("alice.key")), 0o600);
    let records = list(&dir).unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].revoked && !records[1].revoked);
    assert_ne!(records[0].serial, records[1].serial);
    // The new certificate is live, the old one stays on the CRL.
    let (_, serials) = crl_of(&dir);
    assert_eq!(serials, vec![records[0].serial.clone()]);
    assert!(matches!(
        issue(&issue_opts(&dir, "alice")),
        Err(PkiError::AlreadyIssued { .. })
    ));
}

#[test]
fn crash_between_crl_and_index_never_unrevokes() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "alice")).unwrap();
    issue(&issue_opts(&dir, "bob")).unwrap();
    let before = fs::read(dir.join(INDEX_FILE)).unwrap();
    revoke(&dir, "alice").unwrap();
    // Simulate a crash after the CRL was written but before the index was.
    fs::write(dir.join(INDEX_FILE), before).unwrap();
    let alice = list(&dir).unwrap()[0].clone();
    assert!(alice.revoked, "the CRL says alice is revoked");

    revoke(&dir, "bob").unwrap();
    let (number, serials) = crl_of(&dir);
    assert!(serials.contains(&alice.serial), "alice fell off the CRL");
    assert_eq!(number, 3, "CRL numbers never repeat");
    assert!(list(&dir).unwrap().iter().all(|r| r.revoked));
    issue(&issue_opts(&dir, "alice")).unwrap();
}
