//! Pool addresses leased in etcd. A lease is two keys written together in
//! one transaction that requires both to be as read: the lease key's address
//! and the address's lease key. So an identity has one address on every node,
//! and two nodes racing for one address cannot both win it. Leases have no
//! etcd lease: they outlive every node, as the lease file does on one server.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::keys;
use super::sessions::LeaseSeen;
use super::{Cluster, Unreachable};
use crate::pool::Pool;

/// Rounds of read-then-swap before giving up when other nodes keep winning.
const ATTEMPTS: usize = 16;

/// Why no pool address was leased.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// etcd did not answer.
    #[error("{0}")]
    Unreachable(#[from] Unreachable),
    /// Other nodes won every round of the race for a free address.
    #[error("the address pool is contended: other nodes won {0} rounds in a row")]
    Contended(usize),
    /// Every usable address is leased to an identity with a live session.
    #[error("address pool {0} is exhausted: every address is in use by a connected client")]
    Exhausted(ipnetwork::Ipv4Network),
}

/// Where in the pool `slot` starts looking for a free address on round
/// `attempt` (FNV-1a of both): stable for an identity, different for others.
fn seed(slot: &str, attempt: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in slot.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn parse_address(value: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Cluster {
    /// The pool address of lease key `slot`: its lease if it has a usable
    /// one, else a free address, else the address of an identity with no
    /// live session anywhere (the oldest such lease). `seen` is the lease
    /// record as the claim of the slot read it, if it did (the slot's
    /// session key, held since, keeps any other node from reclaiming it).
    pub async fn address(
        &self,
        slot: &str,
        pool: &Pool,
        mut seen: Option<LeaseSeen>,
    ) -> Result<Ipv4Addr, AddressError> {
        let id_key = keys::lease_identity(slot);
        for attempt in 0..ATTEMPTS {
            // The common case, a returning client: one read, or none.
            let own = match seen.take() {
                Some(own) => own,
                None => self.store.get(&id_key).await?,
            };
            if let Some((value, revision)) = &own {
                match parse_address(value) {
                    Some(a) if pool.usable(a) => return Ok(a),
                    // No longer in the pool, or now someone's static address.
                    old => {
                        let mut when = vec![Compare::mod_revision(
                            id_key.as_str(),
                            CompareOp::Equal,
                            *revision,
                        )];
                        let mut ops = vec![TxnOp::delete(id_key.as_str(), None)];
                        if let Some(old) = old {
                            let a_key = keys::lease_address(old);
                            when.push(Compare::value(a_key.as_str(), CompareOp::Equal, slot));
                            ops.push(TxnOp::delete(a_key, None));
                        }
                        let txn = Txn::new().when(when).and_then(ops);
                        if !self.store.txn(txn).await?.succeeded() && old.is_some() {
                            // The address key is not ours (it should be): drop only our half.
                            let txn = Txn::new()
                                .when([Compare::mod_revision(
                                    id_key.as_str(),
                                    CompareOp::Equal,
                                    *revision,
                                )])
                                .and_then([TxnOp::delete(id_key.as_str(), None)]);
                            let _ = self.store.txn(txn).await?;
                        }
                        continue;
                    }
                }
            }
            let leased = self.store.get_prefix(&keys::lease_addresses()).await?;
            let taken: BTreeSet<Ipv4Addr> = leased
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let k = std::str::from_utf8(kv.key()).ok()?;
                    k.rsplit('/').next()?.parse().ok()
                })
                .collect();
            let free = pool.free_from(&taken, seed(slot, attempt));
            let (a, txn) = match free {
                Some(a) => {
                    let a_key = keys::lease_address(a);
                    let txn = Txn::new()
                        .when([
                            Compare::create_revision(id_key.as_str(), CompareOp::Equal, 0),
                            Compare::create_revision(a_key.as_str(), CompareOp::Equal, 0),
                        ])
                        .and_then([
                            TxnOp::put(id_key.as_str(), a.to_string(), None),
                            TxnOp::put(a_key, slot, None),
                        ]);
                    (a, txn)
                }
                None => match self.victim(pool, &leased).await? {
                    Some((a, owner, a_revision)) => {
                        let a_key = keys::lease_address(a);
                        let owner_key = keys::lease_identity(&owner);
                        // Only while the owner has no session on any node: one
                        // that connects meanwhile has created this key first.
                        let owner_session = keys::session_of_slot(&owner);
                        let txn = Txn::new()
                            .when([
                                Compare::create_revision(id_key.as_str(), CompareOp::Equal, 0),
                                Compare::mod_revision(a_key.as_str(), CompareOp::Equal, a_revision),
                                Compare::value(owner_key.as_str(), CompareOp::Equal, a.to_string()),
                                Compare::create_revision(owner_session, CompareOp::Equal, 0),
                            ])
                            .and_then([
                                TxnOp::delete(owner_key, None),
                                TxnOp::put(id_key.as_str(), a.to_string(), None),
                                TxnOp::put(a_key, slot, None),
                            ]);
                        (a, txn)
                    }
                    None => return Err(AddressError::Exhausted(pool.range())),
                },
            };
            if self.store.txn(txn).await?.succeeded() {
                return Ok(a);
            }
            // Another node won this round: read again.
        }
        Err(AddressError::Contended(ATTEMPTS))
    }

    /// The least recently leased usable address whose lease key has no live
    /// session on any node: (address, its lease key, its revision).
    async fn victim(
        &self,
        pool: &Pool,
        leased: &etcd_client::GetResponse,
    ) -> Result<Option<(Ipv4Addr, String, i64)>, Unreachable> {
        // Session keys, as the reclaim transaction compares them: of every
        // node in etcd, and of this node (some perhaps not written yet).
        let r = self.store.get_prefix(&keys::sessions()).await?;
        let mut live: BTreeSet<String> = r
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok().map(str::to_owned))
            .collect();
        live.extend(self.local().keys().cloned());
        Ok(leased
            .kvs()
            .iter()
            .filter_map(|kv| {
                let a: Ipv4Addr = std::str::from_utf8(kv.key())
                    .ok()?
                    .rsplit('/')
                    .next()?
                    .parse()
                    .ok()?;
                let owner = kv.value_str().ok()?.to_owned();
                let session = keys::session_of_slot(&owner);
                (pool.usable(a) && !live.contains(&session)).then_some((
                    a,
                    owner,
                    kv.mod_revision(),
                ))
            })
            .min_by_key(|(_, _, revision)| *revision))
    }
}
