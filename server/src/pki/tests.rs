//! End-to-end tests of init, issue, revoke and list in a temporary folder.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use x509_parser::prelude::*;

use super::*;

pub(super) fn init_opts(dir: &Path, ips: &[&str]) -> InitOptions {
    InitOptions {
        dir: dir.to_path_buf(),
        name: "vpn.example.com".into(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        port: 5555,
        days: DEFAULT_DAYS_SERVER,
    }
}

pub(super) fn issue_opts(dir: &Path, identity: &str) -> IssueOptions {
    IssueOptions {
        dir: dir.to_path_buf(),
        identity: identity.into(),
        days: DEFAULT_DAYS_CLIENT,
        out: None,
    }
}

pub(super) fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub(super) fn pem_of(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&bytes).unwrap();
    pem.contents
}

pub(super) fn toml_of(path: &Path) -> toml::Table {
    toml::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A fresh PKI in a not yet existing subfolder of a temporary folder.
pub(super) fn fresh(ips: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    init(&init_opts(&dir, ips)).unwrap();
    (tmp, dir)
}

#[test]
fn init_writes_all_files_with_private_keys_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let written = init(&init_opts(&dir, &["192.0.2.1"])).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    for file in [
        CA_CERT_FILE,
        CA_KEY_FILE,
        SERVER_CERT_FILE,
        SERVER_KEY_FILE,
        CRL_FILE,
        INDEX_FILE,
        SERVER_CONFIG_FILE,
        POLICY_FILE,
    ] {
        assert!(names.contains(&file.to_string()), "{file} not reported");
        assert!(dir.join(file).is_file(), "{file} not written");
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(SERVER_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o644);
    assert_eq!(mode(&dir.join(CRL_FILE)), 0o644);
    assert!(list(&dir).unwrap().is_empty());

    let server = toml_of(&dir.join(SERVER_CONFIG_FILE));
    assert_eq!(server["listen"].as_str(), Some("0.0.0.0:5555"));
    assert_eq!(server["policy"].as_str(), Some("policy.toml"));
    assert_eq!(server["tls"]["ca"].as_str(), Some("ca.pem"));
    assert_eq!(server["tls"]["key"].as_str(), Some("server.key"));
    assert_eq!(server["tunnel"]["network"].as_str(), Some("10.77.0.0/24"));
    assert_eq!(server["identity"]["source"].as_str(), Some("cn"));
    let policy = toml_of(&dir.join(POLICY_FILE));
    assert_eq!(policy["client_to_client"].as_bool(), Some(false));
}

#[test]
fn init_twice_refuses_and_keeps_the_first_ca() {
    let (_tmp, dir) = fresh(&[]);
    let key = fs::read(dir.join(CA_KEY_FILE)).unwrap();
    let cert = fs::read(dir.join(CA_CERT_FILE)).unwrap();
    let err = init(&init_opts(&dir, &[])).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyInitialized(_)));
    let msg = err.to_string();
    assert!(msg.contains("ca.key: refusing to overwrite"), "{msg}");
    assert_eq!(fs::read(dir.join(CA_KEY_FILE)).unwrap(), key);
    assert_eq!(fs::read(dir.join(CA_CERT_FILE)).unwrap(), cert);
}

#[test]
fn init_refuses_a_folder_with_a_config_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(SERVER_CONFIG_FILE), "# mine").unwrap();
    let err = init(&init_opts(tmp.path(), &[])).unwrap_err();
    assert!(matches!(err, PkiError::FileExists(_)), "{err}");
    assert!(!tmp.path().join(CA_KEY_FILE).exists());
}

#[test]
fn init_refuses_bad_names_and_days() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = init_opts(tmp.path(), &[]);
    opts.name = "not a name".into();
    assert!(matches!(init(&opts), Err(PkiError::InvalidServerName(_))));
    let mut opts = init_opts(tmp.path(), &[]);
    opts.days = 0;
    assert!(matches!(init(&opts), Err(PkiError::InvalidDays(_))));
    assert!(!tmp.path().join(CA_KEY_FILE).exists());
}

#[test]
fn server_cert_names_the_server_and_chains_to_the_ca() {
    let (_tmp, dir) = fresh(&["192.0.2.1", "2001:db8::1"]);
    let ca_der = pem_of(&dir.join(CA_CERT_FILE));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert_eq!(
        ca.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "twoway CA vpn.example.com"
    );
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());

    let der = pem_of(&dir.join(SERVER_CERT_FILE));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert!(!cert.is_ca());
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(names.contains(&GeneralName::DNSName("vpn.example.com")));
    assert!(names.contains(&GeneralName::IPAddress(&[192, 0, 2, 1])));
    let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert!(names.contains(&GeneralName::IPAddress(&v6.octets())));
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let serial = cert.raw_serial();
    assert_eq!(serial.len(), 16);
    assert!(serial[0] < 0x80);
    let skew =
        cert.validity().not_before.timestamp() - ::time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (-3700..=-3500).contains(&skew),
        "not_before is {skew}s from now"
    );
}

#[test]
fn issued_cert_is_a_client_cert_of_the_ca() {
    let (_tmp, dir) = fresh(&["192.0.2.1"]);
    let written = issue(&issue_opts(&dir, "alice")).unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    assert_eq!(mode(&dir.join("alice.key")), 0o600);

    let ca_der = pem_of(&dir.join(CA_CERT_FILE));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let der = pem_of(&dir.join("alice.pem"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key())).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "alice");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, i64::from(DEFAULT_DAYS_CLIENT)); // plus the hour of skew

    let records = list(&dir).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].identity, "alice");
    assert_eq!(records[0].serial, index::hex(cert.raw_serial()));
    assert!(!records[0].revoked);
    assert!(records[0].not_after.ends_with('Z'));

    let config = toml_of(&dir.join("alice.toml"));
    assert_eq!(config["server"].as_str(), Some("192.0.2.1:5555"));
    assert_eq!(config["server_name"].as_str(), Some("vpn.example.com"));
    assert_eq!(config["tls"]["ca"].as_str(), Some("ca.pem"));
    assert_eq!(config["tls"]["cert"].as_str(), Some("alice.pem"));
    assert_eq!(config["tls"]["key"].as_str(), Some("alice.key"));
    assert_eq!(
        config["control"]["socket"].as_str(),
        Some("/run/twoway/alice.sock")
    );
}

#[test]
fn issue_to_another_folder_copies_the_ca() {
    let (tmp, dir) = fresh(&[]);
    let out = tmp.path().join("out").join("bob");
    let mut opts = issue_opts(&dir, "bob@example.com");
    opts.out = Some(out.clone());
    let written = issue(&opts).unwrap();
    assert!(written.contains(&out.join(CA_CERT_FILE)));
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("bob@example.com.key")), 0o600);
    assert_eq!(
        fs::read(out.join(CA_CERT_FILE)).unwrap(),
        fs::read(dir.join(CA_CERT_FILE)).unwrap()
    );
    assert!(!dir.join("bob@example.com.pem").exists());
    let config = toml_of(&out.join("bob@example.com.toml"));
    assert_eq!(config["server"].as_str(), Some("vpn.example.com:5555"));
}

#[test]
fn issue_twice_refuses() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "alice")).unwrap();
    let key = fs::read(dir.join("alice.key")).unwrap();
    let err = issue(&issue_opts(&dir, "alice")).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyIssued { .. }));
    assert!(err.to_string().contains("revoke it first"), "{err}");
    assert_eq!(fs::read(dir.join("alice.key")).unwrap(), key);
    assert_eq!(list(&dir).unwrap().len(), 1);
}

#[test]
fn issue_refuses_invalid_identities() {
    let (_tmp, dir) = fresh(&[]);
    for bad in ["", "../evil", ".x", "-x", "a b", "ca", "server"] {
        let err = issue(&issue_opts(&dir, bad)).unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidIdentity { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(list(&dir).unwrap().is_empty());
}

/// `issue` (plain or inline) of carol into a fresh PKI where `stray`, a
/// file we did not write, holds `text`: refused with KeyExists, the file
/// left as it was.
pub(super) fn stray_file_is_kept(
    issue: fn(&IssueOptions) -> Result<Vec<PathBuf>, PkiError>,
    stray: &str,
    text: &str,
) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = fresh(&[]);
    fs::write(dir.join(stray), text).unwrap();
    let err = issue(&issue_opts(&dir, "carol")).unwrap_err();
    assert!(matches!(err, PkiError::KeyExists { .. }), "{err}");
    assert_eq!(fs::read_to_string(dir.join(stray)).unwrap(), text);
    (tmp, dir)
}

#[test]
fn issue_refuses_a_stray_key() {
    let (_tmp, dir) = stray_file_is_kept(issue, "carol.key", "not ours");
    assert!(list(&dir).unwrap().is_empty());
}

#[test]
fn issue_without_a_pki_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let err = issue(&issue_opts(tmp.path(), "alice")).unwrap_err();
    assert!(matches!(err, PkiError::NotInitialized(_)), "{err}");
}

#[test]
fn issue_refuses_a_ca_key_other_users_can_read() {
    let (_tmp, dir) = fresh(&[]);
    let ca_key = dir.join(CA_KEY_FILE);
    fs::set_permissions(&ca_key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = issue(&issue_opts(&dir, "alice")).unwrap_err();
    assert!(matches!(err, PkiError::ExposedKey(_)), "{err}");
    let want = format!("run: chmod 640 {}", ca_key.display());
    assert!(err.to_string().contains(&want), "{err}");
    assert!(!dir.join("alice.key").exists());
    fs::set_permissions(&ca_key, fs::Permissions::from_mode(0o600)).unwrap();
    issue(&issue_opts(&dir, "alice")).unwrap();
}
