//! twoway-client: the VPN client library behind the `twoway` binary.

pub mod changes;
pub mod cli;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod detach;
pub mod dns;
pub mod error;
pub mod expiry;
pub mod hooks;
pub mod list;
pub mod netconf;
pub mod privilege;
pub mod reconnect;
pub mod request;
pub mod roam;
pub mod routeplan;
pub mod routing;
pub mod servers;
pub mod status;
pub mod up;
pub mod update;
