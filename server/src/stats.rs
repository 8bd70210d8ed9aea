//! Server-wide counters: connection outcomes and the traffic of sessions that
//! have ended (live sessions are summed from the registry when read).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use twoway_common::relay::{Counters, DropReason};

use crate::refusal::RefusalReason;

/// Connection outcomes and totals.
#[derive(Debug, Default)]
pub struct Stats {
    /// Completed mutual-TLS handshakes that became sessions.
    pub sessions_started: AtomicU64,
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    /// Traffic of sessions that have ended.
    pub closed: Counters,
}

impl Stats {
    /// Counts a connection that did not become a session, by reason.
    pub fn refused(&self, reason: RefusalReason) {
        let mut map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(reason.label()).or_default() += 1;
    }

    /// Refusals so far, by reason label.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Folds an ended session's counters into the totals.
    pub fn session_ended(&self, c: &Counters) {
        let add = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.closed.rx_bytes, &c.rx_bytes);
        add(&self.closed.rx_packets, &c.rx_packets);
        add(&self.closed.tx_bytes, &c.tx_bytes);
        add(&self.closed.tx_packets, &c.tx_packets);
        for r in DropReason::ALL {
            self.closed.drop_n(r, c.dropped(r));
        }
    }
}
