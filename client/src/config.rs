//! The client configuration file (IDENTITY.toml, as `pki issue` writes it).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use twoway_common::config_file::{self, ConfigError, ConfigErrors};

/// Where `down` and `status` look when neither NAME nor --config is given.
pub const DEFAULT_CONFIG: &str = "/etc/twoway/client.toml";
/// Where `up NAME` finds NAME.toml, and where `list` looks for configs.
pub const CONFIG_DIR: &str = "/etc/twoway";
/// The runtime folder: default control sockets (NAME.sock) and detached logs.
pub const RUN_DIR: &str = "/run/twoway";

fn default_connect_timeout() -> u32 {
    10
}

/// IDENTITY.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Server address, `host:port`.
    pub server: String,
    /// Name the server certificate must carry.
    pub server_name: String,
    /// Seconds to wait for the TCP connection, TLS handshake and assignment.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u32,
    /// `auto`: data uses the UDP channel when it gets through; `tcp`: never.
    #[serde(default)]
    pub transport: twoway_common::tuning::Transport,
    /// Certificates and key.
    pub tls: TlsSection,
    /// The local TUN device.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// The control socket for `status` and `down`.
    #[serde(default)]
    pub control: ControlSection,
    /// Commands run after the tunnel is up and before it goes down.
    #[serde(default)]
    pub hooks: HooksSection,
    /// How pushed DNS servers and search domains are applied.
    #[serde(default)]
    pub dns: DnsSection,
    /// The file this was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that the server certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client private key.
    pub key: PathBuf,
}

/// `[tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    /// Interface name; default `tw-` and the config file's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Linux TUN offload (GSO/GRO), used when the server supports it too.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// In a full tunnel, keep the directly connected subnets of the outer
    /// interface reachable outside the tunnel (printers, NAS). Default false:
    /// they go through the tunnel too, only the gateway stays local.
    #[serde(default = "default_allow_lan")]
    pub allow_lan: bool,
    /// Nice value of the client's threads while up (-20..=19; 0 leaves it alone).
    #[serde(default = "twoway_common::tuning::default_nice")]
    pub nice: i32,
    /// TCP congestion control of the outside connection ("" = the system's).
    #[serde(default = "twoway_common::tuning::default_congestion")]
    pub congestion: String,
}

fn default_allow_lan() -> bool {
    false
}

impl Default for TunnelSection {
    fn default() -> Self {
        Self {
            name: None,
            offload: true,
            allow_lan: default_allow_lan(),
            nice: twoway_common::tuning::default_nice(),
            congestion: twoway_common::tuning::default_congestion(),
        }
    }
}

fn default_resolv_conf() -> PathBuf {
    "/etc/resolv.conf".into()
}

/// `[dns]`: where pushed DNS goes. systemd-resolved when it runs and
/// `resolved` is on; else `resolv_conf` when `manage_resolv_conf` is on
/// (restored on down); else the up hook gets it in `TWOWAY_DNS`/`TWOWAY_SEARCH`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Use systemd-resolved (per-link DNS) when it is running.
    #[serde(default = "default_true")]
    pub resolved: bool,
    /// Without systemd-resolved, replace `resolv_conf` while the tunnel is up.
    #[serde(default)]
    pub manage_resolv_conf: bool,
    /// The resolv.conf to manage.
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            resolved: true,
            manage_resolv_conf: false,
            resolv_conf: default_resolv_conf(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// `[hooks]`: shell commands; the assignment is in `TWOWAY_*` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// Run after the tunnel is up (and after each reconfiguration).
    #[serde(default)]
    pub up: Option<String>,
    /// Run before the tunnel goes down.
    #[serde(default)]
    pub down: Option<String>,
}

/// `[control]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket path (0660 group `twoway` where it exists, else 0600); default RUN_DIR/NAME.sock, NAME being
    /// the config file's name without `.toml`, so each config has its own.
    #[serde(default)]
    pub socket: PathBuf,
}

impl ClientConfig {
    /// Reads, validates and resolves a client config.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let mut c: ClientConfig = config_file::load(path)?;
        c.path = path.to_owned();
        if c.control.socket.as_os_str().is_empty() {
            c.control.socket = default_socket(path);
        }
        let problems = c.validate();
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let base = c.path.clone();
        for p in [
            &mut c.tls.ca,
            &mut c.tls.cert,
            &mut c.tls.key,
            &mut c.control.socket,
            &mut c.dns.resolv_conf,
        ] {
            *p = config_file::resolve(&base, p);
        }
        Ok(c)
    }

    /// Every problem with the values (parsing has already succeeded).
    pub fn validate(&self) -> Vec<ConfigError> {
        let p = &self.path;
        let mut errors = Vec::new();
        if split_host_port(&self.server).is_none() {
            errors.push(ConfigError::invalid(
                p,
                "server",
                format!("{:?} is not host:port", self.server),
            ));
        }
        if twoway_common::tls::server_name(&self.server_name).is_err() {
            errors.push(ConfigError::invalid(
                p,
                "server_name",
                "not a valid DNS name or IP address",
            ));
        }
        twoway_common::tuning::check(p, self.tunnel.nice, &self.tunnel.congestion, &mut errors);
        if self.connect_timeout_secs == 0 {
            errors.push(ConfigError::invalid(
                p,
                "connect_timeout_secs",
                "must be at least 1",
            ));
        }
        if let Some(name) = &self.tunnel.name {
            if name.is_empty() || name.len() > 15 {
                errors.push(ConfigError::invalid(
                    p,
                    "tunnel.name",
                    "must be 1 to 15 characters",
                ));
            }
        }
        errors
    }

    /// The TUN interface name.
    pub fn device_name(&self) -> String {
        if let Some(n) = &self.tunnel.name {
            return n.clone();
        }
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let clean: String = stem
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let mut name = format!("tw-{clean}");
        name.truncate(15);
        name
    }
}

/// RUN_DIR/NAME.sock for the config file NAME.toml.
pub fn default_socket(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "client".into());
    Path::new(RUN_DIR).join(format!("{stem}.sock"))
}

/// The config a command means: `--config PATH`; else NAME, which is a path
/// when it contains a `/` or ends in `.toml` and CONFIG_DIR/NAME.toml
/// otherwise (as `wg-quick up wg0`); else DEFAULT_CONFIG.
pub fn config_path(name: Option<&str>, config: Option<&Path>) -> PathBuf {
    match (config, name) {
        (Some(path), _) => path.to_owned(),
        (None, Some(n)) if n.contains('/') || n.ends_with(".toml") => PathBuf::from(n),
        (None, Some(n)) => Path::new(CONFIG_DIR).join(format!("{n}.toml")),
        (None, None) => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6).
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientConfig, String> {
        let path = Path::new("/etc/twoway/alice.toml");
        let mut c: ClientConfig = config_file::parse(path, text).map_err(|e| e.to_string())?;
        c.path = path.to_owned();
        let e = c.validate();
        if e.is_empty() {
            Ok(c)
        } else {
            Err(e
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }

    const GOOD: &str = r#"
server = "vpn.example.com:4433"
server_name = "vpn.example.com"
[tls]
ca = "ca.pem"
cert = "alice.pem"
key = "alice.key"
[control]
socket = "/run/twoway/alice.sock"
"#;

    #[test]
    fn congestion_must_be_a_name() {
        let e = parse(&format!("{GOOD}[tunnel]\ncongestion = \"cu bic\"\n")).unwrap_err();
        assert!(e.contains("tunnel.congestion"), "{e}");
        let c = parse(&format!("{GOOD}[tunnel]\ncongestion = \"\"\n")).unwrap();
        assert_eq!(c.tunnel.congestion, "");
        assert_eq!(parse(GOOD).unwrap().tunnel.congestion, "auto");
    }

    #[test]
    fn nice_outside_its_range_names_the_key() {
        let e = parse(&format!("{GOOD}[tunnel]\nnice = 20\n")).unwrap_err();
        assert!(e.contains("tunnel.nice") && e.contains("alice.toml"), "{e}");
        assert_eq!(
            parse(&format!("{GOOD}[tunnel]\nnice = 0\n"))
                .unwrap()
                .tunnel
                .nice,
            0
        );
    }

    #[test]
    fn design_example_parses_and_names_the_device() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.device_name(), "tw-alice");
        assert_eq!(c.connect_timeout_secs, 10);
        assert!(!c.tunnel.allow_lan);
        assert_eq!(c.tunnel.nice, twoway_common::priority::DEFAULT_NICE);
        assert!(c.dns.resolved && !c.dns.manage_resolv_conf);
        assert_eq!(c.dns.resolv_conf, Path::new("/etc/resolv.conf"));
    }

    #[test]
    fn network_options_parse() {
        let c = parse(&format!(
            "{GOOD}[tunnel]\nallow_lan = true\n[dns]\nresolved = false\nmanage_resolv_conf = true\nresolv_conf = \"/tmp/r.conf\"\n"
        ))
        .unwrap();
        assert!(c.tunnel.allow_lan);
        assert!(!c.dns.resolved && c.dns.manage_resolv_conf);
        let e = parse(&format!("{GOOD}[dns]\nmanage = true\n")).unwrap_err();
        assert!(e.contains("manage"), "{e}");
    }

    #[test]
    fn bad_values_name_their_keys() {
        let e = parse(&GOOD.replace("vpn.example.com:4433", "vpn.example.com")).unwrap_err();
        assert!(e.contains("key `server`"), "{e}");
        let e = parse(&GOOD.replace("[control]", "[control]\nsockett = 1")).unwrap_err();
        assert!(e.contains("sockett"), "{e}");
    }

    #[test]
    fn names_and_paths_of_configs() {
        let p = |n: Option<&str>, c: Option<&str>| config_path(n, c.map(Path::new));
        assert_eq!(p(Some("alice"), None), Path::new("/etc/twoway/alice.toml"));
        assert_eq!(p(Some("alice.toml"), None), Path::new("alice.toml"));
        assert_eq!(p(Some("./alice"), None), Path::new("./alice"));
        assert_eq!(p(Some("/tmp/a.toml"), None), Path::new("/tmp/a.toml"));
        assert_eq!(p(None, Some("/x/b.toml")), Path::new("/x/b.toml"));
        assert_eq!(p(None, None), Path::new(DEFAULT_CONFIG));
        assert_eq!(
            default_socket(Path::new("/etc/twoway/bob.toml")),
            Path::new("/run/twoway/bob.sock")
        );
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("198.18.1.2:4433"),
            Some(("198.18.1.2", 4433))
        );
        assert_eq!(split_host_port("[fd00::1]:443"), Some(("fd00::1", 443)));
        assert_eq!(split_host_port("host:99999"), None);
        assert_eq!(split_host_port(":4433"), None);
    }
}
