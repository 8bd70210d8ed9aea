//! Reload: policy, CRL and certificate swapped in as one snapshot, and every live
//! session brought in line with them: a changed grant (routes, DNS) pushed to
//! the client, `client_to_client` changed in the session's filter, and only
//! the sessions that the new state no longer allows, or gives another
//! address, closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::info;
use twoway_common::message::{self, Bye, ByeReason, Update};

use super::{pool_for, Server};
use crate::loaded::{LoadError, Loaded};
use crate::policy::Grant;
use crate::registry::Entry;

/// What a reload did to the live sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sessions ended: revoked, no longer allowed, given another address, or
    /// given other routes or DNS while their client cannot take an Update.
    pub closed: Vec<u64>,
    /// Sessions that keep their connection under a changed grant (pushed to
    /// the client in an Update, or enforced by the server alone).
    pub updated: Vec<u64>,
}

/// What a reload does to one live session.
#[derive(Debug)]
pub(crate) enum Review {
    /// Nothing it was given changed.
    Same,
    /// Its new grant is in force without a reconnect.
    Updated,
    /// It ends with this Bye.
    End(Bye),
}

impl Server {
    /// Re-reads policy, CRL and server certificate and swaps them in as one
    /// snapshot; a broken file changes nothing. Each live session is
    /// reviewed against the new snapshot (see [`review`]) in the same step
    /// as the swap, so a session registering meanwhile is reviewed either
    /// here or by itself (`session::register`).
    pub fn reload(&self) -> Result<Reloaded, LoadError> {
        let loaded = Arc::new(Loaded::read(&self.config)?);
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = pool_for(&self.config, &loaded.policy);
            let leases = pool.leases().clone();
            *pool = fresh;
            pool.adopt(leases);
        }
        let mut done = Reloaded::default();
        self.registry.swap_and_each(
            || self.loaded.store(loaded.clone()),
            |id, e| match review(&loaded, e) {
                Review::Same => {}
                Review::Updated => done.updated.push(id),
                Review::End(bye) => {
                    let _ = e.stop.try_send(bye);
                    done.closed.push(id);
                }
            },
        );
        info!(
            closed = done.closed.len(),
            updated = done.updated.len(),
            "reloaded policy, certificate and CRL"
        );
        Ok(done)
    }
}

/// Brings a live session in line with the policy and CRL of `loaded`. A
/// revoked certificate or an identity the policy no longer admits ends it;
/// so does another address (the device must change), or a pool address that
/// became someone's static address. Other routes or DNS go
/// to the client in an Update when it announced `update` (else the session
/// ends, and the client reconnects to get them); `client_to_client` changes
/// in the session's filter.
pub(crate) fn review(loaded: &Loaded, e: &mut Entry) -> Review {
    if loaded.revoked.contains(&e.serial) {
        return Review::End(Bye::new(ByeReason::Revoked, "certificate revoked"));
    }
    let Some(mut new) = loaded.policy.grant(&e.identity) else {
        return Review::End(Bye::new(
            ByeReason::PolicyChanged,
            "the policy no longer admits this identity",
        ));
    };
    if e.extra_device {
        new.for_extra_device();
    }
    // A pool address that the new policy makes someone's static address:
    // its owner may connect now, so this session must move.
    let own_static = |a: &std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => e.grant.address == Some(*v4),
        std::net::IpAddr::V6(v6) => e.grant.address6 == Some(*v6),
    };
    if e.addresses
        .iter()
        .any(|a| !own_static(a) && loaded.policy.is_static(*a))
    {
        return Review::End(Bye::new(
            ByeReason::PolicyChanged,
            "this session's address is now reserved; reconnect for another",
        ));
    }
    match change(&e.grant, &new, e.update.is_some()) {
        Change::None => return Review::Same,
        Change::Reconnect => {
            return Review::End(Bye::new(
                ByeReason::PolicyChanged,
                "policy changed for this identity; reconnect",
            ))
        }
        Change::Push => {
            if let Some(update) = &e.update {
                let payload = message::encode(&pushed(&new.access));
                update.send_replace(payload.into());
            }
        }
        Change::ServerSide => {}
    }
    e.client_to_client
        .store(new.client_to_client, Ordering::Relaxed);
    tracing::debug!(identity = %e.identity, routes = ?new.access.routes, dns = ?new.access.dns,
        client_to_client = new.client_to_client, "grant changed; the session stays");
    e.grant = new;
    Review::Updated
}

/// What the client is sent for `access`: the same lists the assignment carries.
pub(crate) fn pushed(access: &crate::policy::Access) -> Update {
    Update {
        routes: access.routes.clone(),
        dns: access.dns.clone(),
        search: access.search.clone(),
    }
}

/// How a live session takes a new grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing it was given changed.
    None,
    /// Only what the server alone enforces (`client_to_client`).
    ServerSide,
    /// Routes, DNS or search domains: the client is sent an Update.
    Push,
    /// Its address (or what the client cannot take live): it must reconnect.
    Reconnect,
}

/// How a session granted `old` takes `new`; `can_push` when its client
/// announced `update`. A session that got a pool address (no static one)
/// keeps it unless a static one appears. Pure.
fn change(old: &Grant, new: &Grant, can_push: bool) -> Change {
    if (old.address, old.address6) != (new.address, new.address6) {
        Change::Reconnect
    } else if old.access != new.access {
        if can_push {
            Change::Push
        } else {
            Change::Reconnect
        }
    } else if old.client_to_client != new.client_to_client {
        Change::ServerSide
    } else {
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Access;

    fn grant(routes: &[&str], address: Option<&str>) -> Grant {
        Grant {
            address: address.map(|a| a.parse().unwrap()),
            address6: None,
            access: Access {
                routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
                dns: vec![],
                search: vec![],
            },
            client_to_client: false,
        }
    }

    #[test]
    fn routes_and_dns_are_pushed_and_only_an_address_needs_a_reconnect() {
        let old = grant(&["10.99.0.0/24"], None);
        assert_eq!(
            change(&old, &grant(&["10.99.0.0/24"], None), true),
            Change::None
        );
        let more = grant(&["10.99.0.0/24", "10.100.0.0/16"], None);
        assert_eq!(change(&old, &more, true), Change::Push);
        assert_eq!(change(&more, &old, true), Change::Push, "a route removed");
        let mut dns = old.clone();
        dns.access.dns = vec!["10.99.0.53".parse().unwrap()];
        assert_eq!(change(&old, &dns, true), Change::Push);
        let mut search = old.clone();
        search.access.search = vec!["corp.example".into()];
        assert_eq!(change(&old, &search, true), Change::Push);
        // A client that did not announce `update` reconnects, as before.
        assert_eq!(change(&old, &more, false), Change::Reconnect);
        // Another address needs a new device, whatever the client can take.
        let moved = grant(&["10.99.0.0/24"], Some("10.77.0.10"));
        assert_eq!(change(&old, &moved, true), Change::Reconnect);
        let moved_and_more = grant(&["10.99.0.0/24", "10.100.0.0/16"], Some("10.77.0.10"));
        assert_eq!(change(&old, &moved_and_more, true), Change::Reconnect);
        let mut six = old.clone();
        six.address6 = Some("fd77::a".parse().unwrap());
        assert_eq!(change(&old, &six, true), Change::Reconnect);
        // client_to_client is the server's filter alone: no message, no reconnect.
        let mut c2c = old.clone();
        c2c.client_to_client = true;
        assert_eq!(change(&old, &c2c, false), Change::ServerSide);
        let mut both = more.clone();
        both.client_to_client = true;
        assert_eq!(change(&old, &both, true), Change::Push);
        assert_eq!(change(&old, &both, false), Change::Reconnect);
    }
}
