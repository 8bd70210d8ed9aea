//! The in-process fixture of the loopback tests: a PKI in a temporary folder
//! whose server.toml keeps its socket and state inside that folder and uses a
//! tunnel network in 198.18.0.0/15; and what the client's real session
//! loop runs on in them: in-memory devices and a host network that records.
//! Also [`TlsPki`] and record helpers for the in-memory TLS tests.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use twoway_client::config::ClientConfig;
use twoway_server::config::ServerConfig;
use twoway_server::server::Server;

use ipnetwork::IpNetwork;
use tokio::sync::mpsc;
use twoway_client::host::{Change, DnsMethod, HostError, HostNetwork, Refresh};
use twoway_client::tunnel::OpenDevice;
use twoway_common::inside::memory::{self, MemoryInside, MemoryPeer};
use twoway_common::inside::tun::TunSettings;
use twoway_common::message::Assignment;
use twoway_common::outside::tcp::record::secure::{self, PeerInfo, SecureStream};
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

/// alice's TLS 1.3 client config from the PKI folder `dir` (trusting its
/// ca.pem, offering twoway's ALPN) over `provider`: for tests that change
/// what rustls offers.
pub fn alice_client_with(
    dir: &Path,
    provider: rustls::crypto::CryptoProvider,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&dir.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            tls::load_certs(&dir.join("alice.pem")).unwrap(),
            tls::load_key(&dir.join("alice.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    config
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

    /// twoway's client handshake (`secure::connect`) on `ours` against
    /// rustls's buffered server (tokio-rustls) on `theirs`, the two ends of
    /// one connection, each with this PKI's config.
    pub async fn ours_client<T>(
        &self,
        ends: (T, T),
    ) -> (SecureStream<T>, tokio_rustls::server::TlsStream<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.ours_client_against(self.server.clone(), ends).await
    }

    /// [`TlsPki::ours_client`] against a server config of the test's own
    /// (tickets, secret extraction).
    pub async fn ours_client_against<T>(
        &self,
        server: Arc<rustls::ServerConfig>,
        (ours, theirs): (T, T),
    ) -> (SecureStream<T>, tokio_rustls::server::TlsStream<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let (ours, theirs) = tokio::join!(
            secure::connect(self.client.clone(), Self::server_name(), ours),
            acceptor.accept(theirs)
        );
        (ours.unwrap(), theirs.unwrap())
    }

    /// twoway's server handshake (`secure::accept`) on `ours` against
    /// rustls's buffered client on `theirs`; asserts that ours saw the ALPN
    /// and alice's leaf.
    pub async fn ours_server<T>(
        &self,
        ends: (T, T),
    ) -> (SecureStream<T>, tokio_rustls::client::TlsStream<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (ours, peer, theirs) = self.ours_server_against(self.client.clone(), ends).await;
        assert_eq!(peer.alpn.as_deref(), Some(tls::ALPN));
        assert_eq!(peer.certificates.len(), 1, "the client's leaf");
        (ours, theirs)
    }

    /// twoway's server handshake against a client config of the test's own
    /// (secret extraction), with what ours learnt of the peer, unchecked.
    pub async fn ours_server_against<T>(
        &self,
        client: Arc<rustls::ClientConfig>,
        (ours, theirs): (T, T),
    ) -> (
        SecureStream<T>,
        PeerInfo,
        tokio_rustls::client::TlsStream<T>,
    )
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = tokio_rustls::TlsConnector::from(client);
        let (ours, theirs) = tokio::join!(
            secure::accept(self.server.clone(), ours),
            connector.connect(Self::server_name(), theirs)
        );
        let (ours, peer) = ours.unwrap();
        (ours, peer, theirs.unwrap())
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

/// A server over loopback with an in-memory device, its PKI in a temporary folder.
pub struct Setup {
    /// Holds the folder.
    pub dir: tempfile::TempDir,
    /// The PKI folder (configs, certificates, policy).
    pub pki: std::path::PathBuf,
    /// The server.
    pub server: Arc<Server>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The test's end of the server's device.
    pub server_inside: MemoryPeer,
    /// Cancel to stop the server.
    pub shutdown: CancellationToken,
}

impl Setup {
    /// Puts `packet` into the server's device, as the corporate network would.
    pub async fn inject(&self, packet: &[u8]) {
        self.server_inside
            .inject
            .send(bytes::Bytes::copy_from_slice(packet))
            .await
            .expect("the server's device is open");
    }

    /// Replaces policy.toml (the server reads it at its next reload).
    pub fn write_policy(&self, policy: &str) {
        std::fs::write(self.pki.join("policy.toml"), policy).expect("write policy.toml");
    }
}

/// A client certificate and config for `identity` in `dir`.
pub fn issue(dir: &Path, identity: &str) {
    pki::issue(&pki::IssueOptions {
        dir: dir.to_owned(),
        identity: identity.into(),
        days: 30,
        out: None,
    })
    .unwrap();
}

/// A server with `policy`.
pub async fn start(policy: &str) -> Setup {
    start_with(policy, "").await
}

/// A server with `policy` and `extra` appended to its server.toml.
pub async fn start_with(policy: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = make_pki(dir.path(), extra);
    std::fs::write(pki_dir.join("policy.toml"), policy).unwrap();
    let config = ServerConfig::load(&pki_dir.join("server.toml")).unwrap();
    let server = Arc::new(Server::new(config).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (inside, server_inside) = memory::pair(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(
        server
            .clone()
            .serve(listener, Arc::new(inside), shutdown.clone()),
    );
    Setup {
        dir,
        pki: pki_dir,
        server,
        port,
        server_inside,
        shutdown,
    }
}

/// The client config of `identity`, pointed at the server.
pub fn client_config(s: &Setup, identity: &str) -> ClientConfig {
    let mut c = ClientConfig::load(&s.pki.join(format!("{identity}.toml"))).unwrap();
    c.server = format!("127.0.0.1:{}", s.port).into();
    c
}

/// The TLS configuration of a client config.
pub fn tls(c: &ClientConfig) -> Arc<rustls::ClientConfig> {
    twoway_client::credentials::load(c).unwrap().tls
}

/// One call the client's session loop made on its host network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCall {
    /// A connection from this local address is up.
    Connected(IpAddr),
    /// The connection is gone.
    Disconnected,
    /// Routes put in force on a device.
    Routes {
        /// The device.
        dev: String,
        /// The assigned address.
        address: IpNetwork,
        /// The assigned routes.
        routes: Vec<IpNetwork>,
        /// New device or update.
        change: Change,
    },
    /// DNS put in force on a device.
    Dns {
        /// The device.
        dev: String,
        /// The servers.
        dns: Vec<IpAddr>,
        /// New device or update.
        change: Change,
    },
    /// Every change undone.
    Undo,
}

/// A [`HostNetwork`] that changes nothing and reports every call on a
/// channel; the test says when the network "moved" (the client must then
/// reconnect at once).
#[derive(Debug)]
pub struct RecordingHost {
    calls: mpsc::UnboundedSender<HostCall>,
    moves: mpsc::UnboundedReceiver<String>,
    moved: Option<String>,
}

/// The test's side of a [`RecordingHost`].
#[derive(Debug)]
pub struct HostRecord {
    /// Every call, in order.
    pub calls: mpsc::UnboundedReceiver<HostCall>,
    /// A message here is a network change that moved the path to the server.
    pub moves: mpsc::UnboundedSender<String>,
}

impl RecordingHost {
    /// A recording host and the test's side of it.
    pub fn new() -> (Self, HostRecord) {
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (moves, moves_rx) = mpsc::unbounded_channel();
        (
            Self {
                calls: calls_tx,
                moves: moves_rx,
                moved: None,
            },
            HostRecord { calls, moves },
        )
    }

    fn record(&self, call: HostCall) {
        let _ = self.calls.send(call);
    }
}

impl HostNetwork for RecordingHost {
    async fn connected(&mut self, local: IpAddr) {
        self.record(HostCall::Connected(local));
    }

    fn disconnected(&mut self) {
        self.record(HostCall::Disconnected);
    }

    async fn routes(&mut self, dev: &str, a: &Assignment, change: Change) -> Result<(), HostError> {
        self.record(HostCall::Routes {
            dev: dev.to_owned(),
            address: a.address,
            routes: a.routes.clone(),
            change,
        });
        Ok(())
    }

    async fn dns(&mut self, dev: &str, a: &Assignment, change: Change) -> DnsMethod {
        self.record(HostCall::Dns {
            dev: dev.to_owned(),
            dns: a.dns.clone(),
            change,
        });
        if a.dns.is_empty() {
            DnsMethod::None
        } else {
            DnsMethod::Hook
        }
    }

    async fn watch(&mut self) {
        match self.moves.recv().await {
            Some(why) => self.moved = Some(why),
            None => std::future::pending().await,
        }
    }

    async fn refresh(&mut self) -> Refresh {
        self.moved.take().map_or(Refresh::Same, Refresh::Moved)
    }

    async fn undo(&mut self) {
        self.record(HostCall::Undo);
    }
}

/// The devices [`memory_devices`] made: their settings and the test's end.
pub type OpenedDevices = mpsc::UnboundedReceiver<(TunSettings, MemoryPeer)>;

/// An [`OpenDevice`] that makes an
/// in-memory device for each assignment and hands its peer to the test.
pub fn memory_devices() -> (impl OpenDevice<MemoryInside>, OpenedDevices) {
    let (tx, rx) = mpsc::unbounded_channel();
    let open = move |settings: &TunSettings| {
        let (inside, peer) = memory::pair(64);
        let _ = tx.send((settings.clone(), peer));
        Ok(inside)
    };
    (open, rx)
}
