//! twoway-server: the VPN server library behind the `twoway-server` binary.

pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod failure;
pub mod filter;
pub mod leases;
pub mod limits;
pub mod loaded;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod pool;
pub mod privilege;
pub mod refusal;
pub mod registry;
pub mod revocation;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;
pub mod udp;
