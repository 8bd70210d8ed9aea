//! The server configuration file (server.toml): parsing, defaults (one
//! `Default` per section, which serde fills missing keys from) and validation.

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

/// server.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to accept TLS connections on.
    pub listen: SocketAddr,
    /// The policy file (identity map), reloadable.
    pub policy: PathBuf,
    /// Certificates and keys.
    pub tls: TlsSection,
    /// The tunnel device and its addresses.
    pub tunnel: TunnelSection,
    /// Where the identity comes from.
    pub identity: IdentitySection,
    /// The control socket.
    pub control: ControlSection,
    /// Persistent state (address leases).
    pub state: StateSection,
    /// Keepalive pushed to clients and used by the server.
    pub keepalive: KeepaliveSection,
    /// Resource limits.
    pub limits: LimitsSection,
    /// Prometheus endpoint (off unless `listen` is set).
    pub metrics: MetricsSection,
    /// The etcd cluster this server is a node of (none unless `etcd` is set).
    pub cluster: crate::cluster::ClusterSection,
    /// Commands run when a client's session comes up and goes down.
    pub hooks: crate::hooks::HooksSection,
    /// When started as root without systemd: the user to switch to once the
    /// device and sockets are set up.
    pub user: Option<String>,
    /// The file this was read from (relative paths are resolved against it).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            policy: "policy.toml".into(),
            tls: TlsSection::default(),
            tunnel: TunnelSection::default(),
            identity: IdentitySection::default(),
            control: ControlSection::default(),
            state: StateSection::default(),
            keepalive: KeepaliveSection::default(),
            limits: LimitsSection::default(),
            metrics: MetricsSection::default(),
            cluster: crate::cluster::ClusterSection::default(),
            hooks: crate::hooks::HooksSection::default(),
            user: None,
            path: PathBuf::new(),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificate that client certificates must chain to.
    pub ca: PathBuf,
    /// Server certificate (chain).
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// Certificate revocation list of the CA.
    pub crl: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            ca: "ca.pem".into(),
            cert: "server.pem".into(),
            key: "server.key".into(),
            crl: "crl.pem".into(),
        }
    }
}

/// `[tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelSection {
    /// TUN interface name.
    pub name: String,
    /// Tunnel network; the server takes its first host address.
    pub network: Ipv4Network,
    /// Dynamic addresses, inside `network`.
    pub pool: Ipv4Network,
    /// Optional IPv6 tunnel network.
    pub network6: Option<Ipv6Network>,
    /// Tunnel MTU, pushed to clients.
    pub mtu: u16,
    /// Linux TUN offload: large TCP packets cross the tunnel whole (with
    /// clients that support it) and the kernels segment them.
    pub offload: bool,
    /// Device queues, each read by its own task; 0 means one per CPU core.
    pub queues: usize,
    /// Nice value of the server's threads (-20..=19; 0 leaves it alone).
    pub nice: i32,
    /// TCP congestion control of the outside connection ("" = the system's).
    pub congestion: String,
    /// `auto`: also listen for the UDP data channel on `listen`'s address
    /// and port; `tcp`: data always stays on the TLS connection.
    pub transport: Transport,
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self {
            name: "twoway0".into(),
            network: Ipv4Network::new(Ipv4Addr::new(10, 77, 0, 0), 24)
                .expect("valid constant network"),
            pool: Ipv4Network::new(Ipv4Addr::new(10, 77, 0, 128), 25)
                .expect("valid constant network"),
            network6: None,
            mtu: 1400,
            offload: true,
            queues: 0,
            nice: twoway_common::tuning::default_nice(),
            congestion: twoway_common::tuning::default_congestion(),
            transport: Transport::default(),
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
#[serde(default, deny_unknown_fields)]
pub struct IdentitySection {
    /// Certificate field that names the client.
    pub source: IdentitySource,
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket for status, kick and reload (0660 group `twoway` where it exists, else 0600).
    pub socket: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: "/run/twoway/server.sock".into(),
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSection {
    /// Folder for the lease file.
    pub dir: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            dir: "/var/lib/twoway".into(),
        }
    }
}

/// `[keepalive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepaliveSection {
    /// Seconds between pings.
    pub interval_secs: u32,
    /// Seconds of silence after which a peer is dead.
    pub timeout_secs: u32,
}

impl Default for KeepaliveSection {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            timeout_secs: 60,
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
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address for `GET /metrics`, e.g. `127.0.0.1:9477`; off when absent.
    pub listen: Option<SocketAddr>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Seconds a connection may take for the TLS handshake and hello.
    pub handshake_timeout_secs: u32,
    /// TLS handshakes in progress at once. When all are taken, a new
    /// connection replaces the oldest one that has sent nothing yet (or has
    /// run for 2 s); only if there is none is it refused.
    pub max_handshakes: usize,
    /// Sessions at once; further clients are refused as busy.
    pub max_sessions: usize,
    /// Packets queued towards one client before its packets are dropped.
    pub session_queue: usize,
    /// Bytes queued towards one client before its packets are dropped: a
    /// bound on the delay a bulk transfer adds to everything behind it.
    pub session_queue_bytes: usize,
    /// New connections per second from one source address, sustained.
    pub connections_per_source_per_sec: u32,
    /// New connections from one source address allowed in a burst.
    pub connection_burst_per_source: u32,
    /// Handshakes in progress at once from one source address.
    pub handshakes_per_source: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 10,
            max_handshakes: 256,
            max_sessions: 1024,
            session_queue: 256,
            session_queue_bytes: 2 * 1024 * 1024,
            connections_per_source_per_sec: 20,
            connection_burst_per_source: 50,
            handshakes_per_source: 32,
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
    fn a_section_with_some_keys_keeps_the_defaults_of_the_others() {
        let c = parse("[tunnel]\nname = \"tw1\"\n[limits]\nmax_sessions = 5\n").unwrap();
        assert_eq!(c.tunnel.name, "tw1");
        assert_eq!((c.tunnel.mtu, c.tunnel.offload), (1400, true));
        assert_eq!(c.tunnel.pool, TunnelSection::default().pool);
        assert_eq!(c.limits.max_sessions, 5);
        assert_eq!(c.limits.max_handshakes, 256);
        assert_eq!(c.control.socket, Path::new("/run/twoway/server.sock"));
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
