//! `[cluster]` of server.toml: the etcd endpoints this node shares its
//! leases and sessions through, its name, and optional TLS to etcd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use twoway_common::config_file::{self, ConfigError};

/// `[cluster]`. With no `etcd` endpoints the server runs alone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// etcd v3 endpoints (`http://host:2379` or `https://...`).
    pub etcd: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// CA certificate (PEM) etcd's server certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) this node presents to etcd.
    pub cert: Option<PathBuf>,
    /// The key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// Seconds the node's sessions outlive it in etcd when it dies.
    pub lease_ttl_secs: u32,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            node: String::new(),
            ca: None,
            cert: None,
            key: None,
            lease_ttl_secs: 10,
        }
    }
}

impl ClusterSection {
    /// Whether this server is a node of a cluster.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// How long the node's etcd lease lives without a keep-alive.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.into())
    }

    /// Every problem with the values; `p` is the config file.
    pub fn validate(&self, p: &Path, errors: &mut Vec<ConfigError>) {
        let uses_tls = self.etcd.iter().any(|e| e.starts_with("https://"));
        let set = self.ca.is_some() || self.cert.is_some() || self.key.is_some();
        if !self.enabled() {
            if !self.node.is_empty() || set {
                errors.push(ConfigError::invalid(
                    p,
                    "cluster.etcd",
                    "[cluster] needs at least one etcd endpoint (or remove the section)",
                ));
            }
            return;
        }
        for e in &self.etcd {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                errors.push(ConfigError::invalid(
                    p,
                    "cluster.etcd",
                    format!(
                        "{e:?} is not an endpoint URL: write http://HOST:PORT or https://HOST:PORT"
                    ),
                ));
            }
        }
        if uses_tls && self.etcd.iter().any(|e| e.starts_with("http://")) {
            errors.push(ConfigError::invalid(
                p,
                "cluster.etcd",
                "mixes http:// and https:// endpoints; use one scheme for all",
            ));
        }
        if self.node.is_empty() {
            errors.push(ConfigError::invalid(
                p,
                "cluster.node",
                "required with cluster.etcd: this node's unique name",
            ));
        } else if !self
            .node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.node.len() > 63
        {
            errors.push(ConfigError::invalid(
                p,
                "cluster.node",
                "must be 1 to 63 letters, digits, '-', '_' or '.'",
            ));
        }
        if set && !uses_tls {
            errors.push(ConfigError::invalid(
                p,
                "cluster.ca",
                "TLS files are set but the etcd endpoints are http://; use https://",
            ));
        }
        if uses_tls && self.ca.is_none() {
            errors.push(ConfigError::invalid(
                p,
                "cluster.ca",
                "required with https:// endpoints: the CA of etcd's certificate",
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            errors.push(ConfigError::invalid(
                p,
                if self.cert.is_some() {
                    "cluster.key"
                } else {
                    "cluster.cert"
                },
                "cluster.cert and cluster.key go together",
            ));
        }
        if self.lease_ttl_secs < 2 || self.lease_ttl_secs > 600 {
            errors.push(ConfigError::invalid(
                p,
                "cluster.lease_ttl_secs",
                "must be between 2 and 600",
            ));
        }
    }

    /// Resolves the TLS paths against the config file `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .flatten()
        {
            *p = config_file::resolve(base, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let c: ClusterSection = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        c.validate(Path::new("/etc/twoway/server.toml"), &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn absent_or_empty_is_a_single_server() {
        assert!(!ClusterSection::default().enabled());
        assert!(problems("").is_empty());
    }

    #[test]
    fn a_plain_cluster_validates() {
        assert!(problems("etcd = [\"http://10.0.0.20:2379\"]\nnode = \"vpn-a\"").is_empty());
        assert!(problems(
            "etcd = [\"https://10.0.0.20:2379\"]\nnode = \"vpn-a\"\nca = \"etcd-ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\""
        )
        .is_empty());
    }

    #[test]
    fn each_problem_names_its_key() {
        let all = problems("node = \"vpn-a\"").join("\n");
        assert!(all.contains("key `cluster.etcd`"), "{all}");
        let all = problems("etcd = [\"10.0.0.20:2379\"]").join("\n");
        assert!(all.contains("key `cluster.etcd`"), "{all}");
        assert!(all.contains("key `cluster.node`"), "{all}");
        let all = problems(
            "etcd = [\"http://a:2379\"]\nnode = \"a/b\"\ncert = \"c.pem\"\nlease_ttl_secs = 1",
        )
        .join("\n");
        assert!(all.contains("key `cluster.node`"), "{all}");
        assert!(all.contains("key `cluster.ca`"), "{all}");
        assert!(all.contains("key `cluster.key`"), "{all}");
        assert!(all.contains("key `cluster.lease_ttl_secs`"), "{all}");
        assert!(all.starts_with("/etc/twoway/server.toml"), "{all}");
    }
}
