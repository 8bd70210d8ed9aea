//! The cap on TLS handshakes in progress (`limits.max_handshakes`). When it
//! is reached, a new connection takes the place of one that makes no
//! progress: the oldest whose peer has not sent a byte yet, or failing that
//! the oldest running for [`STALE_AFTER`] or more. Only when every handshake
//! is young and its peer has spoken is the new connection refused. So a flood
//! of idle connections, even from many addresses, cannot keep legitimate
//! clients out until the handshake timeout ends it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A handshake running this long may make room for a new one even though
/// its peer has spoken: a real client finishes in milliseconds.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Running {
    id: u64,
    started: Instant,
    spoke: Arc<AtomicBool>,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Oldest first.
    running: VecDeque<Running>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    state: Arc<Mutex<State>>,
}

/// One handshake's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    spoke: Arc<AtomicBool>,
    evict: CancellationToken,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handshakes {
    /// At most `max` handshakes at once.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Arc::default(),
        }
    }

    /// A place for a handshake starting at `now`, taken from an idle or
    /// stale handshake if all are in use (that one's [`Slot::evicted`] then
    /// resolves); `None` if none can make room.
    pub fn start(&self, now: Instant) -> Option<Slot> {
        let mut s = lock(&self.state);
        if s.running.len() >= self.max {
            let idle = s
                .running
                .iter()
                .position(|r| !r.spoke.load(Ordering::Relaxed));
            let stale = || {
                s.running
                    .iter()
                    .position(|r| now.duration_since(r.started) >= STALE_AFTER)
            };
            let victim = idle.or_else(stale)?;
            if let Some(r) = s.running.remove(victim) {
                r.evict.cancel();
            }
        }
        s.next_id += 1;
        let slot = Slot {
            id: s.next_id,
            spoke: Arc::default(),
            evict: CancellationToken::new(),
            state: self.state.clone(),
        };
        s.running.push_back(Running {
            id: slot.id,
            started: now,
            spoke: slot.spoke.clone(),
            evict: slot.evict.clone(),
        });
        Some(slot)
    }

    /// Handshakes holding a place.
    pub fn running(&self) -> usize {
        lock(&self.state).running.len()
    }
}

impl Slot {
    /// The peer has sent its first bytes: this handshake is no longer idle.
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
    }

    /// Resolves once a newer connection has taken this place.
    pub async fn evicted(&self) {
        self.evict.cancelled().await;
    }

    /// Whether a newer connection has taken this place.
    pub fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        if let Some(i) = s.running.iter().position(|r| r.id == self.id) {
            s.running.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A table of `max` places, the time `t` it starts at, and `N`
    /// handshakes started in it 1 ms apart from `t`.
    fn started<const N: usize>(max: usize) -> (Handshakes, Instant, [Slot; N]) {
        let h = Handshakes::new(max);
        let t = Instant::now();
        let slots = std::array::from_fn(|i| h.start(t + MS * i as u32).unwrap());
        (h, t, slots)
    }

    #[test]
    fn a_new_connection_replaces_the_oldest_idle_one() {
        let (h, _, [a, b, c]) = started(2);
        assert!(a.is_evicted());
        assert!(!b.is_evicted() && !c.is_evicted());
        assert_eq!(h.running(), 2);
        drop(a);
        assert_eq!(h.running(), 2);
        drop(b);
        assert_eq!(h.running(), 1);
    }

    #[test]
    fn young_handshakes_whose_peer_spoke_are_kept() {
        let (h, t, [a, b]) = started(2);
        a.spoke();
        b.spoke();
        assert!(h.start(t + Duration::from_secs(1)).is_none());
        assert!(!a.is_evicted() && !b.is_evicted());
        // Once stale, the oldest makes room.
        let c = h.start(t + STALE_AFTER).unwrap();
        assert!(a.is_evicted() && !b.is_evicted() && !c.is_evicted());
    }

    #[test]
    fn idle_ones_go_before_stale_ones() {
        let (h, t, [a, b]) = started(2);
        a.spoke();
        let _c = h.start(t + 3 * STALE_AFTER).unwrap();
        assert!(b.is_evicted() && !a.is_evicted());
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let (h, t, [a]) = started(1);
        a.spoke();
        drop(a);
        let b = h.start(t + MS).unwrap();
        assert!(!b.is_evicted());
        assert_eq!(h.running(), 1);
    }
}
