//! The limits a connection meets before it is a session: new connections
//! and handshakes in flight per source address ([`admission`]), and the cap on
//! handshakes in progress across all sources ([`handshakes`]). The session
//! limit (`limits.max_sessions`) is held with the session slots in
//! [`crate::registry`], where the claim and the count are one step.

pub mod admission;
pub mod handshakes;

use std::net::IpAddr;
use std::time::Instant;

use crate::config::LimitsSection;
use crate::refusal::RefusalReason;

/// The limits on connections before they are sessions.
#[derive(Debug)]
pub struct Limits {
    admission: admission::Admission,
    handshakes: handshakes::Handshakes,
}

/// A connection let in: its source's ticket and its place among the
/// handshakes, both given back when this is dropped (the handshake is over).
#[derive(Debug)]
pub struct Admitted {
    _ticket: admission::Ticket,
    /// Its place among the handshakes in progress.
    pub handshake: handshakes::Slot,
}

impl Limits {
    /// The limits of `[limits]`.
    pub fn new(l: &LimitsSection) -> Self {
        Self {
            admission: admission::Admission::new(admission::Limits {
                rate: f64::from(l.connections_per_source_per_sec),
                burst: f64::from(l.connection_burst_per_source),
                in_flight: l.handshakes_per_source,
            }),
            handshakes: handshakes::Handshakes::new(l.max_handshakes),
        }
    }

    /// Lets a connection from `ip` in at `now`, or says why not: first its
    /// source's rate and handshakes, then a place among all handshakes.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<Admitted, RefusalReason> {
        let ticket = self.admission.admit(ip, now)?;
        let handshake = self
            .handshakes
            .start(now)
            .ok_or(RefusalReason::TooManyHandshakes)?;
        Ok(Admitted {
            _ticket: ticket,
            handshake,
        })
    }
}
