//! Typed control messages carried in Hello, Assign, Refuse, Bye and Update
//! frames, as JSON objects (rare, small, and easy to extend without breaking
//! old peers).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; ALPN carries it as `twoway/1`.
pub const PROTOCOL_VERSION: u16 = 1;
/// Feature name: both ends carry offloaded (GSO) packets whole.
pub const FEATURE_OFFLOAD: &str = "offload";
/// Feature name: data may cross the UDP channel beside the TLS connection.
pub const FEATURE_UDP: &str = "udp";
/// Feature name: the server may push a changed grant (routes, DNS) to the
/// live session in an Update frame instead of ending it.
pub const FEATURE_UPDATE: &str = "update";
/// Largest control message accepted, far below the frame limit.
pub const MAX_CONTROL_LEN: usize = 16 * 1024;

/// First message of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// Optional features the client supports (e.g. "offload"); unknown ones are ignored.
    #[serde(default)]
    pub features: Vec<String>,
    /// Software name and version, for logs.
    #[serde(default)]
    pub software: String,
}

/// What the server gives the client for this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The client's IPv4 address with the tunnel network's prefix length.
    pub address: IpNetwork,
    /// The client's IPv6 address with prefix, when the server has `network6`.
    pub address6: Option<IpNetwork>,
    /// The server's own tunnel addresses (IPv4, then IPv6 if any).
    pub gateways: Vec<IpAddr>,
    /// Networks to route into the tunnel.
    #[serde(default)]
    pub routes: Vec<IpNetwork>,
    /// DNS resolvers to use.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Tunnel MTU.
    pub mtu: u16,
    /// Seconds between keepalive pings when idle.
    pub keepalive_secs: u32,
    /// Seconds without any frame after which the peer is considered dead.
    pub timeout_secs: u32,
    /// Optional features the server enabled for this session.
    #[serde(default)]
    pub features: Vec<String>,
    /// With feature `udp`: the session's number in UDP datagrams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_session: Option<u32>,
    /// With feature `udp`: the secrets the session's UDP keys come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_secret: Option<crate::outside::udp::UdpSecret>,
}

impl Assignment {
    /// The client's tunnel addresses: IPv4, then IPv6 if it has one.
    pub fn addresses(&self) -> Vec<IpAddr> {
        [Some(self.address.ip()), self.address6.map(|a| a.ip())]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Whether `other` gives the device the same configuration (the UDP
    /// session number and secrets are new on every connection and do not count).
    pub fn same_network(&self, other: &Assignment) -> bool {
        Assignment {
            udp_session: None,
            udp_secret: None,
            ..self.clone()
        } == Assignment {
            udp_session: None,
            udp_secret: None,
            ..other.clone()
        }
    }

    /// The part of the assignment an [`Update`] replaces.
    pub fn grant(&self) -> Update {
        Update {
            routes: self.routes.clone(),
            dns: self.dns.clone(),
            search: self.search.clone(),
        }
    }

    /// This assignment with `update` in force.
    pub fn updated(&self, update: &Update) -> Assignment {
        Assignment {
            routes: update.routes.clone(),
            dns: update.dns.clone(),
            search: update.search.clone(),
            ..self.clone()
        }
    }

    /// Whether `other` differs from this one at most in what an [`Update`]
    /// changes, so that the device (its addresses, MTU) can stay as it is.
    pub fn same_device(&self, other: &Assignment) -> bool {
        self.same_network(&other.updated(&self.grant()))
    }
}

/// A changed grant for a live session (server → client, with feature
/// `update`): the assignment's routes, DNS servers and search domains,
/// each replaced as a whole. Every field is required, so that an absent
/// list can never be read as "remove everything".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Networks to route into the tunnel.
    pub routes: Vec<IpNetwork>,
    /// DNS resolvers to use.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
}

/// Whether `name` can be a DNS search domain as the client hands it to
/// resolv.conf, systemd-resolved and hooks: letters, digits, `-`, `_` and
/// dots, no label starting with `-`, at most 253 characters, and for
/// systemd-resolved's routing-only domains an optional leading `~` (not `~.`
/// alone, which would take every name). Nothing else reaches a file, a
/// command line or a hook's environment.
pub fn valid_search_domain(name: &str) -> bool {
    let name = name.strip_prefix('~').unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Drops the search domains `valid_search_domain` refuses; gives them back
/// (a client's defence against a server that sends them anyway).
pub fn drop_bad_search_domains(search: &mut Vec<String>) -> Vec<String> {
    let (good, bad) = std::mem::take(search)
        .into_iter()
        .partition(|s| valid_search_domain(s));
    *search = good;
    bad
}

/// Why the server refuses a session; drives the client's exit code and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefuseCode {
    /// The client speaks a protocol version the server does not.
    VersionUnsupported,
    /// The certificate is valid but the identity is not allowed by policy.
    IdentityNotAllowed,
    /// The certificate lacks the field the server takes the identity from.
    NoIdentity,
    /// The certificate was revoked after the TLS handshake checked it (a
    /// reload with a new CRL came between the handshake and the grant).
    Revoked,
    /// No address is free in the pool.
    PoolExhausted,
    /// The identity is already connected and policy refuses a second session.
    Duplicate,
    /// The server is at its session limit or shutting down.
    Busy,
    /// Something else went wrong on the server.
    Internal,
    /// A code this build does not know.
    #[serde(other)]
    Unknown,
}

impl RefuseCode {
    /// The wire name, e.g. `identity-not-allowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionUnsupported => "version-unsupported",
            Self::IdentityNotAllowed => "identity-not-allowed",
            Self::NoIdentity => "no-identity",
            Self::Revoked => "revoked",
            Self::PoolExhausted => "pool-exhausted",
            Self::Duplicate => "duplicate",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// Whether retrying later cannot help (authentication and authorisation refusals).
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::IdentityNotAllowed | Self::NoIdentity | Self::Revoked
        )
    }
}

/// A refused session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefuseCode,
    /// Human-readable explanation.
    pub message: String,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByeReason {
    /// The sender is stopping (server shutdown, client `down`).
    Shutdown,
    /// An operator kicked the session.
    Kicked,
    /// The client's certificate was revoked.
    Revoked,
    /// The policy no longer allows this identity, or changed its address (or,
    /// for a client without feature `update`, its routes or DNS).
    PolicyChanged,
    /// A newer session of the same identity replaced this one.
    Replaced,
    /// The peer sent something invalid.
    ProtocolError,
    /// A reason this build does not know.
    #[serde(other)]
    Unknown,
}

/// The last message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Machine-readable reason.
    pub reason: ByeReason,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
}

impl Bye {
    /// A Bye with a reason and message.
    pub fn new(reason: ByeReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A control message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Larger than [`MAX_CONTROL_LEN`].
    #[error("control message of {0} bytes exceeds {MAX_CONTROL_LEN}")]
    TooLarge(usize),
    /// Not valid JSON of the expected shape.
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Serialises a control message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Parses a control message, refusing oversize input before parsing.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, MessageError> {
    if payload.len() > MAX_CONTROL_LEN {
        return Err(MessageError::TooLarge(payload.len()));
    }
    Ok(serde_json::from_slice(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment with every field set.
    fn sample() -> Assignment {
        Assignment {
            address: "10.77.0.10/24".parse().unwrap(),
            address6: Some("fd77::a/64".parse().unwrap()),
            gateways: vec!["10.77.0.1".parse().unwrap()],
            routes: vec!["10.99.0.0/24".parse().unwrap()],
            dns: vec!["10.99.0.53".parse().unwrap()],
            search: vec!["corp.example".into()],
            mtu: 1400,
            keepalive_secs: 10,
            timeout_secs: 60,
            features: vec!["udp".into()],
            udp_session: Some(0xdead_beef),
            udp_secret: crate::outside::udp::UdpSecret::generate(1).map(|(s, ..)| s),
        }
    }

    #[test]
    fn search_domains_that_could_reach_a_file_or_a_command_line_are_refused() {
        for good in [
            "corp.example",
            "eng.corp.example.",
            "~corp.example",
            "a_b.example",
            "x",
        ] {
            assert!(valid_search_domain(good), "{good}");
        }
        for bad in [
            "",
            "~",
            "~.",
            ".",
            "corp..example",
            "-corp.example",
            "corp.-x",
            "corp example",
            "corp\nnameserver 6.6.6.6",
            "corp\0x",
            "$(reboot)",
            "a;b",
            &"a".repeat(64),
            &"a.".repeat(130),
        ] {
            assert!(!valid_search_domain(bad), "{bad:?}");
        }
        let mut search = vec!["ok.example".to_owned(), "bad\nline".to_owned()];
        assert_eq!(
            drop_bad_search_domains(&mut search),
            vec!["bad\nline".to_owned()]
        );
        assert_eq!(search, vec!["ok.example".to_owned()]);
    }

    #[test]
    fn assignment_round_trip() {
        let a = sample();
        assert_eq!(decode::<Assignment>(&encode(&a)).unwrap(), a);
        assert!(
            !format!("{a:?}").contains(&encode_hex_of(&a)),
            "Debug shows no secret"
        );
        let other = Assignment {
            udp_session: Some(7),
            udp_secret: crate::outside::udp::UdpSecret::generate(1).map(|(s, ..)| s),
            ..a.clone()
        };
        assert!(
            a.same_network(&other),
            "a new UDP session number is the same network"
        );
        let moved = Assignment {
            mtu: 1300,
            ..a.clone()
        };
        assert!(!a.same_network(&moved));
    }

    /// The udp_secret as it appears in the JSON.
    fn encode_hex_of(a: &Assignment) -> String {
        let v: serde_json::Value = serde_json::from_slice(&encode(a)).unwrap();
        v["udp_secret"].as_str().unwrap().to_owned()
    }

    #[test]
    fn an_update_replaces_routes_and_dns_only() {
        let a = Assignment {
            features: vec![FEATURE_UPDATE.into()],
            ..sample()
        };
        let u = Update {
            routes: vec![
                "10.99.0.0/24".parse().unwrap(),
                "10.100.0.0/16".parse().unwrap(),
            ],
            dns: vec![],
            search: vec!["eng.example".into()],
        };
        let b = a.updated(&u);
        assert_eq!(b.grant(), u);
        assert_eq!(
            (b.address, b.mtu, &b.features),
            (a.address, a.mtu, &a.features)
        );
        assert!(a.same_device(&b) && b.same_device(&a) && !a.same_network(&b));
        let moved = Assignment {
            address: "10.77.0.11/24".parse().unwrap(),
            ..b.clone()
        };
        assert!(!a.same_device(&moved));
        assert_eq!(decode::<Update>(&encode(&u)).unwrap(), u);
        // No field may be left out: an absent list is not an empty one.
        assert!(decode::<Update>(br#"{"routes":[],"dns":[]}"#).is_err());
        let extra: Update =
            decode(br#"{"routes":["10.1.0.0/16"],"dns":[],"search":[],"mtu":1300}"#).unwrap();
        assert_eq!(extra.routes.len(), 1);
    }

    #[test]
    fn a_udp_secret_is_128_lowercase_hex_digits() {
        let ok = format!(r#"{{"s":"{}"}}"#, "0f".repeat(64));
        #[derive(serde::Deserialize)]
        struct S {
            #[allow(dead_code)]
            s: crate::outside::udp::UdpSecret,
        }
        assert!(serde_json::from_str::<S>(&ok).is_ok());
        for bad in [
            "0f".repeat(63),
            "0F".repeat(64),
            "0g".repeat(64),
            "0f".repeat(65),
        ] {
            let json = format!(r#"{{"s":"{bad}"}}"#);
            assert!(serde_json::from_str::<S>(&json).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_codes_and_fields_from_newer_peers_are_tolerated() {
        let r: Refusal = decode(br#"{"code":"quota-exceeded","message":"x","extra":1}"#).unwrap();
        assert_eq!(r.code, RefuseCode::Unknown);
        let b: Bye = decode(br#"{"reason":"revoked"}"#).unwrap();
        assert_eq!(b.reason, ByeReason::Revoked);
    }

    #[test]
    fn malformed_and_oversize_are_errors() {
        assert!(matches!(
            decode::<Hello>(b"{not json"),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Hello>(br#"{"version":"one"}"#),
            Err(MessageError::Malformed(_))
        ));
        let big = vec![b' '; MAX_CONTROL_LEN + 1];
        assert!(matches!(
            decode::<Hello>(&big),
            Err(MessageError::TooLarge(_))
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes are an error or a message, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode::<Hello>(&bytes);
            let _ = decode::<Assignment>(&bytes);
            let _ = decode::<Refusal>(&bytes);
            let _ = decode::<Bye>(&bytes);
            let _ = decode::<Update>(&bytes);
        }

        /// Arbitrary text in a Bye survives the round trip.
        #[test]
        fn bye_round_trips(message in ".{0,200}") {
            let bye = Bye::new(ByeReason::Kicked, message);
            prop_assert_eq!(decode::<Bye>(&encode(&bye)).unwrap(), bye);
        }
    }
}
