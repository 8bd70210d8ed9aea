//! The lease file in the state folder: pool leases that survive restarts.
//! Written atomically; a corrupt file is set aside and reported, never
//! silently emptied.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use twoway_common::atomic_file::write_atomic;

use crate::pool::Lease;

/// File name inside the state folder.
pub const LEASE_FILE: &str = "leases.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    leases: BTreeMap<String, Lease>,
}

/// What loading found.
#[derive(Debug)]
pub struct Loaded {
    /// The leases (empty if there was no file or it was corrupt).
    pub leases: BTreeMap<String, Lease>,
    /// Where a corrupt file was moved, with the parse error.
    pub set_aside: Option<(PathBuf, String)>,
}

/// The lease file of one state folder.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    path: PathBuf,
}

impl LeaseStore {
    /// The store in `state_dir` (created on first save).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(LEASE_FILE),
        }
    }

    /// The lease file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the leases. A missing file is an empty set; a corrupt one is
    /// renamed to `leases.json.corrupt-<unix time>` and reported.
    pub fn load(&self, now: u64) -> io::Result<Loaded> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    leases: BTreeMap::new(),
                    set_aside: None,
                })
            }
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<LeaseFile>(&text) {
            Ok(file) if file.version == VERSION => Ok(Loaded {
                leases: file.leases,
                set_aside: None,
            }),
            other => {
                let reason = match other {
                    Ok(file) => format!("unsupported version {}", file.version),
                    Err(e) => e.to_string(),
                };
                let aside = self.path.with_extension(format!("json.corrupt-{now}"));
                std::fs::rename(&self.path, &aside)?;
                Ok(Loaded {
                    leases: BTreeMap::new(),
                    set_aside: Some((aside, reason)),
                })
            }
        }
    }

    /// Replaces the file with `leases` (write, fsync, rename).
    pub fn save(&self, leases: &BTreeMap<String, Lease>) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = LeaseFile {
            version: VERSION,
            leases: leases.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        write_atomic(&self.path, &text, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(&dir.path().join("state"));
        assert!(store.load(1).unwrap().leases.is_empty());
        let mut leases = BTreeMap::new();
        leases.insert(
            "bob".to_string(),
            Lease {
                address: "10.77.0.128".parse().unwrap(),
                last_used: 5,
            },
        );
        store.save(&leases).unwrap();
        assert_eq!(store.load(2).unwrap().leases, leases);
    }

    #[test]
    fn corrupt_file_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        std::fs::write(store.path(), b"{\"version\":1,\"leases\":{\"bob\":").unwrap();
        let loaded = store.load(42).unwrap();
        assert!(loaded.leases.is_empty());
        let (aside, _why) = loaded.set_aside.unwrap();
        assert_eq!(aside, dir.path().join("leases.json.corrupt-42"));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            b"{\"version\":1,\"leases\":{\"bob\":"
        );
        assert!(!store.path().exists());
    }
}
