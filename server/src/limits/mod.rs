//! The limits a connection meets before it is a session: new connections
//! and handshakes in flight per source address ([`admission`]), and the cap on
//! handshakes in progress across all sources ([`handshakes`]). The session
//! limit (`limits.max_sessions`) is held with the session slots in
//! [`crate::registry`], where the claim and the count are one step.

pub mod admission;
pub mod handshakes;
