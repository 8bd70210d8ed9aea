//! The server configuration file (server.toml): parsing, defaults and validation.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::Deserialize;
use twoway_common::config_file::{self, ConfigError, ConfigErrors};
use twoway_common::identity::IdentitySource;
use twoway_common::relay::Keepalive;
use twoway_common::tls::ServerTlsFiles;
use twoway_common::tuning::Transport;

/// Where `check`, `status`, `kick` and `reload` look when no --config is given.
pub const DEFAULT_CONFIG: &str = "/etc/twoway/server.toml";

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4433))
}
fn default_policy() -> PathBuf {
    "policy.toml".into()
}
fn default_ca() -> PathBuf {
    "ca.pem".into()
}
fn default_cert() -> PathBuf {
    "server.pem".into()
}
fn default_key() -> PathBuf {
    "server.key".into()
}
fn default_crl() -> PathBuf {
    "crl.pem".into()
}
fn default_tun_name() -> String {
    "twoway0".into()
}
fn default_network() -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::new(10, 77, 0, 0), 24).expect("valid constant network")
}
fn default_pool() -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::new(10, 77, 0, 128), 25).expect("valid constant network")
}
fn default_true() -> bool {
    true
}
fn default_mtu() -> u16 {
    1400
}
/// The control socket when `[control] socket` is not set.
pub fn default_socket() -> PathBuf {
    "/run/twoway/server.sock".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/twoway".into()
}
fn default_interval() -> u32 {
    10
}
fn default_timeout() -> u32 {
    60
}
fn default_handshake_timeout() -> u32 {
    10
}
fn default_max_handshakes() -> usize {
    256
}
fn default_max_sessions() -> usize {
    1024
}
fn default_session_queue() -> usize {
    256
}
fn default_session_queue_bytes() -> usize {
    2 * 1024 * 1024
}
fn default_source_rate() -> u32 {
    20
}
fn default_source_burst() -> u32 {
    50
}
fn default_source_handshakes() -> u32 {
    32
}

/// server.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to accept TLS connections on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The policy file (identity map), reloadable.
    #[serde(default = "default_policy")]
    pub policy: PathBuf,
    /// Certificates and keys.
    #[serde(default)]
    pub tls: TlsSection,
    /// The tunnel device and its addresses.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// Where the identity comes from.
    #[serde(default)]
    pub identity: IdentitySection,
    /// The control socket.
    #[serde(default)]
    pub control: ControlSection,
    /// Persistent state (address leases).
    #[serde(default)]
    pub state: StateSection,
    /// Keepalive pushed to clients and used by the server.
    #[serde(default)]
    pub keepalive: KeepaliveSection,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Prometheus endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The etcd cluster this server is a node of (none unless `etcd` is set).
    #[serde(default)]
    pub cluster: crate::cluster::ClusterSection,
    /// Commands run when a client's session comes up and goes down.
    #[serde(default)]
    pub hooks: crate::hooks::HooksSection,
    /// When started as root without systemd: the user to switch to once the
    /// device and sockets are set up.
    #[serde(default)]
    pub user: Option<String>,
    /// The file this was read from (relative paths are resolved against it).
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificate that client certificates must chain to.
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
    /// Server certificate (chain).
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// Server private key.
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Certificate revocation list of the CA.
    #[serde(default = "default_crl")]
    pub crl: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            ca: default_ca(),
            cert: default_cert(),
            key: default_key(),
            crl: default_crl(),
        }
    }
}

/// `[tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    /// TUN interface name.
    #[serde(default = "default_tun_name")]
    pub name: String,
    /// Tunnel network; the server takes its first host address.
    #[serde(default = "default_network")]
    pub network: Ipv4Network,
    /// Dynamic addresses, inside `network`.
    #[serde(default = "default_pool")]
    pub pool: Ipv4Network,
    /// Optional IPv6 tunnel network.
    #[serde(default)]
    pub network6: Option<Ipv6Network>,
    /// Tunnel MTU, pushed to clients.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Linux TUN offload: large TCP packets cross the tunnel whole (with
    /// clients that support it) and the kernels segment them.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// Device queues, each read by its own task; 0 means one per CPU core.
    #[serde(default)]
    pub queues: usize,
    /// Nice value of the server's threads (-20..=19; 0 leaves it alone).
    #[serde(default = "twoway_common::tuning::default_nice")]
    pub nice: i32,
    /// TCP congestion control of the outside connection ("" = the system's).
    #[serde(default = "twoway_common::tuning::default_congestion")]
    pub congestion: String,
    /// `auto`: also listen for the UDP data channel on `listen`'s address
    /// and port; `tcp`: data always stays on the TLS connection.
    #[serde(default)]
    pub transport: Transport,
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self {
            transport: Transport::default(),
            name: default_tun_name(),
            network: default_network(),
            pool: default_pool(),
            network6: None,
            mtu: default_mtu(),
            offload: true,
            queues: 0,
            nice: twoway_common::tuning::default_nice(),
            congestion: twoway_common::tuning::default_congestion(),
        }
    }
}

impl TunnelSection {
    /// Device queues to open: `queues`, or one per CPU core when 0.
    pub fn queue_count(&self) -> usize {
        match self.queues {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The server's own tunnel address: the first host of the network.
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network.network()) + 1)
    }

    /// The server's own IPv6 tunnel address, if IPv6 is on.
    pub fn server_address6(&self) -> Option<Ipv6Addr> {
        self.network6
            .map(|n| Ipv6Addr::from(u128::from(n.network()) + 1))
    }
}

/// `[identity]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Certificate field that names the client.
    #[serde(default)]
    pub source: IdentitySource,
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket for status, kick and reload (0660 group `twoway` where it exists, else 0600).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: default_socket(),
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Folder for the lease file.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
        }
    }
}

/// `[keepalive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveSection {
    /// Seconds between pings.
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    /// Seconds of silence after which a peer is dead.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
}

impl Default for KeepaliveSection {
    fn default() -> Self {
        Self {
            interval_secs: default_interval(),
            timeout_secs: default_timeout(),
        }
    }
}

impl KeepaliveSection {
    /// As relay timing.
    pub fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(self.interval_secs.into()),
            timeout: Duration::from_secs(self.timeout_secs.into()),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address for `GET /metrics`, e.g. `127.0.0.1:9477`; off when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Seconds a connection may take for the TLS handshake and hello.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u32,
    /// TLS handshakes in progress at once. When all are taken, a new
    /// connection replaces the oldest one that has sent nothing yet (or has
    /// run for 2 s); only if there is none is it refused.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Sessions at once; further clients are refused as busy.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Packets queued towards one client before its packets are dropped.
    #[serde(default = "default_session_queue")]
    pub session_queue: usize,
    /// Bytes queued towards one client before its packets are dropped: a
    /// bound on the delay a bulk transfer adds to everything behind it.
    #[serde(default = "default_session_queue_bytes")]
    pub session_queue_bytes: usize,
    /// New connections per second from one source address, sustained.
    #[serde(default = "default_source_rate")]
    pub connections_per_source_per_sec: u32,
    /// New connections from one source address allowed in a burst.
    #[serde(default = "default_source_burst")]
    pub connection_burst_per_source: u32,
    /// Handshakes in progress at once from one source address.
    #[serde(default = "default_source_handshakes")]
    pub handshakes_per_source: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: default_handshake_timeout(),
            max_handshakes: default_max_handshakes(),
            max_sessions: default_max_sessions(),
            session_queue: default_session_queue(),
            session_queue_bytes: default_session_queue_bytes(),
            connections_per_source_per_sec: default_source_rate(),
            connection_burst_per_source: default_source_burst(),
            handshakes_per_source: default_source_handshakes(),
        }
    }
}

impl ServerConfig {
    /// Reads, validates and resolves a server config; every problem is reported.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let (config, problems) = Self::load_unchecked(path)?;
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(config)
    }

    /// Reads and resolves a server config that parses, together with the
    /// problems of its values, so that `check` can go on to the policy and
    /// certificate files. `Err` only if the file cannot be read or parsed.
    pub fn load_unchecked(path: &Path) -> Result<(Self, Vec<ConfigError>), ConfigErrors> {
        let mut config: ServerConfig = config_file::load(path)?;
        config.path = path.to_owned();
        let problems = config.validate();
        config.resolve_paths();
        Ok((config, problems))
    }

    /// Every problem with the values (parsing has already succeeded).
    pub fn validate(&self) -> Vec<ConfigError> {
        let p = &self.path;
        let mut errors = Vec::new();
        let t = &self.tunnel;
        if t.name.is_empty() || t.name.len() > 15 {
            errors.push(ConfigError::invalid(
                p,
                "tunnel.name",
                "must be 1 to 15 characters",
            ));
        }
        if t.network.prefix() > 30 {
            errors.push(ConfigError::invalid(
                p,
                "tunnel.network",
                "prefix must be /30 or shorter",
            ));
        }
        if t.network.ip() != t.network.network() {
            errors.push(ConfigError::invalid(
                p,
                "tunnel.network",
                format!(
                    "{} has host bits set; did you mean {}/{}?",
                    t.network,
                    t.network.network(),
                    t.network.prefix()
                ),
            ));
        }
        if !(t.network.contains(t.pool.network()) && t.network.contains(t.pool.broadcast())) {
            errors.push(ConfigError::invalid(
                p,
                "tunnel.pool",
                format!("{} is not inside tunnel.network {}", t.pool, t.network),
            ));
        }
        if let Some(n6) = t.network6 {
            if n6.prefix() > 126 {
                errors.push(ConfigError::invalid(
                    p,
                    "tunnel.network6",
                    "prefix must be /126 or shorter",
                ));
            }
            if t.mtu < 1280 {
                errors.push(ConfigError::invalid(
                    p,
                    "tunnel.mtu",
                    "IPv6 needs an MTU of at least 1280",
                ));
            }
        }
        twoway_common::tuning::check(p, t.nice, &t.congestion, &mut errors);
        if !(576..=65_000).contains(&t.mtu) {
            errors.push(ConfigError::invalid(
                p,
                "tunnel.mtu",
                "must be between 576 and 65000",
            ));
        }
        let k = &self.keepalive;
        if k.interval_secs == 0 || k.timeout_secs <= k.interval_secs {
            errors.push(ConfigError::invalid(
                p,
                "keepalive",
                "interval_secs must be at least 1 and timeout_secs larger than interval_secs",
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            (
                "limits.handshake_timeout_secs",
                l.handshake_timeout_secs as usize,
            ),
            ("limits.max_handshakes", l.max_handshakes),
            ("limits.max_sessions", l.max_sessions),
            ("limits.session_queue", l.session_queue),
            ("limits.session_queue_bytes", l.session_queue_bytes),
            (
                "limits.connections_per_source_per_sec",
                l.connections_per_source_per_sec as usize,
            ),
            (
                "limits.connection_burst_per_source",
                l.connection_burst_per_source as usize,
            ),
            (
                "limits.handshakes_per_source",
                l.handshakes_per_source as usize,
            ),
        ] {
            if value == 0 {
                errors.push(ConfigError::invalid(p, key, "must be at least 1"));
            }
        }
        self.cluster.validate(p, &mut errors);
        self.hooks.validate(p, &mut errors);
        errors
    }

    fn resolve_paths(&mut self) {
        let base = self.path.clone();
        let r = |p: &mut PathBuf| *p = config_file::resolve(&base, p);
        r(&mut self.policy);
        r(&mut self.tls.ca);
        r(&mut self.tls.cert);
        r(&mut self.tls.key);
        r(&mut self.tls.crl);
        r(&mut self.control.socket);
        r(&mut self.state.dir);
        self.cluster.resolve_paths(&base);
    }

    /// The TLS files as the TLS setup wants them.
    pub fn tls_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
            crl: self.tls.crl.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, Vec<String>> {
        let path = Path::new("/etc/twoway/server.toml");
        let mut c: ServerConfig =
            config_file::parse(path, text).map_err(|e| vec![e.to_string()])?;
        c.path = path.to_owned();
        let errors = c.validate();
        if errors.is_empty() {
            c.resolve_paths();
            Ok(c)
        } else {
            Err(errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.port(), 4433);
        assert_eq!(c.tunnel.server_address(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(c.tls.ca, Path::new("/etc/twoway/ca.pem"));
        assert_eq!(c.policy, Path::new("/etc/twoway/policy.toml"));
        assert_eq!(c.keepalive.interval_secs, 10);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[tunnel]\nnetwrok = \"10.0.0.0/24\"\n").unwrap_err();
        assert!(e[0].contains("netwrok"), "{e:?}");
        assert!(e[0].starts_with("/etc/twoway/server.toml"), "{e:?}");
    }

    #[test]
    fn bad_cidr_is_a_parse_error() {
        let e = parse("[tunnel]\nnetwork = \"10.0.0.0/33\"\n").unwrap_err();
        assert!(e[0].contains("network"), "{e:?}");
    }

    #[test]
    fn every_value_problem_is_reported_at_once() {
        let e = parse(
            "[tunnel]\nnetwork = \"10.1.0.0/24\"\npool = \"10.2.0.0/25\"\nmtu = 100\nnice = -21\n[keepalive]\ninterval_secs = 30\ntimeout_secs = 10\n",
        )
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("key `tunnel.pool`"), "{all}");
        assert!(all.contains("key `tunnel.mtu`"), "{all}");
        assert!(all.contains("key `tunnel.nice`"), "{all}");
        assert!(all.contains("key `keepalive`"), "{all}");
    }

    #[test]
    fn host_bits_in_network_are_refused() {
        let e =
            parse("[tunnel]\nnetwork = \"10.77.0.5/24\"\npool = \"10.77.0.128/25\"\n").unwrap_err();
        assert!(e[0].contains("host bits"), "{e:?}");
    }
}
