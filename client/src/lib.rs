//! twoway-client: the VPN client library behind the `twoway` binary.

pub mod cli;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod daemon;
pub mod detach;
pub mod error;
pub mod expiry;
#[cfg(test)]
mod fixtures;
pub mod hooks;
pub mod host;
pub mod list;
pub mod privilege;
pub mod reconnect;
pub mod request;
pub mod session;
pub mod status;
pub mod tunnel;
pub mod up;
pub mod update;
