//! Where things live in etcd, and the records stored there. Every key starts
//! with `/twoway/`; an identity is escaped so that no identity can reach into
//! another's keys.
//!
//! - `/twoway/leases/identity/<slot>`: the pool address of a lease key (the
//!   identity, or identity U+0001 N for an extra device); no etcd lease, it
//!   outlives every node.
//! - `/twoway/leases/address/<address>`: the lease key holding that address.
//!   The two keys are only ever written together, in one transaction.
//! - `/twoway/sessions/<identity>/<N>`: slot N of an identity, held by one
//!   live session (a [`SessionRecord`]) under its node's etcd lease.
//! - `/twoway/kicks/<node>/<session id>`: asks that node to end that session.
//! - `/twoway/nodes/<node>`: the etcd lease of the live node of that name
//!   (held under that lease), so that a second node of the same name is noticed.

use std::fmt::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The root of everything twoway keeps in etcd.
pub const ROOT: &str = "/twoway/";

/// Escapes `s` for one key segment: `/`, `%` and anything outside printable
/// ASCII become `%XX`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'/' && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The lease key of slot `n` (1-based) of `identity`, as the local registry
/// names slots.
pub fn slot_key(identity: &str, n: usize) -> String {
    if n <= 1 {
        identity.to_owned()
    } else {
        format!("{identity}\u{1}{n}")
    }
}

/// The session key of lease key `slot` (the inverse of [`slot_key`]): the
/// key a live session of that slot holds, on whatever node.
pub fn session_of_slot(slot: &str) -> String {
    match slot.rsplit_once('\u{1}') {
        Some((identity, n)) => match n.parse() {
            Ok(n) => session(identity, n),
            Err(_) => session(slot, 1),
        },
        None => session(slot, 1),
    }
}

/// The lease record of a lease key.
pub fn lease_identity(slot: &str) -> String {
    format!("{ROOT}leases/identity/{}", escape(slot))
}

/// The lease record of an address.
pub fn lease_address(a: Ipv4Addr) -> String {
    format!("{ROOT}leases/address/{a}")
}

/// Every address lease.
pub fn lease_addresses() -> String {
    format!("{ROOT}leases/address/")
}

/// Every session of every node.
pub fn sessions() -> String {
    format!("{ROOT}sessions/")
}

/// Every session slot of `identity`.
pub fn sessions_of(identity: &str) -> String {
    format!("{ROOT}sessions/{}/", escape(identity))
}

/// Slot `n` of `identity`.
pub fn session(identity: &str, n: usize) -> String {
    format!("{}{n}", sessions_of(identity))
}

/// The key a live node holds under its etcd lease: its name is taken.
pub fn node(node: &str) -> String {
    format!("{ROOT}nodes/{}", escape(node))
}

/// The kicks addressed to `node`.
pub fn kicks_for(node: &str) -> String {
    format!("{ROOT}kicks/{}/", escape(node))
}

/// A kick of session `id` on `node`.
pub fn kick(node: &str, id: u64) -> String {
    format!("{}{id}", kicks_for(node))
}

/// One live session as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The client's identity.
    pub identity: String,
    /// The node that holds the session.
    pub node: String,
    /// The session's number on that node.
    pub id: u64,
    /// Its lease key (the identity, or an extra device's slot).
    pub slot: String,
    /// Its IPv4 tunnel address (empty while it is being set up).
    pub address: String,
    /// Its IPv6 tunnel address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    /// The client's public address and port.
    pub remote: String,
    /// RFC 3339 time the session started.
    pub since: String,
}

/// What a kick asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickRecord {
    /// The identity of the session (checked by the node before it acts).
    pub identity: String,
    /// `kicked` (an operator) or `replaced` (a newer session elsewhere).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_cannot_reach_other_keys() {
        assert_eq!(escape("alice@example.com"), "alice@example.com");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("50%"), "50%25");
        assert_eq!(escape("a b\u{1}é"), "a%20b%01%C3%A9");
        // "alice" and "alice/1" have disjoint session prefixes.
        assert!(!session("alice/1", 1).starts_with(&sessions_of("alice")));
        assert_ne!(sessions_of("ali"), sessions_of("alice"));
        assert!(!sessions_of("alice").starts_with(&sessions_of("ali")));
    }

    #[test]
    fn slots_match_the_local_registry() {
        assert_eq!(slot_key("bob", 1), "bob");
        assert_eq!(slot_key("bob", 2), "bob\u{1}2");
        assert_eq!(
            lease_identity("bob\u{1}2"),
            "/twoway/leases/identity/bob%012"
        );
        assert_eq!(
            lease_address(Ipv4Addr::new(10, 77, 0, 130)),
            "/twoway/leases/address/10.77.0.130"
        );
        assert_eq!(kick("vpn-a", 7), "/twoway/kicks/vpn-a/7");
        for (identity, n) in [("bob", 1), ("bob", 2), ("bob", 12), ("a/b", 3)] {
            assert_eq!(
                session_of_slot(&slot_key(identity, n)),
                session(identity, n)
            );
        }
    }
}
