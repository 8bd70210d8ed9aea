//! The client configuration file (IDENTITY.toml, as `pki issue` writes it).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use twoway_common::config_file::{self, ConfigError, ConfigErrors};
use twoway_common::pem_source::{PemSource, SecretPem};
use zeroize::Zeroizing;

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
    /// Server address, `host:port`, or a list of them (cluster nodes).
    pub server: crate::servers::Servers,
    /// Whether the list is tried in order or from a random entry on.
    #[serde(default)]
    pub server_order: crate::servers::ServerOrder,
    /// Name the server certificate must carry.
    pub server_name: String,
    /// Seconds to wait for the TCP connection, TLS handshake and assignment.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u32,
    /// `auto`: data uses the UDP channel when it gets through; `tcp`: never.
    #[serde(default)]
    pub transport: twoway_common::tuning::Transport,
    /// Certificates and key (an absent section is refused by validation,
    /// which names the keys it wants).
    #[serde(default)]
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
    /// Permission bits of that file when it was read (a profile holding
    /// `tls.key_pem` must be 0600).
    #[serde(skip)]
    pub file_mode: u32,
}

/// `[tls]`: the CA, the certificate and the key, each either a file
/// (`ca`, `cert`, `key`) or its PEM text inside this file (`ca_pem`,
/// `cert_pem`, `key_pem`: a one-file profile, as `pki issue --inline`
/// writes it). Exactly one of each pair.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that the server certificate must chain to (a PEM file).
    pub ca: Option<PathBuf>,
    /// The same, as PEM text.
    pub ca_pem: Option<String>,
    /// Client certificate (a PEM file).
    pub cert: Option<PathBuf>,
    /// The same, as PEM text.
    pub cert_pem: Option<String>,
    /// Client private key (a PEM file, mode 0600 or 0640).
    pub key: Option<PathBuf>,
    /// The same, as PEM text; the profile file must then be 0600.
    pub key_pem: Option<SecretPem>,
}

impl TlsSection {
    /// The three `(file key, text key, has file, has text)` pairs.
    fn pairs(&self) -> [(&'static str, &'static str, bool, bool); 3] {
        [
            ("ca", "ca_pem", self.ca.is_some(), self.ca_pem.is_some()),
            (
                "cert",
                "cert_pem",
                self.cert.is_some(),
                self.cert_pem.is_some(),
            ),
            ("key", "key_pem", self.key.is_some(), self.key_pem.is_some()),
        ]
    }
}

/// `[tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    /// Interface name; default `tw-` and the config file's name.
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
    pub up: Option<String>,
    /// Run before the tunnel goes down.
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
        let (text, file_mode) = read_with_mode(path)?;
        let mut c: ClientConfig = config_file::parse(path, &text)?;
        c.path = path.to_owned();
        c.file_mode = file_mode;
        if c.control.socket.as_os_str().is_empty() {
            c.control.socket = default_socket(path);
        }
        let problems = c.validate();
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let base = c.path.clone();
        for p in [
            c.tls.ca.as_mut(),
            c.tls.cert.as_mut(),
            c.tls.key.as_mut(),
            Some(&mut c.control.socket),
            Some(&mut c.dns.resolv_conf),
        ]
        .into_iter()
        .flatten()
        {
            *p = config_file::resolve(&base, p);
        }
        Ok(c)
    }

    /// Where the CA, the certificate and the key are read from.
    pub fn tls_sources(&self) -> [PemSource; 3] {
        let t = &self.tls;
        let text = |key, pem: &Option<String>| {
            pem.as_ref().map(|pem| PemSource::Inline {
                file: self.path.clone(),
                key,
                pem: SecretPem::new(pem.clone()),
            })
        };
        let file = |p: &Option<PathBuf>| PemSource::File(p.clone().unwrap_or_default());
        [
            text("tls.ca_pem", &t.ca_pem).unwrap_or_else(|| file(&t.ca)),
            text("tls.cert_pem", &t.cert_pem).unwrap_or_else(|| file(&t.cert)),
            match &t.key_pem {
                Some(pem) => PemSource::Inline {
                    file: self.path.clone(),
                    key: "tls.key_pem",
                    pem: pem.clone(),
                },
                None => file(&t.key),
            },
        ]
    }

    /// Every problem with the values (parsing has already succeeded).
    pub fn validate(&self) -> Vec<ConfigError> {
        let p = &self.path;
        let mut errors = Vec::new();
        if self.server.all().is_empty() {
            errors.push(ConfigError::invalid(p, "server", "the list is empty"));
        }
        for entry in self.server.all() {
            if split_host_port(entry).is_none() {
                errors.push(ConfigError::invalid(
                    p,
                    "server",
                    format!("{entry:?} is not host:port"),
                ));
            }
        }
        if twoway_common::tls::server_name(&self.server_name).is_err() {
            errors.push(ConfigError::invalid(
                p,
                "server_name",
                "not a valid DNS name or IP address",
            ));
        }
        self.validate_tls(&mut errors);
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

    /// Exactly one of each `[tls]` pair, and PEM text that holds what it should.
    fn validate_tls(&self, errors: &mut Vec<ConfigError>) {
        let p = &self.path;
        for (file, text, has_file, has_text) in self.tls.pairs() {
            match (has_file, has_text) {
                (true, true) => errors.push(ConfigError::invalid(
                    p,
                    format!("tls.{text}"),
                    format!("give either `tls.{file}` (a file) or `tls.{text}` (the PEM text), not both"),
                )),
                (false, false) => errors.push(ConfigError::invalid(
                    p,
                    format!("tls.{file}"),
                    format!("missing: give `tls.{file}` (a file) or `tls.{text}` (the PEM text)"),
                )),
                _ => {}
            }
        }
        let [ca, cert, key] = self.tls_sources();
        let bad = |e: twoway_common::pem_source::PemError| match e {
            twoway_common::pem_source::PemError::Inline {
                key, what, source, ..
            } => Some(ConfigError::invalid(p, key, format!("{what}: {source}"))),
            _ => None,
        };
        for source in [&ca, &cert].into_iter().filter(|s| s.path().is_none()) {
            errors.extend(source.certs().err().and_then(bad));
        }
        if key.path().is_none() {
            errors.extend(key.private_key().err().and_then(bad));
        }
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

/// The text of the config file and its permission bits, both from the one
/// file opened (no window in which it could be swapped between the two).
fn read_with_mode(path: &Path) -> Result<(Zeroizing<String>, u32), ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    // A profile may hold a private key: wipe the text once parsed.
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(read_err)?;
    Ok((text, mode))
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
#[path = "config_profile_tests.rs"]
mod profile_tests;

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<ClientConfig, String> {
        let path = Path::new("/etc/twoway/alice.toml");
        config_file::parse_and_validate(path, text, |c: &mut ClientConfig| {
            c.path = path.to_owned();
            c.validate()
        })
    }

    pub(super) const GOOD: &str = r#"
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
