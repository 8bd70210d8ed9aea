//! The live sessions: who is connected, from where, since when, with which
//! counters, and how to stop each one. Read by status, used by kick and reload.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use twoway_common::control::status::{Carrier, SessionStatus};
use twoway_common::control::timestamp::rfc3339;
use twoway_common::message::Bye;
use twoway_common::relay::{Counters, DropReason};

use crate::policy::Grant;

/// One live session as the registry keeps it.
#[derive(Debug)]
pub struct Entry {
    /// The client's identity.
    pub identity: String,
    /// Its tunnel addresses.
    pub addresses: Vec<IpAddr>,
    /// Its public address and port.
    pub remote: SocketAddr,
    /// When the session was assigned.
    pub since: SystemTime,
    /// Serial number of its certificate (hex), to match against a new CRL.
    pub serial: String,
    /// What policy granted it (updated when a reload pushes a new grant),
    /// to tell on reload whether that changed.
    pub grant: Grant,
    /// A second (third...) session of the identity, with a pool address.
    pub extra_device: bool,
    /// Its traffic counters.
    pub counters: Arc<Counters>,
    /// Where a Bye is sent to end it.
    pub stop: mpsc::Sender<Bye>,
    /// Where a changed grant goes to the client (an Update frame), when the
    /// client announced feature `update`.
    pub update: Option<watch::Sender<Bytes>>,
    /// Whether its packets may reach other clients (its filter reads this).
    pub client_to_client: Arc<AtomicBool>,
    /// Its UDP path, when the session has the UDP channel.
    pub udp: Option<Arc<twoway_common::outside::udp::UdpPath>>,
}

/// Traffic totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from clients delivered inside.
    pub rx_bytes: u64,
    /// Bytes sent to clients.
    pub tx_bytes: u64,
    /// Dropped packets, indexed by `DropReason as usize`.
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Traffic {
    /// Adds one set of counters.
    pub fn add(&mut self, c: &Counters) {
        self.rx_bytes += c.rx_bytes.load(Ordering::Relaxed);
        self.tx_bytes += c.tx_bytes.load(Ordering::Relaxed);
        for r in DropReason::ALL {
            self.dropped[r as usize] += c.dropped(r);
        }
    }
}

/// The live sessions.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<u64, Entry>>,
    next_id: AtomicU64,
    slots: Arc<Mutex<BTreeSet<String>>>,
}

/// A session's claim on an identity slot, released when dropped.
#[derive(Debug)]
pub struct Slot {
    key: String,
    slots: Arc<Mutex<BTreeSet<String>>>,
}

impl Slot {
    /// The slot's name: the identity, or `identity` U+0001 `N` for extra devices.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Why no slot was claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclaimed {
    /// Every slot this identity may hold is held.
    IdentityFull,
    /// The server holds its maximum number of sessions.
    AtLimit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the first free of `max` slots of `identity` (`identity`, then
    /// `identity` + U+0001 + `2`, ...). Fails when all are held, or when
    /// `total` slots are held across identities (the session limit: a
    /// session holds its slot for its whole life, so this check and the
    /// claim are one step and racing handshakes cannot exceed it).
    pub fn claim_slot(&self, identity: &str, max: usize, total: usize) -> Result<Slot, Unclaimed> {
        let mut held = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= total {
            return Err(Unclaimed::AtLimit);
        }
        let key = (1..=max.max(1))
            .map(|n| {
                if n == 1 {
                    identity.to_owned()
                } else {
                    // A control character: no identity contains one, so no clash.
                    format!("{identity}\u{1}{n}")
                }
            })
            .find(|k| !held.contains(k))
            .ok_or(Unclaimed::IdentityFull)?;
        held.insert(key.clone());
        Ok(Slot {
            key,
            slots: self.slots.clone(),
        })
    }

    /// A fresh session number.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a session.
    pub fn insert(&self, id: u64, entry: Entry) {
        self.lock().insert(id, entry);
    }

    /// Removes a session.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether session `id` is still live.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// Asks every session for which `verdict` gives a Bye to end with it;
    /// returns their ids.
    pub fn stop_each(&self, verdict: impl Fn(&Entry) -> Option<Bye>) -> Vec<u64> {
        let sessions = self.lock();
        sessions
            .iter()
            .filter_map(|(id, e)| {
                let bye = verdict(e)?;
                let _ = e.stop.try_send(bye);
                Some(*id)
            })
            .collect()
    }

    /// The entry of session `id`, if live, for `f` to look at and change.
    pub fn with_entry<T>(&self, id: u64, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.lock().get_mut(&id).map(f)
    }

    /// Lets `f` look at and change every live session, in one pass under the lock.
    pub fn each(&self, mut f: impl FnMut(u64, &mut Entry)) {
        for (id, e) in self.lock().iter_mut() {
            f(*id, e);
        }
    }

    /// Asks every session matching `pred` to end with `bye`; returns their ids.
    pub fn stop_where(&self, pred: impl Fn(&Entry) -> bool, bye: &Bye) -> Vec<u64> {
        self.stop_each(|e| pred(e).then(|| bye.clone()))
    }

    /// Adds the live sessions' counters to `into`.
    pub fn add_traffic(&self, into: &mut Traffic) {
        for e in self.lock().values() {
            into.add(&e.counters);
        }
    }

    /// The sessions for status output, oldest first.
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.lock()
            .iter()
            .map(|(id, e)| SessionStatus {
                id: *id,
                identity: e.identity.clone(),
                address: e
                    .addresses
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                address6: e.addresses.get(1).map(ToString::to_string),
                remote: e.remote.to_string(),
                since: rfc3339(e.since),
                rx_bytes: e.counters.rx_bytes.load(Ordering::Relaxed),
                tx_bytes: e.counters.tx_bytes.load(Ordering::Relaxed),
                transport: e.udp.as_ref().map_or(Carrier::Tcp, |p| p.transport()),
                udp_remote: e.udp.as_ref().and_then(|p| p.peer()).map(|a| a.to_string()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let r = Registry::default();
        let a = r.claim_slot("alice", 2, 10).unwrap();
        let b = r.claim_slot("alice", 2, 10).unwrap();
        assert_eq!((a.key(), b.key()), ("alice", "alice\u{1}2"));
        assert_eq!(
            r.claim_slot("alice", 2, 10).err(),
            Some(Unclaimed::IdentityFull)
        );
        drop(a);
        // The freed first slot (with the static address) is taken again first.
        assert_eq!(r.claim_slot("alice", 2, 10).unwrap().key(), "alice");
        assert_eq!(r.claim_slot("bob", 1, 10).unwrap().key(), "bob");
    }

    #[test]
    fn the_session_limit_counts_held_slots() {
        let r = Registry::default();
        let a = r.claim_slot("alice", 1, 2).unwrap();
        let _b = r.claim_slot("bob", 1, 2).unwrap();
        assert_eq!(r.claim_slot("carol", 1, 2).err(), Some(Unclaimed::AtLimit));
        drop(a);
        assert_eq!(r.claim_slot("carol", 1, 2).unwrap().key(), "carol");
    }
}
