//! twoway-common: what the client and the server share: the wire protocol
//! (framing and control messages), TLS setup, identity extraction, the inside
//! (TUN) device abstraction, the outside stream and the relay between them.

pub mod atomic_file;
pub mod capability;
pub mod config_file;
pub mod control;
pub mod identity;
pub mod inside;
pub mod ippacket;
pub mod key_file;
pub mod logging;
pub mod message;
pub mod offload;
pub mod outside;
pub mod pem_source;
pub mod priority;
pub mod queue;
pub mod relay;
pub mod tls;
pub mod tuning;
