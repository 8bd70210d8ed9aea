//! The UDP data channel beside the TLS connection: keys exported from the
//! TLS session ([`keys`]), the datagram format ([`datagram`]) with its
//! replay window ([`replay`]), the offloading socket ([`socket`]) and the
//! shared state of one session's path ([`path`]). The TLS connection keeps
//! authentication, assignment and control; data moves here when UDP gets
//! through. docs/PROTOCOL.md describes the wire format.

pub mod datagram;
pub mod inbox;
pub mod keys;
pub mod path;
pub mod replay;
pub mod socket;

pub use datagram::{Kind, Receiver, Sender};
pub use keys::{Role, UdpSecret, EXPORT_LEN};
pub use path::UdpPath;
pub use socket::{RecvBatch, RecvPool, UdpSocket};
