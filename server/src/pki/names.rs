//! Which identity and server names the PKI accepts. The identity rule itself
//! lives in `twoway_common::identity::name`, shared with `twoway request`.

use std::net::IpAddr;

use rustls_pki_types::DnsName;

use super::error::PkiError;

/// Checks an identity: 1-64 characters of `[A-Za-z0-9._@-]`, not starting
/// with '.' or '-', and not one of the PKI's own file names (the rule of
/// [`twoway_common::identity::name`], which `twoway request` applies too).
pub fn validate_identity(name: &str) -> Result<(), PkiError> {
    twoway_common::identity::name::check(name).map_err(|reason| PkiError::InvalidIdentity {
        name: name.to_string(),
        reason,
    })
}

/// What the server is called in its certificate: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerName {
    /// A DNS name, put into SAN dNSName.
    Dns(String),
    /// An IP address, put into SAN iPAddress.
    Ip(IpAddr),
}

/// Parses the `--name` given to `pki init`.
pub(crate) fn parse_server_name(name: &str) -> Result<ServerName, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::Ip(ip));
    }
    // A trailing dot or a wildcard makes no sense for the one name clients dial.
    if name.ends_with('.') || name.contains('*') {
        return Err(PkiError::InvalidServerName(name.to_string()));
    }
    match DnsName::try_from(name) {
        Ok(_) => Ok(ServerName::Dns(name.to_string())),
        Err(_) => Err(PkiError::InvalidServerName(name.to_string())),
    }
}

/// The email address in an identity like `alice@example.com`, if it is one.
pub(crate) fn email_of(identity: &str) -> Option<&str> {
    let (local, domain) = identity.split_once('@')?;
    let ok = !local.is_empty() && !domain.is_empty() && !domain.contains('@');
    ok.then_some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_identities() {
        for name in [
            "alice",
            "bob.smith",
            "alice@example.com",
            "host-1",
            "a_b",
            "A9",
        ] {
            validate_identity(name).unwrap();
        }
        validate_identity(&"a".repeat(64)).unwrap();
    }

    #[test]
    fn refuses_bad_identities() {
        for name in [
            "", ".hidden", "-rf", "a/b", "../x", "a b", "é", "x\"y", "ca", "server", "crl",
            "policy",
        ] {
            let err = validate_identity(name).unwrap_err();
            assert!(matches!(err, PkiError::InvalidIdentity { .. }), "{name:?}");
            assert!(err.to_string().contains("invalid identity name"));
        }
        assert!(validate_identity(&"a".repeat(65)).is_err());
    }

    #[test]
    fn server_names() {
        assert_eq!(
            parse_server_name("vpn.example.com").unwrap(),
            ServerName::Dns("vpn.example.com".into())
        );
        assert_eq!(
            parse_server_name("192.0.2.1").unwrap(),
            ServerName::Ip("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_server_name("2001:db8::1").unwrap(),
            ServerName::Ip("2001:db8::1".parse().unwrap())
        );
        for bad in ["", "a b", "*.example.com", "vpn.example.com.", "x\"y"] {
            assert!(parse_server_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email_of("alice@example.com"), Some("alice@example.com"));
        assert_eq!(email_of("alice"), None);
        assert_eq!(email_of("@example.com"), None);
        assert_eq!(email_of("alice@"), None);
        assert_eq!(email_of("a@b@c"), None);
    }
}
