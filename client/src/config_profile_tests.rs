//! Tests of `[tls]`: files or PEM texts (a one-file profile), exactly one of
//! each pair, and the mode rule of a profile that holds the key.

use std::path::Path;

use super::tests::{parse, GOOD};
use super::ClientConfig;

/// A CA, and a certificate and key it signed for alice: PEM texts.
fn pems() -> (String, String, String) {
    use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// A one-file profile: GOOD with the three PEM texts instead of paths.
fn inline(ca: &str, cert: &str, key: &str) -> String {
    GOOD.replace(
        "ca = \"ca.pem\"\ncert = \"alice.pem\"\nkey = \"alice.key\"\n",
        &format!("ca_pem = \"\"\"\n{ca}\"\"\"\ncert_pem = \"\"\"\n{cert}\"\"\"\nkey_pem = \"\"\"\n{key}\"\"\"\n"),
    )
}

#[test]
fn pem_texts_stand_in_for_the_files() {
    let (ca, cert, key) = pems();
    let c = parse(&inline(&ca, &cert, &key)).unwrap();
    let [s_ca, s_cert, s_key] = c.tls_sources();
    assert!([&s_ca, &s_cert, &s_key].iter().all(|s| s.path().is_none()));
    assert_eq!(s_cert.certs().unwrap().len(), 1);
    assert!(s_key.private_key().is_ok());
    assert!(
        !format!("{c:?}").contains("PRIVATE KEY"),
        "Debug shows no key"
    );
    // Any mix of files and texts, one of each pair.
    let mixed = GOOD.replace(
        "ca = \"ca.pem\"\n",
        &format!("ca_pem = \"\"\"\n{ca}\"\"\"\n"),
    );
    let c = parse(&mixed).unwrap();
    let [s_ca, s_cert, _] = c.tls_sources();
    assert!(s_ca.path().is_none());
    assert_eq!(s_cert.path(), Some(Path::new("alice.pem")));
}

#[test]
fn each_pair_needs_exactly_one() {
    let (ca, cert, key) = pems();
    let both = GOOD.replace(
        "[tls]\n",
        &format!("[tls]\ncert_pem = \"\"\"\n{cert}\"\"\"\n"),
    );
    let e = parse(&both).unwrap_err();
    assert!(
        e.contains("alice.toml: key `tls.cert_pem`: give either `tls.cert` (a file) or `tls.cert_pem` (the PEM text), not both"),
        "{e}"
    );
    let neither = inline(&ca, &cert, &key).replace(&format!("key_pem = \"\"\"\n{key}\"\"\"\n"), "");
    let e = parse(&neither).unwrap_err();
    assert!(
        e.contains("alice.toml: key `tls.key`: missing: give `tls.key` (a file) or `tls.key_pem` (the PEM text)"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "only the missing pair is named: {e}");
}

#[test]
fn a_pem_text_that_holds_nothing_usable_names_its_key() {
    let (ca, _, key) = pems();
    let e = parse(&inline(&ca, "-----BEGIN JUNK-----\n", &key)).unwrap_err();
    assert!(e.contains("key `tls.cert_pem`: certificates:"), "{e}");
    let e = parse(&inline(&ca, &ca, "not a key\n")).unwrap_err();
    assert!(e.contains("key `tls.key_pem`: private key:"), "{e}");
    assert!(!e.contains("tls.cert_pem"), "{e}");
}

#[test]
fn a_profile_holding_the_key_must_be_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (ca, cert, key) = pems();
    let (dir, path) = twoway_common::temp_path::temp_path("alice.toml");
    std::fs::write(&path, inline(&ca, &cert, &key)).unwrap();
    let chmod =
        |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    for mode in [0o640, 0o644, 0o604] {
        chmod(mode);
        let c = ClientConfig::load(&path).unwrap();
        let e = crate::credentials::load(&c).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{mode:o}");
        assert!(
            e.to_string()
                .ends_with(&format!("run: chmod 600 {}", path.display())),
            "{mode:o}: {e}"
        );
    }
    chmod(0o600);
    let c = ClientConfig::load(&path).unwrap();
    let creds = crate::credentials::load(&c).unwrap();
    assert_eq!(creds.certificate.identity.as_deref(), Some("alice"));
    // Without the key inside, the profile is an ordinary config.
    std::fs::write(dir.path().join("alice.key"), &key).unwrap();
    std::fs::set_permissions(
        dir.path().join("alice.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let text = inline(&ca, &cert, &key).replace(
        &format!("key_pem = \"\"\"\n{key}\"\"\"\n"),
        "key = \"alice.key\"\n",
    );
    std::fs::write(&path, text).unwrap();
    chmod(0o644);
    let c = ClientConfig::load(&path).unwrap();
    assert_eq!(
        c.tls.key.as_deref(),
        Some(dir.path().join("alice.key").as_path())
    );
    crate::credentials::load(&c).unwrap();
}
