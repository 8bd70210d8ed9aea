//! The host's network as the client changes it, beyond the TUN device:
//! which routes it wants (`plan.rs`), the routes and routing table as the
//! `ip` tool sees them (`routes.rs`), DNS (`dns.rs`), the journal of every
//! change, undone after a crash (`journal.rs`), the watch for network
//! changes that makes a roaming client reconnect (`watch.rs`), and the
//! whole put together for a running client (`system.rs`).

pub mod dns;
pub mod journal;
pub mod plan;
pub mod routes;
pub mod system;
pub mod watch;
