//! The dynamic address pool: a pure data structure. It remembers which
//! identity had which address (leases), so a client gets the same address
//! again, and reuses the least recently used lease only when no address is free.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// One identity's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased address.
    pub address: Ipv4Addr,
    /// Unix seconds of the last assignment.
    pub last_used: u64,
}

/// No address can be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address pool {0} is exhausted: every address is in use by a connected client")]
pub struct PoolExhausted(pub Ipv4Network);

/// The pool: a range, addresses it must never hand out, and the leases.
#[derive(Debug, Clone)]
pub struct Pool {
    range: Ipv4Network,
    reserved: BTreeSet<Ipv4Addr>,
    leases: BTreeMap<String, Lease>,
}

impl Pool {
    /// A pool over `range` that never hands out `reserved` (the server's
    /// address, static addresses, the network and broadcast addresses).
    pub fn new(range: Ipv4Network, reserved: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        Self {
            range,
            reserved: reserved.into_iter().collect(),
            leases: BTreeMap::new(),
        }
    }

    /// Adopts persisted leases, keeping only those still valid for this pool;
    /// returns the identities whose leases were dropped.
    pub fn adopt(&mut self, leases: BTreeMap<String, Lease>) -> Vec<String> {
        let mut dropped = Vec::new();
        let mut taken = BTreeSet::new();
        for (identity, lease) in leases {
            if self.usable(lease.address) && taken.insert(lease.address) {
                self.leases.insert(identity, lease);
            } else {
                dropped.push(identity);
            }
        }
        dropped
    }

    /// Replaces the reserved set (after a policy change); leases on newly
    /// reserved addresses are dropped and returned.
    pub fn set_reserved(&mut self, reserved: impl IntoIterator<Item = Ipv4Addr>) -> Vec<String> {
        self.reserved = reserved.into_iter().collect();
        let stale: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| self.reserved.contains(&l.address))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.leases.remove(id);
        }
        stale
    }

    /// The current leases.
    pub fn leases(&self) -> &BTreeMap<String, Lease> {
        &self.leases
    }

    /// The range the pool hands out.
    pub fn range(&self) -> Ipv4Network {
        self.range
    }

    /// Whether `addr` may be handed out: in the range and not reserved.
    pub fn usable(&self, addr: Ipv4Addr) -> bool {
        self.range.contains(addr) && !self.reserved.contains(&addr)
    }

    /// A usable address not in `taken`, searched from a place in the range
    /// that `seed` picks and onwards (wrapping): nodes that lease for
    /// different identities at once (a cluster) mostly try different
    /// addresses instead of all racing for the lowest free one.
    pub fn free_from(&self, taken: &BTreeSet<Ipv4Addr>, seed: u64) -> Option<Ipv4Addr> {
        let base = u32::from(self.range.network());
        let size = u64::from(self.range.size().max(1));
        let start = seed % size;
        (0..size)
            .map(|i| Ipv4Addr::from(base.wrapping_add(((start + i) % size) as u32)))
            .find(|a| self.usable(*a) && !taken.contains(a))
    }

    /// Gives `identity` an address: its own lease if it has one, else a
    /// never-leased free address, else the least recently used lease of an
    /// identity whose address is not `in_use`.
    pub fn assign(
        &mut self,
        identity: &str,
        now: u64,
        in_use: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolExhausted> {
        if let Some(lease) = self.leases.get_mut(identity) {
            lease.last_used = now;
            return Ok(lease.address);
        }
        let leased: BTreeSet<Ipv4Addr> = self.leases.values().map(|l| l.address).collect();
        let free = self
            .range
            .iter()
            .find(|a| self.usable(*a) && !leased.contains(a) && !in_use(*a));
        let address = match free {
            Some(a) => a,
            None => {
                let victim = self
                    .leases
                    .iter()
                    .filter(|(_, l)| !in_use(l.address))
                    .min_by_key(|(_, l)| l.last_used)
                    .map(|(id, l)| (id.clone(), l.address))
                    .ok_or(PoolExhausted(self.range))?;
                self.leases.remove(&victim.0);
                victim.1
            }
        };
        self.leases.insert(
            identity.to_owned(),
            Lease {
                address,
                last_used: now,
            },
        );
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_from_spreads_by_seed_and_finds_the_last_free_address() {
        let pool = Pool::new(
            "10.77.0.0/28".parse().unwrap(),
            ["10.77.0.0".parse().unwrap(), "10.77.0.1".parse().unwrap()],
        );
        let none = BTreeSet::new();
        let starts: BTreeSet<Ipv4Addr> = (0..16)
            .filter_map(|seed| pool.free_from(&none, seed))
            .collect();
        assert!(starts.len() > 8, "seeds pick different places: {starts:?}");
        assert!(starts.iter().all(|a| pool.usable(*a)));
        // Seed 0 and 1 land on reserved addresses and move on.
        assert_eq!(pool.free_from(&none, 0), Some("10.77.0.2".parse().unwrap()));
        assert_eq!(
            pool.free_from(&none, 17),
            Some("10.77.0.2".parse().unwrap())
        );
        // All but one taken: every seed finds it; none free: none.
        let last: Ipv4Addr = "10.77.0.9".parse().unwrap();
        let mut taken: BTreeSet<Ipv4Addr> = pool.range().iter().filter(|a| *a != last).collect();
        for seed in 0..40 {
            assert_eq!(pool.free_from(&taken, seed), Some(last));
        }
        taken.insert(last);
        assert_eq!(pool.free_from(&taken, 3), None);
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn same_identity_gets_same_address() {
        let mut p = Pool::new(net("10.0.0.0/29"), [ip("10.0.0.0"), ip("10.0.0.1")]);
        let a = p.assign("alice", 1, |_| false).unwrap();
        let b = p.assign("bob", 2, |_| false).unwrap();
        assert_eq!(a, ip("10.0.0.2"));
        assert_eq!(b, ip("10.0.0.3"));
        assert_eq!(p.assign("alice", 3, |_| false).unwrap(), a);
    }

    #[test]
    fn reserved_addresses_are_never_given() {
        let mut p = Pool::new(
            net("10.0.0.0/30"),
            [ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.3")],
        );
        assert_eq!(p.assign("a", 1, |_| false).unwrap(), ip("10.0.0.2"));
        // Only one usable address: b evicts a's lease since a is not connected.
        assert_eq!(p.assign("b", 2, |_| false).unwrap(), ip("10.0.0.2"));
        assert!(!p.leases().contains_key("a"));
    }

    #[test]
    fn full_pool_of_connected_clients_refuses() {
        let mut p = Pool::new(net("10.0.0.0/30"), [ip("10.0.0.0"), ip("10.0.0.3")]);
        p.assign("a", 1, |_| false).unwrap();
        p.assign("b", 2, |_| false).unwrap();
        let err = p.assign("c", 3, |_| true).unwrap_err();
        assert_eq!(err, PoolExhausted(net("10.0.0.0/30")));
    }

    #[test]
    fn eviction_takes_least_recently_used_idle_lease() {
        let mut p = Pool::new(net("10.0.0.0/30"), []);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            p.assign(id, 10 + i as u64, |_| false).unwrap();
        }
        // a is oldest but connected; b is the oldest idle one.
        let a_addr = p.leases()["a"].address;
        let got = p.assign("e", 20, |addr| addr == a_addr).unwrap();
        assert_eq!(got, ip("10.0.0.1"));
        assert!(!p.leases().contains_key("b"));
    }

    #[test]
    fn adopt_drops_invalid_and_duplicate_leases() {
        let mut p = Pool::new(net("10.0.0.0/29"), [ip("10.0.0.1")]);
        let mut old = BTreeMap::new();
        old.insert(
            "in".to_string(),
            Lease {
                address: ip("10.0.0.2"),
                last_used: 1,
            },
        );
        old.insert(
            "twin".to_string(),
            Lease {
                address: ip("10.0.0.2"),
                last_used: 1,
            },
        );
        old.insert(
            "out".to_string(),
            Lease {
                address: ip("10.9.0.2"),
                last_used: 1,
            },
        );
        old.insert(
            "reserved".to_string(),
            Lease {
                address: ip("10.0.0.1"),
                last_used: 1,
            },
        );
        let mut dropped = p.adopt(old);
        dropped.sort();
        assert_eq!(dropped, ["out", "reserved", "twin"]);
        assert_eq!(p.assign("in", 2, |_| false).unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn newly_reserved_address_loses_its_lease() {
        let mut p = Pool::new(net("10.0.0.0/29"), []);
        let a = p.assign("a", 1, |_| false).unwrap();
        assert_eq!(p.set_reserved([a]), ["a"]);
        assert_ne!(p.assign("a", 2, |_| false).unwrap(), a);
    }
}
