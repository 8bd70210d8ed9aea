//! The outside of the tunnel, one folder per transport: the TLS connection
//! over TCP ([`tcp`]), which always carries authentication, the assignment
//! and control, and data when UDP does not get through; and the UDP data
//! channel keyed from it ([`udp`]).

pub mod tcp;
pub mod udp;
