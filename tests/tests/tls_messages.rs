//! Messages a user can act on when TLS refuses (issue 13), through the real
//! client connect and a real server over loopback, no root needed: a client
//! trusting another CA is told which CA file and which issuer; a client
//! whose certificate comes from another CA is told the server refused it,
//! and the server logs the issuer it saw; a wrong `server_name` is told
//! which names the certificate has. None of them shows rustls's bare
//! `BadSignature`, `DecryptError` or `DnsName(...)`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use twoway_client::config::ClientConfig;
use twoway_client::connect::connect;
use twoway_client::error::EXIT_AUTH;
use twoway_server::config::ServerConfig;
use twoway_server::pki;
use twoway_server::server::Server;
use twoway_tests::loopback::issue;

/// Log lines written while a test runs (the test's runtime is single-threaded,
/// so the server's tasks log into the subscriber set for this thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The log once it holds `needle` (the server handles the client's
    /// alert after the client has returned), or as it is after 5 s.
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.text().contains(needle) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.text()
    }
}

struct Setup {
    dir: tempfile::TempDir,
    pki: PathBuf,
    port: u16,
    shutdown: CancellationToken,
    log: Captured,
    _device: twoway_common::inside::memory::MemoryPeer,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A real server on 127.0.0.1 (CA "twoway CA vpn.test", certificate for
/// vpn.test and 127.0.0.1), alice issued by its CA.
async fn start() -> Setup {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = twoway_tests::loopback::make_pki(dir.path(), "");
    std::fs::write(pki_dir.join("policy.toml"), "").unwrap();
    issue(&pki_dir, "alice");
    let config = ServerConfig::load(&pki_dir.join("server.toml")).unwrap();
    let server = Arc::new(Server::new(config).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (inside, device) = twoway_common::inside::memory::pair(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(server.serve(listener, Arc::new(inside), shutdown.clone()));
    Setup {
        dir,
        pki: pki_dir,
        port,
        shutdown,
        log,
        _device: device,
        _log_guard: guard,
    }
}

/// Another CA, made by `pki init --name NAME` in its own folder, with mallory.
fn other_pki(s: &Setup, folder: &str, name: &str) -> PathBuf {
    let dir = s.dir.path().join(folder);
    pki::init(&pki::InitOptions {
        dir: dir.clone(),
        name: name.into(),
        ips: vec![],
        port: 4433,
        days: 30,
    })
    .unwrap();
    issue(&dir, "mallory");
    dir
}

fn config(s: &Setup, pki_dir: &Path, identity: &str) -> ClientConfig {
    let mut c = ClientConfig::load(&pki_dir.join(format!("{identity}.toml"))).unwrap();
    c.server = format!("127.0.0.1:{}", s.port).into();
    c
}

/// alice's config, trusting the CA of the PKI in `other` instead of the server's.
fn alice_trusting(s: &Setup, other: &Path) -> ClientConfig {
    let mut c = config(s, &s.pki, "alice");
    c.tls.ca = Some(other.join("ca.pem"));
    c
}

async fn refusal(c: &ClientConfig) -> String {
    let tls = twoway_client::credentials::load(c).unwrap().tls;
    let err = connect(c, tls).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_AUTH, "{err:?}");
    assert_eq!(err.exit_code(), 3, "{err}");
    let text = err.to_string();
    for bare in ["BadSignature", "UnknownIssuer", "DnsName(", "IpAddress("] {
        assert!(!text.contains(bare), "{bare} in: {text}");
    }
    text
}

#[tokio::test]
async fn a_client_trusting_another_ca_of_the_same_name_is_told_which() {
    let s = start().await;
    let other = other_pki(&s, "other", "vpn.test");
    let text = refusal(&alice_trusting(&s, &other)).await;
    let ca = other.join("ca.pem").display().to_string();
    assert!(
        text.contains(&format!(
            r#"the server's certificate ("CN=vpn.test") is not signed by the CA in {ca} ("CN=twoway CA vpn.test"): its issuer is "CN=twoway CA vpn.test", a different CA of the same name"#
        )) && text.contains("key `tls.ca` in "),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_trusting_an_unrelated_ca_is_told_the_issuer() {
    let s = start().await;
    let other = other_pki(&s, "unrelated", "other.example");
    let text = refusal(&alice_trusting(&s, &other)).await;
    assert!(
        text.contains(r#"("CN=twoway CA other.example"): its issuer is "CN=twoway CA vpn.test""#)
            && !text.contains("same name"),
        "{text}"
    );
}

#[tokio::test]
async fn a_wrong_server_name_is_told_the_names_of_the_certificate() {
    let s = start().await;
    let mut c = config(&s, &s.pki, "alice");
    c.server_name = "vpn.example.com".into();
    let text = refusal(&c).await;
    assert!(
        text.contains(
            "the server's certificate is for vpn.test, 127.0.0.1, not for vpn.example.com"
        ) && text.contains("key `server_name` in "),
        "{text}"
    );
    // The server's log says the client refused the server's certificate.
    let needle = "the client refused this server's certificate";
    let log = s.log.wait_for(needle).await;
    assert!(log.contains(needle), "server log:\n{log}");
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused_in_words_on_both_sides() {
    let s = start().await;
    let other = other_pki(&s, "other", "vpn.test");
    let mut c = config(&s, &other, "mallory");
    c.tls.ca = Some(s.pki.join("ca.pem"));
    let text = refusal(&c).await;
    let cert = other.join("mallory.pem").display().to_string();
    assert!(
        text.contains(&format!(
            r#"the server refused our certificate ({cert}, issued by "CN=twoway CA vpn.test"): it is likely signed by another CA than the one the server trusts"#
        )),
        "{text}"
    );
    let ca = s.pki.join("ca.pem").display().to_string();
    let needle = format!(
        r#"client certificate refused: the client's certificate ("CN=mallory") is not signed by the CA in {ca} ("CN=twoway CA vpn.test"): its issuer is "CN=twoway CA vpn.test", a different CA of the same name"#
    );
    let log = s.log.wait_for(&needle).await;
    assert!(log.contains(&needle), "server log:\n{log}");
    // The same server still serves its own clients.
    let c = config(&s, &s.pki, "alice");
    let tls = twoway_client::credentials::load(&c).unwrap().tls;
    connect(&c, tls).await.expect("alice connects");
}
