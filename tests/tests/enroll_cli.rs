//! One-file profiles and key enrollment (issue 13) through the real
//! binaries, without a network: `twoway request` + `pki sign` leave the key
//! where it was made, the refusals of `sign` and `renew` (exit 2, saying
//! why), and `twoway up` refusing a profile that holds the key but that its
//! group may read (exit 2, with the chmod that fixes it).
//!
//! Only the last test needs root (`up` runs in a network namespace of its
//! own, `unshare --net`, so that nothing could leave it).

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use twoway_client::config::ClientConfig;
use twoway_tests::bins::{client, pki_in, server};
use twoway_tests::proc::OWN_NETNS;
use twoway_tests::vpn::{path_str, toml_str};
use twoway_tests::{bins, proc, require_root_or_skip, toml_files};

const T: Duration = Duration::from_secs(30);

/// `pki init` in `dir/pki`.
fn pki(dir: &Path) -> PathBuf {
    pki_in(dir, &[])
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v = twoway_tests::vpn::list_dir(dir);
    v.sort();
    v
}

/// The request holds no key; `sign` writes a certificate, a config pointing
/// at ID.key and the CA, and no key; with the laptop's key next to them the
/// config loads, and rustls accepts the pair (it checks that the
/// certificate is for that key).
#[test]
fn request_and_sign_leave_the_key_where_it_was_made() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = pki(tmp.path());
    let laptop = tmp.path().join("laptop");
    let out = client(&["request", "--identity", "erin", "--out", path_str(&laptop)]);
    assert!(out.success(), "twoway request:\n{out}");
    assert!(out.stdout.contains("erin.csr"), "{out}");
    assert_eq!(names(&laptop), ["erin.csr", "erin.key"]);
    assert_eq!(
        (mode(&laptop.join("erin.key")), mode(&laptop)),
        (0o600, 0o700)
    );
    let csr = fs::read_to_string(laptop.join("erin.csr")).expect("csr");
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----") && !csr.contains("PRIVATE"),
        "{csr}"
    );
    // Asked again, it never replaces the key.
    let key = fs::read(laptop.join("erin.key")).expect("key");
    let out = client(&["request", "--identity", "erin", "--out", path_str(&laptop)]);
    assert_eq!(out.code(), Some(2), "a second request over the key:\n{out}");
    assert_eq!(fs::read(laptop.join("erin.key")).expect("key"), key);

    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).expect("inbox");
    let sent = inbox.join("erin.csr");
    fs::copy(laptop.join("erin.csr"), &sent).expect("send the csr");
    let signed = inbox.join("signed");
    let out = server(&[
        "pki",
        "sign",
        "--dir",
        path_str(&pki),
        path_str(&sent),
        "--out",
        path_str(&signed),
    ]);
    assert!(out.success(), "pki sign:\n{out}");
    assert_eq!(names(&signed), ["ca.pem", "erin.pem", "erin.toml"]);
    let config = signed.join("erin.toml");
    assert_eq!(toml_str(&config, "tls.key").as_deref(), Some("erin.key"));
    assert!(!pki.join("erin.key").exists());

    for f in ["ca.pem", "erin.pem", "erin.toml"] {
        fs::copy(signed.join(f), laptop.join(f)).expect("install");
    }
    let config = ClientConfig::load(&laptop.join("erin.toml")).expect("the signed config loads");
    assert_eq!(
        config.tls.key.as_deref(),
        Some(laptop.join("erin.key").as_path())
    );
    let creds = twoway_client::credentials::load(&config)
        .unwrap_or_else(|e| panic!("the certificate must be for the laptop's key: {e}"));
    assert_eq!(creds.certificate.identity.as_deref(), Some("erin"));

    // Another laptop's key in the same place is not the certified one.
    let other = tmp.path().join("other");
    let out = client(&["request", "--identity", "erin", "--out", path_str(&other)]);
    assert!(out.success(), "{out}");
    fs::copy(other.join("erin.key"), laptop.join("erin.key")).expect("swap the key");
    let e = twoway_client::credentials::load(&config).expect_err("a foreign key must not pair");
    assert_eq!(e.exit_code(), 2, "{e}");
}

/// `sign` and `renew` say why they refuse, with exit 2.
#[test]
fn sign_and_renew_refusals_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = pki(tmp.path());
    let d = path_str(&pki);
    let laptop = tmp.path().join("laptop");
    let out = client(&["request", "--identity", "frank", "--out", path_str(&laptop)]);
    assert!(out.success(), "{out}");
    let csr = laptop.join("frank.csr");
    let out = server(&["pki", "sign", "--dir", d, path_str(&csr), "--days", "30"]);
    assert!(out.success(), "{out}");

    let other = tmp.path().join("other");
    let out = client(&["request", "--identity", "frank", "--out", path_str(&other)]);
    assert!(out.success(), "{out}");
    for (args, says) in [
        (
            vec![
                "pki",
                "sign",
                "--dir",
                d,
                path_str(&other.join("frank.csr")),
            ],
            "already has a valid certificate",
        ),
        (
            vec![
                "pki",
                "sign",
                "--dir",
                d,
                path_str(&other.join("frank.key")),
            ],
            "never the .key",
        ),
        (
            vec!["pki", "renew", "--dir", d, "nobody"],
            "unknown identity",
        ),
        (
            vec!["pki", "renew", "--dir", d, "../x"],
            "invalid identity name",
        ),
    ] {
        let out = server(&args);
        assert!(
            out.code() == Some(2) && out.stderr.contains(says),
            "`{}` must exit 2 saying {says:?}:\n{out}",
            args.join(" ")
        );
    }
    let out = server(&["pki", "renew", "--dir", d, "frank"]);
    assert!(
        out.success() && out.stdout.contains("renewed frank"),
        "{out}"
    );
}

/// A profile holding the key (`pki issue --inline`) that its group may
/// read: `up` (foreground and --detach) exits 2 naming the file and `chmod
/// 600`. After that chmod the same `up` gets past the key and fails only on
/// the server it cannot reach (exit 4).
#[test]
fn up_refuses_a_group_readable_inline_profile() {
    if !require_root_or_skip("up_refuses_a_group_readable_inline_profile") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = pki(tmp.path());
    let out = server(&["pki", "issue", "--dir", path_str(&pki), "gina", "--inline"]);
    assert!(out.success(), "pki issue --inline:\n{out}");
    let profile = pki.join("gina.toml");
    assert_eq!(mode(&profile), 0o600);
    toml_files::edit_toml(&profile, |t| {
        toml_files::set(t, "server", "127.0.0.1:9");
        toml_files::set(t, "connect_timeout_secs", 2);
        toml_files::set(t, "control.socket", path_str(&tmp.path().join("gina.sock")));
    });
    let up = |detach: bool| {
        let mut args = [&OWN_NETNS[..], &[bins().client_str(), "up"]].concat();
        args.extend(["--config", path_str(&profile)]);
        if detach {
            args.push("--detach");
        }
        proc::run(&args, T)
    };
    fs::set_permissions(&profile, Permissions::from_mode(0o640)).expect("chmod 640");
    let p = profile.display();
    let refusal = format!(
        "{p} holds a private key (key `tls.key_pem`) and is readable by its group (mode 0640); run: chmod 600 {p}"
    );
    for detach in [false, true] {
        let out = up(detach);
        let text = format!("{}{}", out.stderr, out.stdout);
        assert!(
            out.code() == Some(2) && text.contains(&refusal),
            "up (detach: {detach}) with a 0640 profile must exit 2 saying:\n{refusal}\n{out}"
        );
    }
    fs::set_permissions(&profile, Permissions::from_mode(0o600)).expect("chmod 600");
    let out = up(false);
    assert!(
        out.code() == Some(4) && !out.stderr.contains("chmod"),
        "after chmod 600, `up` reads the profile and fails on the server only (exit 4):\n{out}"
    );
}
