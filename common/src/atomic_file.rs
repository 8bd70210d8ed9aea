//! Crash-safe file replacement: write a temporary file, fsync it, rename it over
//! the target, fsync the folder. A reader (or a restart after `kill -9`) sees
//! either the old content or the new, never a half-written file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents` atomically; the file gets permission `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path, "tmp")?;
    let result = (|| {
        write_new(&tmp, contents, mode)?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable only once the folder is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The folder of `path` and a fresh temporary name in it,
/// `.NAME.TAG.PID.RANDOM`. The caller creates it new (O_EXCL) and never
/// through a symlink: in a folder others may write to (the runtime folder of
/// a unit running as another user) a planted name must not make us write
/// elsewhere, and a random one cannot be planted ahead.
fn temp_beside(path: &Path, tag: &str) -> io::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{tag}.{}.{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        random_u64()?
    ));
    Ok((dir.to_path_buf(), tmp))
}

fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| io::Error::other("no random bytes"))?;
    Ok(u64::from_ne_bytes(b))
}

/// Creates a new file that must not exist yet, with permission `mode`, as
/// [`write_atomic`] does (temporary file, fsync, then published under its
/// name by a hard link, which fails if the name exists: never clobbers, and a
/// crash leaves no half-written file). For private keys. On a file system
/// without hard links it falls back to [`write_new`].
pub fn write_new_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
    }
    let (dir, tmp) = temp_beside(path, "new")?;
    let linked = write_new(&tmp, contents, mode).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links here (some FUSE or FAT mounts): create it in place.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EPERM | nix::libc::EOPNOTSUPP | nix::libc::EXDEV)
            ) =>
        {
            write_new(path, contents, mode)
        }
        Err(e) => Err(e),
    }
}

/// Creates a new file that must not exist yet, with permission `mode`, and
/// syncs it (for private keys: never clobber, never readable by others;
/// never through a symlink, as a temporary name must not be either).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_path::temp_path;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_sets_mode() {
        let (dir, path) = temp_path("leases.json");
        write_atomic(&path, b"old", 0o600).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_content() {
        let (_dir, path) = temp_path("state");
        write_atomic(&path, b"old", 0o600).unwrap();
        // A path whose parent is a file cannot be written: the old file stays.
        let bad = path.join("child");
        assert!(write_atomic(&bad, b"x", 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn write_new_atomic_publishes_whole_files_and_never_clobbers() {
        let (dir, path) = temp_path("alice.toml");
        write_new_atomic(&path, b"key", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"key");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = write_new_atomic(&path, b"other", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"key");
        // Only the file itself: no temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_new_refuses_existing() {
        let (_dir, path) = temp_path("ca.key");
        write_new(&path, b"k", 0o600).unwrap();
        assert!(write_new(&path, b"k2", 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"k");
    }
}
