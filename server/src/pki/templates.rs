//! The example configurations `pki init` and `pki issue` write: a working
//! server.toml and policy.toml, and a client IDENTITY.toml that `twoway up`
//! accepts as it is (paths to the files, or a one-file profile with them
//! inside). The values put into them (port, identity, validated
//! server name, IP addresses) contain no characters that need TOML escaping.

use std::net::IpAddr;

/// server.toml for a server listening on `port`.
pub(crate) fn server_toml(port: u16) -> String {
    format!(
        r#"# twoway server configuration, written by `twoway-server pki init`.
# Relative paths are resolved against this file's folder. Every key, with
# its default, is described in twoway's CONFIG.md.
listen = "0.0.0.0:{port}"
policy = "policy.toml"

[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server.key"
crl = "crl.pem"

[tunnel]
name = "twoway0"
network = "10.77.0.0/24"     # the server takes the first host address
pool = "10.77.0.128/25"      # dynamic addresses, inside network
# network6 = "fd77::/64"
mtu = 1400
# nice = -10                 # priority of the tunnel threads (-20..19, 0 = leave alone)
# congestion = "auto"        # TCP congestion control of client connections ("" = system default)

[identity]
source = "cn"                # cn | san-email | san-dns | san-uri | fingerprint

[control]
socket = "/run/twoway/server.sock"

[state]
dir = "/var/lib/twoway"

[keepalive]
interval_secs = 10
timeout_secs = 60
"#
    )
}

/// policy.toml: no routes, no DNS, clients isolated from each other.
pub(crate) fn policy_toml() -> String {
    r#"# twoway policy: who gets which address, routes and DNS. Reloadable.
# Every key: CONFIG.md, "policy.toml".
client_to_client = false     # clients may not reach each other through the tunnel

[defaults]
routes = []                  # e.g. ["10.99.0.0/24"]: networks behind the server
dns = []

# [[group]]
# name = "eng"
# routes = ["10.100.0.0/16"]

# [[client]]
# identity = "alice"
# address = "10.77.0.10"
# groups = ["eng"]
"#
    .to_string()
}

/// The `host:port` a client dials: the first --ip given to init if any
/// (IPv6 in brackets), else the server name.
pub(crate) fn server_address(server_name: &str, ips: &[IpAddr], port: u16) -> String {
    match ips.first() {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Some(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        None => match server_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{server_name}:{port}"),
        },
    }
}

/// IDENTITY.toml: the client configuration for `identity`.
pub(crate) fn client_toml(identity: &str, server: &str, server_name: &str) -> String {
    format!(
        r#"# twoway client configuration for {identity}, written by `twoway-server pki issue`.
# Relative paths are resolved against this file's folder.
server = "{server}"
server_name = "{server_name}"         # checked against the server certificate

[tls]
ca = "ca.pem"
cert = "{identity}.pem"
key = "{identity}.key"

[control]
socket = "/run/twoway/{identity}.sock"
"#
    )
}

/// What goes into a one-file profile besides the client config.
pub(crate) struct InlinePems<'a> {
    /// The CA certificate.
    pub ca: &'a str,
    /// The client certificate.
    pub cert: &'a str,
    /// The client's private key.
    pub key: &'a str,
}

/// IDENTITY.toml as a one-file profile: the client config with the CA,
/// the certificate and the key inside. PEM text holds no quote or
/// backslash, so a TOML multi-line string carries it as it is.
pub(crate) fn client_toml_inline(
    identity: &str,
    server: &str,
    server_name: &str,
    pems: &InlinePems<'_>,
) -> String {
    let block = |pem: &str| {
        let mut text = pem.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    };
    format!(
        r#"# twoway client profile for {identity}, written by `twoway-server pki issue --inline`.
# It holds the private key: keep it mode 0600 (`twoway up` refuses it otherwise).
server = "{server}"
server_name = "{server_name}"         # checked against the server certificate

[control]
socket = "/run/twoway/{identity}.sock"

[tls]
ca_pem = """
{ca}"""
cert_pem = """
{cert}"""
key_pem = """
{key}"""
"#,
        ca = block(pems.ca),
        cert = block(pems.cert),
        key = block(pems.key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_toml_parses_with_the_port() {
        let value: toml::Table = toml::from_str(&server_toml(5555)).unwrap();
        assert_eq!(value["listen"].as_str(), Some("0.0.0.0:5555"));
        assert_eq!(value["tls"]["crl"].as_str(), Some("crl.pem"));
        assert_eq!(value["tunnel"]["mtu"].as_integer(), Some(1400));
        assert_eq!(value["keepalive"]["timeout_secs"].as_integer(), Some(60));
    }

    #[test]
    fn policy_toml_parses() {
        let value: toml::Table = toml::from_str(&policy_toml()).unwrap();
        assert_eq!(value["client_to_client"].as_bool(), Some(false));
        assert!(value["defaults"]["routes"].as_array().unwrap().is_empty());
    }

    #[test]
    fn server_address_prefers_the_first_ip() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(server_address("vpn", &[v4, v6], 4433), "192.0.2.1:4433");
        assert_eq!(server_address("vpn", &[v6], 4433), "[2001:db8::1]:4433");
        assert_eq!(
            server_address("vpn.example.com", &[], 1),
            "vpn.example.com:1"
        );
        assert_eq!(server_address("2001:db8::2", &[], 1), "[2001:db8::2]:1");
    }

    #[test]
    fn inline_profile_carries_the_pem_texts_exactly() {
        let pems = InlinePems {
            ca: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n",
            cert: "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----",
            key: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n",
        };
        let text = client_toml_inline("alice", "192.0.2.1:4433", "vpn", &pems);
        let value: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(value["tls"]["ca_pem"].as_str(), Some(pems.ca));
        assert_eq!(
            value["tls"]["cert_pem"].as_str().map(str::trim_end),
            Some(pems.cert)
        );
        assert_eq!(value["tls"]["key_pem"].as_str(), Some(pems.key));
        assert!(value["tls"].get("key").is_none());
        assert_eq!(value["server"].as_str(), Some("192.0.2.1:4433"));
    }

    #[test]
    fn client_toml_parses() {
        let text = client_toml("alice@example.com", "[2001:db8::1]:4433", "vpn");
        let value: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(value["server"].as_str(), Some("[2001:db8::1]:4433"));
        assert_eq!(value["server_name"].as_str(), Some("vpn"));
        assert_eq!(value["tls"]["cert"].as_str(), Some("alice@example.com.pem"));
        assert_eq!(
            value["control"]["socket"].as_str(),
            Some("/run/twoway/alice@example.com.sock")
        );
    }
}
