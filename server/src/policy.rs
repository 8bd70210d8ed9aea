//! The policy (policy.toml): which identity gets which static address,
//! routes and DNS. Parsing and validation are pure; `grant` answers one identity.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use twoway_common::config_file::{self, ConfigError, ConfigErrors};

use crate::config::TunnelSection;

fn default_true() -> bool {
    true
}

/// policy.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether clients may reach each other's tunnel addresses (default: no).
    #[serde(default)]
    pub client_to_client: bool,
    /// Whether identities without a `[[client]]` entry may connect (default: yes).
    #[serde(default = "default_true")]
    pub allow_unlisted: bool,
    /// What happens when an identity that is connected connects again.
    #[serde(default)]
    pub duplicate: Duplicate,
    /// With `duplicate = "allow"`: sessions one identity may hold at once.
    #[serde(default = "default_max_per_identity")]
    pub max_per_identity: usize,
    /// What every client gets.
    #[serde(default)]
    pub defaults: Access,
    /// Named groups of access.
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
    /// Per-identity entries.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientEntry>,
}

fn default_max_per_identity() -> usize {
    2
}

/// Handling of a second connection by a connected identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Duplicate {
    /// The new session replaces the old one, whose client is told not to
    /// reconnect (no kick loop between two devices sharing a certificate).
    #[default]
    Replace,
    /// The new session is refused while the old one lives.
    Refuse,
    /// Up to `max_per_identity` sessions; the extra ones get pool addresses.
    Allow,
}

/// Routes, DNS and search domains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Access {
    /// Networks routed into the tunnel.
    pub routes: Vec<IpNetwork>,
    /// DNS resolvers.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
}

/// `[[group]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name referenced by clients.
    pub name: String,
    /// Networks (in addition to the defaults) routed into the tunnel.
    #[serde(default)]
    pub routes: Vec<IpNetwork>,
    /// DNS resolvers.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

/// `[[client]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Identity as read from the certificate.
    pub identity: String,
    /// Static IPv4 address inside the tunnel network.
    pub address: Option<Ipv4Addr>,
    /// Static IPv6 address inside network6.
    pub address6: Option<Ipv6Addr>,
    /// Groups the client belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Networks (in addition to defaults and groups) routed into the tunnel.
    #[serde(default)]
    pub routes: Vec<IpNetwork>,
    /// DNS resolvers.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

impl Group {
    /// The group's routes, DNS and search domains.
    pub fn access(&self) -> Access {
        Access {
            routes: self.routes.clone(),
            dns: self.dns.clone(),
            search: self.search.clone(),
        }
    }
}

impl ClientEntry {
    /// The client's own routes, DNS and search domains.
    pub fn access(&self) -> Access {
        Access {
            routes: self.routes.clone(),
            dns: self.dns.clone(),
            search: self.search.clone(),
        }
    }
}

/// What policy grants one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Static IPv4 address, or `None` for one from the pool.
    pub address: Option<Ipv4Addr>,
    /// Static IPv6 address.
    pub address6: Option<Ipv6Addr>,
    /// Union of default, group and client routes.
    pub access: Access,
    /// Whether the client may reach other clients.
    pub client_to_client: bool,
}

impl Grant {
    /// Makes this the grant of an extra device of the identity (`duplicate =
    /// "allow"`): the static addresses stay with its first device, and this
    /// one gets pool addresses of its own.
    pub fn for_extra_device(&mut self) {
        (self.address, self.address6) = (None, None);
    }
}

impl Policy {
    /// Reads and validates a policy file against the tunnel addressing.
    pub fn load(path: &Path, tunnel: &TunnelSection) -> Result<Self, ConfigErrors> {
        let policy: Policy = config_file::load(path)?;
        let problems = policy.validate(path, tunnel);
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Every problem: static addresses outside the network, on the server's
    /// own address or duplicated, unknown groups, routes with host bits.
    pub fn validate(&self, path: &Path, tunnel: &TunnelSection) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let net = tunnel.network;
        let mut access_ok = |key: String, access: &Access| {
            for r in &access.routes {
                if r.ip() != r.network() {
                    errors.push(ConfigError::invalid(
                        path,
                        format!("{key}.routes"),
                        format!(
                            "route {r} has host bits set; use {}/{}",
                            r.network(),
                            r.prefix()
                        ),
                    ));
                }
            }
            for d in &access.search {
                if !twoway_common::message::valid_search_domain(d) {
                    errors.push(ConfigError::invalid(
                        path,
                        format!("{key}.search"),
                        format!(
                            "{d:?} is not a domain name (letters, digits, `-`, `_` and dots; `~` in front for a routing-only domain)"
                        ),
                    ));
                }
            }
        };
        access_ok("defaults".into(), &self.defaults);
        for (i, g) in self.groups.iter().enumerate() {
            access_ok(format!("group[{i}]"), &g.access());
        }
        for (i, c) in self.clients.iter().enumerate() {
            access_ok(format!("client[{i}]"), &c.access());
        }
        // Read only under "allow", but 0 is never meant: refused in any mode.
        if self.max_per_identity < 1 {
            errors.push(ConfigError::invalid(
                path,
                "max_per_identity",
                "must be at least 1",
            ));
        }
        let mut group_names = BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if !group_names.insert(g.name.as_str()) {
                errors.push(ConfigError::invalid(
                    path,
                    format!("group[{i}].name"),
                    format!("group {:?} is defined twice", g.name),
                ));
            }
        }
        let mut identities = BTreeSet::new();
        let mut addresses: HashMap<IpAddr, &str> = HashMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = |k: &str| format!("client[{i}].{k}");
            if !identities.insert(c.identity.as_str()) {
                errors.push(ConfigError::invalid(
                    path,
                    key("identity"),
                    format!("identity {:?} has two entries", c.identity),
                ));
            }
            for g in &c.groups {
                if !group_names.contains(g.as_str()) {
                    errors.push(ConfigError::invalid(
                        path,
                        key("groups"),
                        format!("unknown group {g:?}"),
                    ));
                }
            }
            if let Some(a) = c.address {
                if !net.contains(a) || a == net.network() || a == net.broadcast() {
                    errors.push(ConfigError::invalid(
                        path,
                        key("address"),
                        format!("{a} is not a host address of the tunnel network {net}"),
                    ));
                } else if a == tunnel.server_address() {
                    errors.push(ConfigError::invalid(
                        path,
                        key("address"),
                        format!("{a} is the server's own tunnel address"),
                    ));
                }
            }
            if let Some(a6) = c.address6 {
                match (tunnel.network6, tunnel.server_address6()) {
                    (Some(n6), Some(s6)) if n6.contains(a6) && a6 != s6 && a6 != n6.network() => {}
                    (Some(n6), _) => errors.push(ConfigError::invalid(
                        path,
                        key("address6"),
                        format!("{a6} is not a client address in network6 {n6}"),
                    )),
                    (None, _) => errors.push(ConfigError::invalid(
                        path,
                        key("address6"),
                        "the server has no tunnel.network6",
                    )),
                }
            }
            for a in c
                .address
                .map(IpAddr::V4)
                .into_iter()
                .chain(c.address6.map(IpAddr::V6))
            {
                if let Some(other) = addresses.insert(a, &c.identity) {
                    errors.push(ConfigError::invalid(
                        path,
                        key("address"),
                        format!("{a} is also given to {other:?}"),
                    ));
                }
            }
        }
        errors
    }

    /// Static IPv4 addresses, which the pool must never hand out.
    pub fn static_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.clients.iter().filter_map(|c| c.address)
    }

    /// Whether `a` is some identity's static address (IPv4 or IPv6).
    pub fn is_static(&self, a: IpAddr) -> bool {
        self.clients.iter().any(|c| match a {
            IpAddr::V4(v4) => c.address == Some(v4),
            IpAddr::V6(v6) => c.address6 == Some(v6),
        })
    }

    /// What `identity` gets, or `None` if it may not connect.
    pub fn grant(&self, identity: &str) -> Option<Grant> {
        let entry = self.clients.iter().find(|c| c.identity == identity);
        if entry.is_none() && !self.allow_unlisted {
            return None;
        }
        let mut access = self.defaults.clone();
        if let Some(c) = entry {
            for g in self.groups.iter().filter(|g| c.groups.contains(&g.name)) {
                merge(&mut access, &g.access());
            }
            merge(&mut access, &c.access());
        }
        Some(Grant {
            address: entry.and_then(|c| c.address),
            address6: entry.and_then(|c| c.address6),
            access,
            client_to_client: self.client_to_client,
        })
    }
}

fn merge(into: &mut Access, from: &Access) {
    fn union<T: PartialEq + Clone>(into: &mut Vec<T>, from: &[T]) {
        for x in from {
            if !into.contains(x) {
                into.push(x.clone());
            }
        }
    }
    union(&mut into.routes, &from.routes);
    union(&mut into.dns, &from.dns);
    union(&mut into.search, &from.search);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> TunnelSection {
        TunnelSection::default()
    }

    fn check(text: &str) -> Result<Policy, String> {
        let path = Path::new("/etc/twoway/policy.toml");
        config_file::parse_and_validate(path, text, |p: &mut Policy| p.validate(path, &tunnel()))
    }

    /// Asserts that `text` is refused with every one of `says` in the error.
    fn refused(text: &str, says: &[&str]) {
        let e = check(text).unwrap_err();
        for s in says {
            assert!(e.contains(s), "{s:?} not in: {e}");
        }
    }

    const EXAMPLE: &str = r#"
[defaults]
routes = ["10.99.0.0/24"]
dns = ["10.99.0.53"]

[[group]]
name = "eng"
routes = ["10.100.0.0/16"]

[[client]]
identity = "alice"
address = "10.77.0.10"
groups = ["eng"]
"#;

    #[test]
    fn design_example_grants_union_of_defaults_and_groups() {
        let p = check(EXAMPLE).unwrap();
        let g = p.grant("alice").unwrap();
        assert_eq!(g.address, Some("10.77.0.10".parse().unwrap()));
        let routes: Vec<String> = g.access.routes.iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["10.99.0.0/24", "10.100.0.0/16"]);
        assert_eq!(g.access.dns, ["10.99.0.53".parse::<IpAddr>().unwrap()]);
        assert!(!g.client_to_client);
        let bob = p.grant("bob").unwrap();
        assert_eq!(bob.address, None);
        assert_eq!(bob.access.routes.len(), 1);
    }

    #[test]
    fn unlisted_identities_can_be_refused() {
        let p = check(&format!("allow_unlisted = false\n{EXAMPLE}")).unwrap();
        assert!(p.grant("alice").is_some());
        assert!(p.grant("mallory").is_none());
    }

    #[test]
    fn address_outside_network_or_servers_own_is_refused() {
        let client =
            |address: &str| format!("[[client]]\nidentity = \"a\"\naddress = \"{address}\"\n");
        refused(
            &client("10.78.0.10"),
            &["key `client[0].address`", "not a host address"],
        );
        refused(&client("10.77.0.1"), &["server's own"]);
        refused(&client("10.77.0.255"), &["not a host address"]);
    }

    #[test]
    fn duplicates_and_unknown_groups_are_all_reported() {
        refused(
            r#"
[[client]]
identity = "a"
address = "10.77.0.10"
groups = ["nope"]
[[client]]
identity = "b"
address = "10.77.0.10"
[[client]]
identity = "a"
"#,
            &[
                "unknown group \"nope\"",
                "also given to \"a\"",
                "has two entries",
            ],
        );
    }

    #[test]
    fn route_with_host_bits_and_unknown_key_are_refused() {
        refused("[defaults]\nroutes = [\"10.99.0.5/24\"]\n", &["host bits"]);
        refused("[defaults]\nrouts = []\n", &["routs"]);
    }

    #[test]
    fn a_search_domain_that_is_no_domain_name_is_refused() {
        refused(
            "[[group]]\nname = \"eng\"\nsearch = [\"ok.example\", \"x\\nnameserver 6.6.6.6\"]\n",
            &["group[0].search", "not a domain name"],
        );
        check("[defaults]\nsearch = [\"corp.example\", \"~eng.example\"]\n").expect("fine");
    }

    #[test]
    fn duplicate_setting_defaults_to_replace() {
        assert_eq!(check("").unwrap().duplicate, Duplicate::Replace);
        let p = check("duplicate = \"allow\"\nmax_per_identity = 3\n").unwrap();
        assert_eq!((p.duplicate, p.max_per_identity), (Duplicate::Allow, 3));
        assert!(check("duplicate = \"sometimes\"\n").is_err());
    }

    #[test]
    fn address6_needs_network6() {
        refused(
            "[[client]]\nidentity = \"a\"\naddress6 = \"fd77::10\"\n",
            &["no tunnel.network6"],
        );
    }
}
