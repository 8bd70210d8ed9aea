//! twoway-common: what the client and the server share, along the packet's
//! path: the inside (TUN device, [`inside`]), the relay between it and the
//! outside ([`relay`], fed by [`queue`]), the outside ([`outside`]: the TLS
//! connection over TCP with its record layer, and the UDP data channel); the
//! session's control messages ([`message`]), TLS setup and certificate
//! verification ([`tls`]), the client's identity ([`identity`]); and the
//! local control socket with its typed requests and status ([`control`]).

pub mod atomic_file;
pub mod capability;
pub mod config_file;
pub mod control;
#[cfg(any(test, feature = "test-util"))]
pub mod eventually;
pub mod hook;
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
#[cfg(any(test, feature = "test-util"))]
pub mod temp_path;
pub mod tls;
pub mod tuning;
