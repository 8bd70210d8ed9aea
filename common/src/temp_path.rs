//! A path in a new temporary folder, for tests that write files (feature
//! `test-util`).

use std::path::PathBuf;

/// The path `name` in a new temporary folder (nothing is there yet); the
/// folder goes when the returned [`tempfile::TempDir`] is dropped.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join(name);
    (dir, path)
}
