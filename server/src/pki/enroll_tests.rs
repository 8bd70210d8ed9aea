//! Tests of the one-file profile (`issue --inline`), `sign` and `renew`.

use std::fs;
use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use x509_parser::prelude::*;

use super::index::hex;
use super::tests::{fresh, issue_opts, mode, pem_of, stray_file_is_kept, toml_of};
use super::*;

/// A request for `cn` made with `key`, written to `dir/NAME.csr`.
fn csr(dir: &Path, cn: &str, key: &KeyPair) -> PathBuf {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    let path = dir.join(format!("{cn}.csr"));
    fs::write(&path, params.serialize_request(key).unwrap().pem().unwrap()).unwrap();
    path
}

fn sign_opts(dir: &Path, csr: &Path, out: Option<&Path>) -> SignOptions {
    SignOptions {
        dir: dir.to_path_buf(),
        csr: csr.to_path_buf(),
        days: 30,
        out: out.map(Path::to_path_buf),
        identity: None,
    }
}

/// Serial (hex), SPKI (hex), CN and clientAuth of a PEM certificate, after
/// checking that the CA in `dir` signed it.
fn cert_facts(dir: &Path, pem: &[u8]) -> (String, String, String, bool) {
    let ca_der = pem_of(&dir.join(CA_CERT_FILE));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let (_, pem) = parse_x509_pem(pem).unwrap();
    let (_, cert) = X509Certificate::from_der(&pem.contents).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    (
        hex(cert.raw_serial()),
        hex(&spki.subject_public_key_info()),
        cn.as_str().unwrap().to_owned(),
        eku.client_auth && !eku.server_auth,
    )
}

#[test]
fn inline_issue_writes_one_owner_only_profile_with_everything_inside() {
    let (tmp, dir) = fresh(&["192.0.2.1"]);
    let out = tmp.path().join("out");
    let mut opts = issue_opts(&dir, "alice");
    opts.out = Some(out.clone());
    let written = issue_inline(&opts).unwrap();
    let profile = out.join("alice.toml");
    assert_eq!(written, vec![profile.clone()]);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "no other file");
    assert_eq!(mode(&profile), 0o600);

    let t = toml_of(&profile);
    assert_eq!(t["server"].as_str(), Some("192.0.2.1:5555"));
    let tls = t["tls"].as_table().unwrap();
    assert!(tls.get("ca").is_none() && tls.get("cert").is_none() && tls.get("key").is_none());
    assert_eq!(
        tls["ca_pem"].as_str().unwrap(),
        fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap()
    );
    let (serial, spki, cn, client) = cert_facts(&dir, tls["cert_pem"].as_str().unwrap().as_bytes());
    let key = KeyPair::from_pem(tls["key_pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        spki,
        hex(&key.subject_public_key_info()),
        "key and cert belong together"
    );
    assert_eq!((cn.as_str(), client), ("alice", true));
    let index = index::Index::load(&dir).unwrap();
    assert_eq!(index.certs[0].serial, serial);
    assert_eq!(index.certs[0].public_key.as_deref(), Some(spki.as_str()));

    let err = issue_inline(&opts).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyIssued { .. }), "{err}");
}

#[test]
fn inline_issue_never_overwrites_a_stray_profile() {
    stray_file_is_kept(issue_inline, "carol.toml", "# mine");
}

#[test]
fn sign_certifies_the_request_key_and_points_the_config_at_it() {
    let (tmp, dir) = fresh(&["192.0.2.1"]);
    let laptop = tmp.path().join("laptop");
    fs::create_dir(&laptop).unwrap();
    let key = KeyPair::generate().unwrap();
    let request = csr(&laptop, "bob", &key);
    let done = sign(&sign_opts(&dir, &request, Some(&laptop))).unwrap();
    assert_eq!(done.identity, "bob");
    let names: Vec<_> = done
        .written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bob.pem", "ca.pem", "bob.toml"]);
    assert!(!laptop.join("bob.key").exists() && !dir.join("bob.key").exists());

    let (serial, spki, cn, client) = cert_facts(&dir, &fs::read(laptop.join("bob.pem")).unwrap());
    assert_eq!(spki, hex(&key.subject_public_key_info()));
    assert_eq!((cn.as_str(), client, serial), ("bob", true, done.serial));
    let t = toml_of(&laptop.join("bob.toml"));
    assert_eq!(t["tls"]["key"].as_str(), Some("bob.key"));
    assert_eq!(t["tls"]["cert"].as_str(), Some("bob.pem"));

    // While bob holds a valid certificate, another request is refused.
    let other = KeyPair::generate().unwrap();
    let again = csr(tmp.path(), "bob", &other);
    let err = sign(&sign_opts(&dir, &again, Some(&laptop))).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyIssued { .. }), "{err}");
    assert!(err.to_string().contains("pki renew"), "{err}");
    // After revoke the identity may enrol again, but never with a key
    // certified before (it may be why bob was revoked).
    revoke(&dir, "bob").unwrap();
    let err = sign(&sign_opts(&dir, &request, Some(&laptop))).unwrap_err();
    assert!(matches!(err, PkiError::KeyReused { .. }), "{err}");
    sign(&sign_opts(&dir, &again, Some(tmp.path()))).unwrap();
}

#[test]
fn sign_refuses_bad_names_and_a_key_file_that_is_not_the_requests() {
    let (tmp, dir) = fresh(&[]);
    let key = KeyPair::generate().unwrap();
    let err = sign(&sign_opts(&dir, &csr(tmp.path(), "ca", &key), None)).unwrap_err();
    assert!(matches!(err, PkiError::InvalidIdentity { .. }), "{err}");
    // dave.key in OUT belongs to another key: the config would not work.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let stray = KeyPair::generate().unwrap();
    twoway_common::atomic_file::write_new(
        &out.join("dave.key"),
        stray.serialize_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    let request = csr(tmp.path(), "dave", &key);
    let err = sign(&sign_opts(&dir, &request, Some(&out))).unwrap_err();
    assert!(matches!(err, PkiError::ForeignKey { .. }), "{err}");
    assert!(list(&dir).unwrap().is_empty(), "nothing recorded");
    // Its own key is fine.
    fs::remove_file(out.join("dave.key")).unwrap();
    twoway_common::atomic_file::write_new(
        &out.join("dave.key"),
        key.serialize_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    sign(&sign_opts(&dir, &request, Some(&out))).unwrap();
}

#[test]
fn an_expired_certificate_does_not_block_a_new_one() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "erin")).unwrap();
    let mut index = index::Index::load(&dir).unwrap();
    index.certs[0].not_after = "2020-01-01T00:00:00Z".into();
    index.save(&dir).unwrap();
    fs::remove_file(dir.join("erin.key")).unwrap();
    issue(&issue_opts(&dir, "erin")).unwrap();
}

#[test]
fn renew_certifies_the_same_key_again_and_leaves_the_old_certificate_valid() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "alice")).unwrap();
    let key = KeyPair::from_pem(&fs::read_to_string(dir.join("alice.key")).unwrap()).unwrap();
    let old = fs::read(dir.join("alice.pem")).unwrap();
    let config = fs::read(dir.join("alice.toml")).unwrap();
    fs::write(dir.join("alice.toml"), b"# edited by hand\n").unwrap();

    let done = renew(&dir, "alice", 10, None).unwrap();
    let new = fs::read(dir.join("alice.pem")).unwrap();
    assert_ne!(old, new);
    let (serial, spki, _, client) = cert_facts(&dir, &new);
    assert_eq!((serial.as_str(), client), (done.serial.as_str(), true));
    assert_eq!(spki, hex(&key.subject_public_key_info()));
    assert_eq!(
        fs::read_to_string(dir.join("alice.toml")).unwrap(),
        "# edited by hand\n",
        "an existing config is kept"
    );
    assert_ne!(config, b"# edited by hand\n");
    let records = list(&dir).unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        records.iter().all(|r| !r.revoked),
        "the old one stays valid"
    );
    // One revoke cuts both.
    assert_eq!(revoke(&dir, "alice").unwrap(), 2);
    assert!(list(&dir).unwrap().iter().all(|r| r.revoked));
    let err = renew(&dir, "alice", 10, None).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyRevoked(_)), "{err}");
    let err = renew(&dir, "nobody", 10, None).unwrap_err();
    assert!(matches!(err, PkiError::UnknownIdentity { .. }), "{err}");
}

#[test]
fn renew_puts_the_new_certificate_into_a_one_file_profile() {
    let (_tmp, dir) = fresh(&[]);
    issue_inline(&issue_opts(&dir, "alice")).unwrap();
    let path = dir.join("alice.toml");
    let mut t = toml_of(&path);
    t.insert("connect_timeout_secs".into(), 7.into());
    fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    let key_pem = t["tls"]["key_pem"].as_str().unwrap().to_owned();

    let done = renew(&dir, "alice", 10, None).unwrap();
    assert_eq!(done.written, vec![path.clone()]);
    assert_eq!(mode(&path), 0o600);
    let t = toml_of(&path);
    assert_eq!(t["tls"]["key_pem"].as_str(), Some(key_pem.as_str()));
    assert_eq!(
        t["connect_timeout_secs"].as_integer(),
        Some(7),
        "other keys kept"
    );
    let (serial, ..) = cert_facts(&dir, t["tls"]["cert_pem"].as_str().unwrap().as_bytes());
    assert_eq!(serial, done.serial);
    assert!(!dir.join("alice.pem").exists());

    // A profile with some other key is not touched.
    let mut t = t;
    let other = KeyPair::generate().unwrap().serialize_pem();
    t["tls"]
        .as_table_mut()
        .unwrap()
        .insert("key_pem".into(), other.into());
    fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    let err = renew(&dir, "alice", 10, None).unwrap_err();
    assert!(matches!(err, PkiError::ProfileKeyMismatch { .. }), "{err}");
    assert_eq!(list(&dir).unwrap().len(), 2, "nothing recorded");
}

#[test]
fn renew_of_an_old_entry_finds_its_key_in_its_certificate() {
    let (_tmp, dir) = fresh(&[]);
    issue(&issue_opts(&dir, "alice")).unwrap();
    let mut index = index::Index::load(&dir).unwrap();
    let spki = index.certs[0].public_key.take().unwrap();
    index.save(&dir).unwrap();
    renew(&dir, "alice", 10, None).unwrap();
    let index = index::Index::load(&dir).unwrap();
    assert_eq!(index.certs[1].public_key.as_deref(), Some(spki.as_str()));

    issue(&issue_opts(&dir, "bob")).unwrap();
    let mut index = index::Index::load(&dir).unwrap();
    index.certs[2].public_key = None;
    index.save(&dir).unwrap();
    fs::remove_file(dir.join("bob.pem")).unwrap();
    let err = renew(&dir, "bob", 10, None).unwrap_err();
    assert!(matches!(err, PkiError::KeyUnknown { .. }), "{err}");
}

/// Review finding: with `--identity`, a request whose CN names someone else
/// is refused (a revoked user asking again under a colleague's file name).
#[test]
fn sign_refuses_a_cn_other_than_the_given_identity() {
    let (tmp, dir) = fresh(&["192.0.2.1"]);
    let key = KeyPair::generate().unwrap();
    let csr = csr(tmp.path(), "bob", &key);
    let mut opts = sign_opts(&dir, &csr, None);
    opts.identity = Some("alice".into());
    let err = sign(&opts).unwrap_err().to_string();
    assert!(
        err.contains("\"bob\"") && err.contains("--identity"),
        "{err}"
    );
    opts.identity = Some("bob".into());
    sign(&opts).expect("the CN is the identity given");
}
