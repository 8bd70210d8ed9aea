//! The in-process fixture of the loopback tests: a PKI in a temporary folder
//! whose server.toml keeps its socket and state inside that folder and uses a
//! tunnel network in 198.18.0.0/15.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use twoway_common::tls::{self, ServerTlsFiles};
use twoway_server::pki;

/// Makes `dir/pki` with `pki init` (server name vpn.test on 127.0.0.1),
/// rewrites its server.toml for the test and appends `extra` TOML to it.
/// Returns the PKI folder.
pub fn make_pki(dir: &Path, extra: &str) -> PathBuf {
    let pki_dir = dir.join("pki");
    pki::init(&pki::InitOptions {
        dir: pki_dir.clone(),
        name: "vpn.test".into(),
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        port: 4433,
        days: 30,
    })
    .expect("pki init");
    let path = pki_dir.join("server.toml");
    let text = std::fs::read_to_string(&path)
        .expect("read server.toml")
        .replace(
            "/run/twoway/server.sock",
            &dir.join("server.sock").display().to_string(),
        )
        .replace("/var/lib/twoway", &dir.join("state").display().to_string())
        .replace("10.77.0.0/24", "198.18.77.0/24")
        .replace("10.77.0.128/25", "198.18.77.128/25");
    std::fs::write(&path, format!("{text}\n{extra}")).expect("write server.toml");
    pki_dir
}

/// [`make_pki`] plus a client "alice", with the TLS configs both ends build
/// from those files: (PKI folder, server config, alice's client config).
pub fn alice_tls(
    dir: &Path,
) -> (
    PathBuf,
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
) {
    let pki_dir = make_pki(dir, "");
    pki::issue(&pki::IssueOptions {
        dir: pki_dir.clone(),
        identity: "alice".into(),
        days: 30,
        out: None,
    })
    .expect("pki issue alice");
    let f = |name: &str| pki_dir.join(name);
    let server = tls::server_config(&ServerTlsFiles {
        ca: f("ca.pem"),
        cert: f("server.pem"),
        key: f("server.key"),
        crl: f("crl.pem"),
    })
    .expect("server TLS config");
    let client = tls::client_config(&f("ca.pem"), &f("alice.pem"), &f("alice.key"))
        .expect("client TLS config");
    (pki_dir, server, client)
}

/// [`alice_tls`] in a temporary folder that lives as long as this value: the
/// TLS configs of both ends for tests that drive TLS streams in memory or
/// over loopback, and the PKI files for peers that read them (openssl).
pub struct TlsPki {
    /// The PKI folder (ca.pem, server.pem, alice.pem, ...).
    pub dir: PathBuf,
    /// The server's TLS config.
    pub server: Arc<rustls::ServerConfig>,
    /// alice's client TLS config.
    pub client: Arc<rustls::ClientConfig>,
    _tmp: tempfile::TempDir,
}

impl TlsPki {
    /// A new PKI with server vpn.test and client alice.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, server, client) = alice_tls(tmp.path());
        Self {
            dir,
            server,
            client,
            _tmp: tmp,
        }
    }

    /// A file of the PKI folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The leaf (first) certificate of one of the PKI's PEM files.
    pub fn leaf(&self, name: &str) -> rustls::pki_types::CertificateDer<'static> {
        tls::load_certs(&self.file(name))
            .expect("PEM certificates")
            .remove(0)
    }

    /// The name the server certificate carries, as a client dials it.
    pub fn server_name() -> rustls::pki_types::ServerName<'static> {
        tls::server_name("vpn.test").expect("valid server name")
    }
}

impl Default for TlsPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS 1.3 application-data record that nobody sealed: a well-formed
/// header around 40 bytes that cannot authenticate.
pub fn unsealed_record() -> Vec<u8> {
    let mut record = vec![23, 3, 3, 0, 40];
    record.extend_from_slice(&[0x55; 40]);
    record
}

/// Whether an error of a rustls stream is the peer's fatal bad_record_mac
/// alert.
pub fn is_bad_record_mac_alert(err: &std::io::Error) -> bool {
    matches!(
        tls::rustls_error(err),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadRecordMac
        ))
    )
}
