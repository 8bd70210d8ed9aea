//! Test harness for twoway: locating the real binaries, a network-namespace
//! lab, and helpers to run commands and wait for conditions.
//!
//! The network-namespace tests need root. Outside CI they skip with a message
//! when run unprivileged; under CI (`CI=true`) they must run, so they fail.

pub mod bins;
pub mod cut;
pub mod etcd;
pub mod flood;
pub mod forge;
pub mod lab;
pub mod load;
pub mod loopback;
pub mod netstate;
pub mod proc;
pub mod toml_files;
pub mod vpn;
pub mod wait;

pub use bins::{bins, workspace_root, Bins};
pub use lab::{Lab, ProcHandle, Stopped};
pub use netstate::{IfAddr, Route};
pub use proc::CmdOutput;
pub use wait::{eventually, in_netns, tcp_connects, wait_for, wait_for_tcp, wait_until};

/// A new temporary folder whose name starts with `prefix`, removed when
/// dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

/// Whether we are running under CI (`CI=true`, as GitHub Actions and .ci/run set).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// True if the test may go on (we are root). Otherwise: under CI, panic (the
/// network-namespace tests must run there); elsewhere, say why the test is
/// skipped and return false.
pub fn require_root_or_skip(test_name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!(
            "{test_name}: needs root (network namespaces, veth and TUN devices), \
             and CI=true says it must run; run the tests as root"
        );
    }
    eprintln!(
        "SKIPPED {test_name}: it needs root to create network namespaces, veth pairs \
         and TUN devices; run `sudo -E cargo test -p twoway-tests` to include it"
    );
    false
}
