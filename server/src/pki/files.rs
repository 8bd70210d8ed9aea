//! How the PKI touches the file system: private keys are created 0600 and
//! never silently replaced, everything else is replaced atomically, and the
//! folders it creates are 0700 because they hold private keys.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use twoway_common::atomic_file::{write_atomic, write_new_atomic};

use super::error::PkiError;

/// Mode of private key files.
const KEY_MODE: u32 = 0o600;
/// Mode of certificates, the CRL and configuration files.
const PUBLIC_MODE: u32 = 0o644;
/// Mode of folders this module creates (they hold private keys).
const DIR_MODE: u32 = 0o700;

/// Whether anything (even a dangling symlink) is at `path`.
pub(crate) fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Creates `dir` (and its parents) with mode 0700 if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    match dir.metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(PkiError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a folder",
            ),
        )),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| PkiError::io(dir, e)),
    }
}

/// Whether `a` and `b` are the same folder.
pub(crate) fn same_dir(a: &Path, b: &Path) -> Result<bool, PkiError> {
    let a = a.canonicalize().map_err(|e| PkiError::io(a, e))?;
    let b = b.canonicalize().map_err(|e| PkiError::io(b, e))?;
    Ok(a == b)
}

/// Writes a private key, or a one-file profile holding one (0600): a new
/// file, or with `replace` over the key of an earlier certificate; atomic
/// either way.
pub(crate) fn put_key(
    written: &mut Vec<PathBuf>,
    path: &Path,
    pem: &str,
    replace: bool,
) -> Result<(), PkiError> {
    let result = if replace {
        write_atomic(path, pem.as_bytes(), KEY_MODE)
    } else {
        write_new_atomic(path, pem.as_bytes(), KEY_MODE)
    };
    result.map_err(|e| PkiError::io(path, e))?;
    written.push(path.to_path_buf());
    Ok(())
}

/// Writes a certificate, CRL or configuration file (0644) atomically.
pub(crate) fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    write_atomic(path, text.as_bytes(), PUBLIC_MODE).map_err(|e| PkiError::io(path, e))
}

/// [`write_public`], and records `path` in `written`.
pub(crate) fn put_public(
    written: &mut Vec<PathBuf>,
    path: &Path,
    text: &str,
) -> Result<(), PkiError> {
    write_public(path, text)?;
    written.push(path.to_path_buf());
    Ok(())
}
