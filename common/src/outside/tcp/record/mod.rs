//! The record layer of the TLS connection, from the bytes on the socket up:
//! TLS records sealed and opened by rustls ([`secure`]), the frames they
//! carry ([`frame`]), and frames gathered for one write ([`gather`]). These
//! parse a peer's bytes; fuzz/fuzz_targets (frame, secure_stream) exercise
//! them.

pub mod frame;
pub mod gather;
pub mod secure;
