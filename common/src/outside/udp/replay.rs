//! The receive side's replay window (RFC 6479 style): the highest counter
//! seen and a bitmap of the `WINDOW` counters below it. A datagram is
//! accepted once per counter, only after it authenticated, and only if it is
//! newer than the window's bottom. Pure; no I/O.

/// Counters the window remembers below the highest one seen.
pub const WINDOW: u64 = 2048;
const WORD_BITS: u64 = u64::BITS as u64;
/// One word more than the window, so sliding never clears a live bit.
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;

/// Which counters have been accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted, plus one (0: nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            next: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `counter` could still be accepted (not too old, not seen).
    /// Cheap; lets a receiver skip the AEAD for what it would refuse anyway.
    pub fn may_accept(&self, counter: u64) -> bool {
        if counter == u64::MAX {
            // Never sent (a sender stops long before); `next` could not hold it.
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW {
            // Older than the WINDOW counters up to the highest.
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] & bit == 0
    }

    /// Marks `counter` as seen; false if it is a replay or too old. Call only
    /// for a datagram that authenticated.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.may_accept(counter) {
            return false;
        }
        if counter >= self.next {
            self.slide_to(counter);
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= bit;
        true
    }

    /// The highest counter accepted, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Clears the words between the current top and `counter`'s word.
    fn slide_to(&mut self, counter: u64) {
        let top = self.next.saturating_sub(1) / WORD_BITS;
        let new_top = counter / WORD_BITS;
        if self.next == 0 {
            return;
        }
        let steps = (new_top - top).min(WORDS as u64);
        for i in 1..=steps {
            self.bits[((top + i) % WORDS as u64) as usize] = 0;
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let word = ((counter / WORD_BITS) % WORDS as u64) as usize;
        (word, 1u64 << (counter % WORD_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.highest(), None);
        for c in [0, 1, 2, 5, 4, 3] {
            assert!(w.accept(c), "{c}");
        }
        for c in 0..=5 {
            assert!(!w.accept(c), "replay of {c}");
        }
        assert_eq!(w.highest(), Some(5));
    }

    #[test]
    fn refuses_what_fell_out_of_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10_000));
        assert!(!w.may_accept(10_000 - WINDOW));
        assert!(!w.accept(10_000 - WINDOW));
        // The oldest counter still inside the window is fresh.
        assert!(w.accept(10_000 - WINDOW + 1));
        assert!(!w.accept(10_000 - WINDOW + 1));
    }

    #[test]
    fn a_large_jump_forgets_everything_below_the_window() {
        let mut w = ReplayWindow::default();
        for c in 0..100 {
            assert!(w.accept(c));
        }
        assert!(w.accept(1_000_000));
        // Bits of the old counters must not linger in reused words.
        for c in (1_000_000 - WINDOW + 1)..1_000_000 {
            assert!(w.may_accept(c), "{c} looks seen after the jump");
        }
    }

    #[test]
    fn counter_zero_and_the_largest_counter() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(u64::MAX - 1));
        assert!(!w.accept(u64::MAX - 1));
        assert!(!w.accept(0));
        assert!(!w.accept(u64::MAX), "the one counter that cannot be stored");
    }

    proptest! {
        /// The window against a model: a set of everything accepted and the
        /// highest counter. Accepted exactly when unseen and within WINDOW of
        /// the highest (or above it).
        #[test]
        fn matches_a_model(counters in proptest::collection::vec(0u64..6000, 1..600)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut highest: Option<u64> = None;
            for c in counters {
                let fresh = !seen.contains(&c)
                    && highest.is_none_or(|h| c > h || h - c < WINDOW);
                prop_assert_eq!(w.accept(c), fresh, "counter {} highest {:?}", c, highest);
                if fresh {
                    seen.insert(c);
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                }
            }
        }
    }
}
