//! twoway-client: the VPN client library behind the `twoway` binary.

pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod hooks;
pub mod netconf;
pub mod status;
pub mod up;
