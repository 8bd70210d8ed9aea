//! Admission of new connections before any TLS work: a token bucket of new
//! connections per source address, and a cap on each source's handshakes in
//! flight, so one flooding host cannot use up the server's handshake slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::refusal::RefusalReason;

/// Limits per source address.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// New connections per second, sustained.
    pub rate: f64,
    /// New connections allowed in a burst.
    pub burst: f64,
    /// Handshakes in progress at once.
    pub in_flight: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    tokens: f64,
    last: Instant,
    in_flight: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The source opens connections faster than its rate.
    Rate,
    /// The source has too many handshakes in progress.
    InFlight,
}

impl From<Reject> for RefusalReason {
    fn from(reject: Reject) -> Self {
        match reject {
            Reject::Rate => RefusalReason::RateLimited,
            Reject::InFlight => RefusalReason::SourceHandshakes,
        }
    }
}

/// Keep at most this many idle sources before forgetting the full ones.
const MAX_TRACKED: usize = 65_536;

/// The per-source state of all recent sources.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    sources: Arc<Mutex<HashMap<IpAddr, Source>>>,
}

/// Held while a handshake runs; frees the source's slot when dropped.
#[derive(Debug)]
pub struct Ticket {
    ip: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, Source>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&self.ip) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Admission with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sources: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits a connection from `ip` at `now`, or says why not.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Ticket, Reject> {
        let l = self.limits;
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, s| {
                s.in_flight > 0
                    || s.tokens + now.duration_since(s.last).as_secs_f64() * l.rate < l.burst
            });
        }
        let s = map.entry(ip).or_insert(Source {
            tokens: l.burst,
            last: now,
            in_flight: 0,
        });
        s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * l.rate).min(l.burst);
        s.last = now;
        if s.in_flight >= l.in_flight {
            return Err(Reject::InFlight);
        }
        if s.tokens < 1.0 {
            return Err(Reject::Rate);
        }
        s.tokens -= 1.0;
        s.in_flight += 1;
        Ok(Ticket {
            ip,
            sources: self.sources.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn adm(rate: f64, burst: f64, in_flight: u32) -> Admission {
        Admission::new(Limits {
            rate,
            burst,
            in_flight,
        })
    }

    #[test]
    fn burst_then_rate() {
        let a = adm(2.0, 3.0, 100);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let t0 = Instant::now();
        let held: Vec<_> = (0..3).map(|_| a.admit(ip, t0).unwrap()).collect();
        assert_eq!(a.admit(ip, t0).unwrap_err(), Reject::Rate);
        // Half a second at 2/s refills one token.
        assert!(a.admit(ip, t0 + Duration::from_millis(500)).is_ok());
        drop(held);
    }

    #[test]
    fn sources_are_independent() {
        let a = adm(1.0, 1.0, 100);
        let t0 = Instant::now();
        let _x = a.admit("198.18.0.1".parse().unwrap(), t0).unwrap();
        assert!(a.admit("198.18.0.1".parse().unwrap(), t0).is_err());
        assert!(a.admit("198.18.0.2".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn in_flight_slots_free_when_tickets_drop() {
        let a = adm(1000.0, 1000.0, 2);
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let t0 = Instant::now();
        let one = a.admit(ip, t0).unwrap();
        let _two = a.admit(ip, t0).unwrap();
        assert_eq!(a.admit(ip, t0).unwrap_err(), Reject::InFlight);
        drop(one);
        assert!(a.admit(ip, t0).is_ok());
    }
}
