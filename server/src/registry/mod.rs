//! The live sessions: who is connected, from where, since when, with which
//! counters, and how to stop each one; the slots they hold (one per identity
//! and device, counted against the session limit); and the routes to their
//! addresses. One owner, one lock, and a wake-up when a session or slot goes.
//! Read by status, used by the session pipeline, kick and reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use twoway_common::message::Bye;
use twoway_common::queue::QueueTx;

use crate::router::Router;

mod entry;

pub use entry::{Entry, Traffic};

/// The live sessions, their slots and the routes to them, with one owner
/// and one lock. Whoever waits for a session or a slot to go away is woken
/// when it does (see [`Registry::claim`] and [`Registry::wait_gone`]).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Counts sessions and slots that went away; waiters watch it.
    gone: watch::Sender<u64>,
    /// Tunnel address → session queue; written only here, under the lock,
    /// and read without it by the device readers.
    router: Router,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            next_id: AtomicU64::new(0),
            gone: watch::channel(0).0,
            router: Router::default(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeMap<u64, Entry>,
    /// Held slots: identities, and `identity` U+0001 `N` for extra devices.
    slots: BTreeSet<String>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_waiters(&self) {
        self.gone.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A session's claim on an identity slot, released when dropped.
#[derive(Debug)]
pub struct Slot {
    key: String,
    registry: Arc<Inner>,
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
        self.registry.lock().slots.remove(&self.key);
        self.registry.wake_waiters();
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// The route table the device readers dispatch by.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Claims the first free of `max` slots of `identity` (`identity`, then
    /// `identity` + U+0001 + `2`, ...). Fails when all are held, or when
    /// `total` slots are held across identities (the session limit: a
    /// session holds its slot for its whole life, so this check and the
    /// claim are one step and racing handshakes cannot exceed it).
    pub fn try_claim(&self, identity: &str, max: usize, total: usize) -> Result<Slot, Unclaimed> {
        let mut state = self.lock();
        if state.slots.len() >= total {
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
            .find(|k| !state.slots.contains(k))
            .ok_or(Unclaimed::IdentityFull)?;
        state.slots.insert(key.clone());
        Ok(Slot {
            key,
            registry: self.inner.clone(),
        })
    }

    /// Claims a slot as [`Registry::try_claim`] does; while the failure is
    /// one that `wait` says is worth waiting for, tries again each time a
    /// session or slot goes away, until `deadline`.
    pub async fn claim(
        &self,
        identity: &str,
        max: usize,
        total: usize,
        wait: impl Fn(Unclaimed) -> bool,
        deadline: tokio::time::Instant,
    ) -> Result<Slot, Unclaimed> {
        loop {
            // Watching before trying: a slot freed in between still wakes us.
            let mut gone = self.inner.gone.subscribe();
            match self.try_claim(identity, max, total) {
                Err(why) if wait(why) => {}
                claimed => return claimed,
            }
            tokio::select! {
                _ = gone.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return self.try_claim(identity, max, total);
                }
            }
        }
    }

    /// Waits until none of the sessions `ids` is live, or until `deadline`.
    pub async fn wait_gone(&self, ids: &[u64], deadline: tokio::time::Instant) {
        loop {
            let mut gone = self.inner.gone.subscribe();
            if !ids.iter().any(|id| self.contains(*id)) {
                return;
            }
            tokio::select! {
                _ = gone.changed() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// A fresh session number.
    pub fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds session `id` and routes its addresses to `queue`. `check` sees
    /// the entry first, under the same lock as [`Registry::swap_and_each`],
    /// so a session is either reviewed by a concurrent reload or registers
    /// after it (and `check` can tell).
    pub fn insert(
        &self,
        id: u64,
        mut entry: Entry,
        queue: QueueTx,
        check: impl FnOnce(&mut Entry),
    ) {
        let mut state = self.lock();
        check(&mut entry);
        for a in &entry.addresses {
            self.inner.router.insert(*a, id, queue.clone());
        }
        state.sessions.insert(id, entry);
    }

    /// Removes session `id` and its routes.
    pub fn remove(&self, id: u64) {
        let entry = {
            let mut state = self.lock();
            self.inner.router.remove_session(id);
            state.sessions.remove(&id)
        };
        drop(entry);
        self.inner.wake_waiters();
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether session `id` is still live.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().sessions.contains_key(&id)
    }

    /// Runs `swap`, then lets `f` look at and change every live session, all
    /// in one step under the lock (see [`Registry::insert`]).
    pub fn swap_and_each(&self, swap: impl FnOnce(), mut f: impl FnMut(u64, &mut Entry)) {
        let mut state = self.lock();
        swap();
        for (id, e) in state.sessions.iter_mut() {
            f(*id, e);
        }
    }

    /// Asks every session matching `pred` to end with `bye`; returns their ids.
    pub fn stop_where(&self, pred: impl Fn(&Entry) -> bool, bye: &Bye) -> Vec<u64> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(id, e)| {
                let _ = e.stop.try_send(bye.clone());
                *id
            })
            .collect()
    }

    /// Adds the live sessions' counters to `into`.
    pub fn add_traffic(&self, into: &mut Traffic) {
        for e in self.lock().sessions.values() {
            into.add(&e.counters);
        }
    }

    /// The sessions for status output, oldest first.
    pub fn snapshot(&self) -> Vec<twoway_common::control::status::SessionStatus> {
        self.lock()
            .sessions
            .iter()
            .map(|(id, e)| e.status(*id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_freed_on_drop() {
        let r = Registry::default();
        let a = r.try_claim("alice", 2, 10).unwrap();
        let b = r.try_claim("alice", 2, 10).unwrap();
        assert_eq!((a.key(), b.key()), ("alice", "alice\u{1}2"));
        assert_eq!(
            r.try_claim("alice", 2, 10).err(),
            Some(Unclaimed::IdentityFull)
        );
        drop(a);
        // The freed first slot (with the static address) is taken again first.
        assert_eq!(r.try_claim("alice", 2, 10).unwrap().key(), "alice");
        assert_eq!(r.try_claim("bob", 1, 10).unwrap().key(), "bob");
    }

    #[test]
    fn the_session_limit_counts_held_slots() {
        let r = Registry::default();
        let a = r.try_claim("alice", 1, 2).unwrap();
        let _b = r.try_claim("bob", 1, 2).unwrap();
        assert_eq!(r.try_claim("carol", 1, 2).err(), Some(Unclaimed::AtLimit));
        drop(a);
        assert_eq!(r.try_claim("carol", 1, 2).unwrap().key(), "carol");
    }
}

#[cfg(test)]
mod waiting {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_claim_waits_for_the_slot_to_be_freed_not_for_a_timer() {
        let r = Arc::new(Registry::default());
        let held = r.try_claim("alice", 1, 10).unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move {
                r.claim("alice", 1, 10, |_| true, far)
                    .await
                    .map(|s| s.key().to_owned())
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap(), "alice");
    }

    #[tokio::test]
    async fn a_claim_not_worth_waiting_for_fails_at_once_and_one_gives_up_at_its_deadline() {
        let r = Registry::default();
        let _held = r.try_claim("alice", 1, 10).unwrap();
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(
            r.claim("alice", 1, 10, |_| false, far).await.err(),
            Some(Unclaimed::IdentityFull)
        );
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert_eq!(
            r.claim("alice", 1, 10, |_| true, soon).await.err(),
            Some(Unclaimed::IdentityFull)
        );
    }
}
