//! The host's network as the client changes it, beyond the TUN device:
//! which routes it wants (`plan.rs`), the routes and routing table as the
//! `ip` tool sees them (`routes.rs`), DNS (`dns.rs`), the journal of every
//! change, undone after a crash (`journal.rs`), the watch for network
//! changes that makes a roaming client reconnect (`watch.rs`), the tools
//! run as child processes (`tool.rs`), and all of it put together for a
//! running client (`system.rs`).
//!
//! The session loop sees only [`HostNetwork`], so tests run it without root
//! against an implementation that records what it was asked to do.

use std::future::Future;
use std::net::IpAddr;

use twoway_common::message::Assignment;

pub mod dns;
pub mod journal;
pub mod plan;
pub mod routes;
pub mod system;
pub mod tool;
pub mod watch;

pub use dns::DnsMethod;
pub use tool::HostError;

/// Whether a device's routes or DNS are put in force for the first time
/// (logged as such) or changed on a live device (the caller logs the change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new device (first connection, or a new address or MTU).
    New,
    /// The same device with a changed grant (an Update, or a reconnect).
    Update,
}

/// What [`HostNetwork::refresh`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The connection's path is as it was.
    Same,
    /// The path to the server is gone or different, or the connection's
    /// local address disappeared: the connection is dead or soon will be.
    Moved(String),
}

/// The host's routes and DNS as the session loop changes them, and the
/// network changes it watches for. Every change is undone by [`undo`](Self::undo).
pub trait HostNetwork: Send {
    /// A connection from `local` is up: remember the path it uses.
    fn connected(&mut self, local: IpAddr) -> impl Future<Output = ()> + Send;
    /// The connection is gone (reconnecting).
    fn disconnected(&mut self);
    /// Puts the routes of `assignment` on device `dev` in force.
    fn routes(
        &mut self,
        dev: &str,
        assignment: &Assignment,
        change: Change,
    ) -> impl Future<Output = Result<(), HostError>> + Send;
    /// Puts the DNS of `assignment` on device `dev` in force, as the config allows.
    fn dns(
        &mut self,
        dev: &str,
        assignment: &Assignment,
        change: Change,
    ) -> impl Future<Output = DnsMethod> + Send;
    /// Returns when the host's network may have changed (cancel-safe).
    fn watch(&mut self) -> impl Future<Output = ()> + Send;
    /// Looks at the network again after [`watch`](Self::watch): re-plans
    /// routes and says whether the connection has to be replaced.
    fn refresh(&mut self) -> impl Future<Output = Refresh> + Send;
    /// Undoes every change made.
    fn undo(&mut self) -> impl Future<Output = ()> + Send;
}
