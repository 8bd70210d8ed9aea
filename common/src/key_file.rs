//! Reading a private key file, and the one rule on its mode that both sides
//! and `twoway-server check` apply: no access at all for other users, and
//! from the file's group at most read access (the systemd units read their
//! key through the group `twoway`, OPERATIONS.md). A key that breaks the rule
//! is refused with the exact `chmod` that fixes it, before a byte is read.
//! A one-file client profile with the key inside (`[tls] key_pem`) has a
//! stricter rule of its own ([`check_profile_mode`]): owner only.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode bits a private key file must not have: group write and execute, and
/// anything for other users. Group read is allowed (the units' group).
const FORBIDDEN: u32 = 0o037;

/// A private key file whose mode lets other users at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "private key {} is {} other users (mode {:04o}); run: chmod {:o} {}",
    path.display(),
    if mode & 0o004 != 0 { "readable by" } else { "open to" },
    mode,
    fix,
    path.display()
)]
pub struct ExposedKey {
    /// The key file.
    pub path: PathBuf,
    /// Its permission bits (`& 0o7777`).
    pub mode: u32,
    /// The mode that fixes it: 600, or 640 if the group could read it.
    pub fix: u32,
}

/// Mode bits a one-file profile holding a private key (`[tls] key_pem`) must
/// not have: any access at all for the group and other users. Stricter than
/// [`FORBIDDEN`]: a profile is read by its owner (root, or the user the
/// twoway@ unit runs as, who owns it), while the group `twoway` is the
/// group whose members may read tunnel status, and must not get the key.
const FORBIDDEN_PROFILE: u32 = 0o077;

/// A one-file profile that holds a private key and that other users can open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} holds a private key (key `tls.key_pem`) and is {} (mode {:04o}); run: chmod 600 {}",
    path.display(),
    if mode & 0o004 != 0 { "readable by other users" }
    else if mode & 0o040 != 0 { "readable by its group" }
    else { "open to other users" },
    mode,
    path.display()
)]
pub struct ExposedProfile {
    /// The profile file.
    pub path: PathBuf,
    /// Its permission bits (`& 0o7777`).
    pub mode: u32,
}

/// `Err` if a profile with permission bits `mode` that holds a private key
/// is open to anyone but its owner.
pub fn check_profile_mode(path: &Path, mode: u32) -> Result<(), ExposedProfile> {
    let mode = mode & 0o7777;
    if mode & FORBIDDEN_PROFILE == 0 {
        return Ok(());
    }
    Err(ExposedProfile {
        path: path.to_owned(),
        mode,
    })
}

/// Why a private key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The file is open to other users.
    #[error(transparent)]
    Exposed(#[from] ExposedKey),
}

/// `Err` if a key file with permission bits `mode` is open to other users.
pub fn check_mode(path: &Path, mode: u32) -> Result<(), ExposedKey> {
    let mode = mode & 0o7777;
    if mode & FORBIDDEN == 0 {
        return Ok(());
    }
    let fix = if mode & 0o040 != 0 { 0o640 } else { 0o600 };
    Err(ExposedKey {
        path: path.to_owned(),
        mode,
        fix,
    })
}

/// Reads the private key file at `path`, after checking the mode of the
/// very file opened (no window in which it could be swapped).
pub fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check_mode(path, meta.permissions().mode())?;
    let mut pem = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20));
    file.read_to_end(&mut pem).map_err(read_err)?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};

    fn key_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("k{mode:o}.key"));
        fs::write(&path, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn owner_only_and_group_read_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o400, 0o600, 0o440, 0o640] {
            let path = key_with_mode(dir.path(), mode);
            let pem = read(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
            assert!(pem.starts_with(b"-----BEGIN"), "{mode:o}");
        }
    }

    #[test]
    fn world_readable_key_is_refused_with_the_chmod_that_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_with_mode(dir.path(), 0o644);
        let Err(KeyFileError::Exposed(e)) = read(&path) else {
            panic!("a 0644 key must be refused");
        };
        assert_eq!((e.mode, e.fix), (0o644, 0o640));
        let p = path.display();
        assert_eq!(
            e.to_string(),
            format!("private key {p} is readable by other users (mode 0644); run: chmod 640 {p}")
        );
        // The suggested command does fix it.
        fs::set_permissions(&path, Permissions::from_mode(e.fix)).unwrap();
        assert!(read(&path).is_ok());
    }

    #[test]
    fn every_other_bit_and_group_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, fix) in [
            (0o604, 0o600),
            (0o602, 0o600),
            (0o601, 0o600),
            (0o620, 0o600),
            (0o610, 0o600),
            (0o660, 0o640),
            (0o666, 0o640),
            (0o777, 0o640),
        ] {
            let path = key_with_mode(dir.path(), mode);
            match read(&path) {
                Err(KeyFileError::Exposed(e)) => assert_eq!(e.fix, fix, "{mode:o}"),
                other => panic!("mode {mode:o} must be refused, got {other:?}"),
            }
        }
        let e = check_mode(Path::new("/k"), 0o602).unwrap_err();
        assert_eq!(
            e.to_string(),
            "private key /k is open to other users (mode 0602); run: chmod 600 /k"
        );
    }

    #[test]
    fn a_profile_with_a_key_is_for_its_owner_only() {
        let p = Path::new("/etc/twoway/alice.toml");
        for mode in [0o600, 0o400, 0o100600] {
            assert_eq!(check_profile_mode(p, mode), Ok(()), "{mode:o}");
        }
        for (mode, says) in [
            (0o640, "readable by its group"),
            (0o644, "readable by other users"),
            (0o604, "readable by other users"),
            (0o620, "open to other users"),
            (0o601, "open to other users"),
        ] {
            let e = check_profile_mode(p, mode).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "/etc/twoway/alice.toml holds a private key (key `tls.key_pem`) and is \
                     {says} (mode {mode:04o}); run: chmod 600 /etc/twoway/alice.toml"
                ),
            );
        }
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let (_dir, path) = crate::temp_path::temp_path("missing.key");
        let e = read(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.key"), "{e}");
    }
}
