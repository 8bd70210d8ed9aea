//! Dropping root after setup: once the TUN device, the listening socket and
//! the control socket exist, the server needs no privilege at all.

use std::path::Path;

use nix::unistd::{chown, setgid, setgroups, setuid, Gid, Uid, User};

/// The server lacks CAP_NET_ADMIN, which its TUN device needs (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error(
    "CAP_NET_ADMIN is needed to create the TUN device ({}, e.g. with the twoway-server systemd unit)",
    twoway_common::capability::NET_ADMIN_HINT
)]
pub struct NoNetAdmin;

/// `Err(NoNetAdmin)` if the effective capabilities lack CAP_NET_ADMIN; when
/// they cannot be read (no /proc), creating the device will tell instead.
pub fn check_net_admin() -> Result<(), NoNetAdmin> {
    match twoway_common::capability::net_admin() {
        Some(false) => Err(NoNetAdmin),
        _ => Ok(()),
    }
}

/// Why the switch to `user` failed.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// `user` is set but the server did not start as root (exit code 5).
    #[error("`user = {0:?}` needs the server to start as root (under systemd, use User= instead)")]
    NotRoot(String),
    /// No such user.
    #[error("no such user {0:?} (key `user`)")]
    NoUser(String),
    /// Preparing the state folder failed.
    #[error("{what}")]
    Folder {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A system call of the switch failed.
    #[error("{what}")]
    System {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: nix::Error,
    },
    /// The switch reported success but the process still runs as before.
    #[error("privilege drop to {0:?} did not take effect")]
    NotTaken(String),
}

/// Switches the whole process to `name` (user and primary group), after
/// giving it the state folder. Every capability is lost with root, and
/// no-new-privileges keeps set-uid programs from giving any back.
pub fn drop_to(name: &str, state_dir: &Path) -> Result<(), DropError> {
    let system = |what: &str| {
        let what = what.to_owned();
        move |source| DropError::System { what, source }
    };
    if !Uid::effective().is_root() {
        return Err(DropError::NotRoot(name.to_owned()));
    }
    let user = User::from_name(name)
        .map_err(system(&format!("looking up user {name:?}")))?
        .ok_or_else(|| DropError::NoUser(name.to_owned()))?;
    std::fs::create_dir_all(state_dir).map_err(|source| DropError::Folder {
        what: format!("creating {}", state_dir.display()),
        source,
    })?;
    chown(state_dir, Some(user.uid), Some(user.gid))
        .map_err(system(&format!("giving {} to {name}", state_dir.display())))?;
    setgroups(&[user.gid]).map_err(system("setgroups"))?;
    setgid(user.gid).map_err(system("setgid"))?;
    // glibc applies setuid to every thread of the process.
    setuid(user.uid).map_err(system("setuid"))?;
    if Uid::effective().is_root() || Gid::effective().as_raw() != user.gid.as_raw() {
        return Err(DropError::NotTaken(name.to_owned()));
    }
    nix::sys::prctl::set_no_new_privs().map_err(system("no-new-privileges"))?;
    tracing::info!(user = name, "dropped root privileges");
    Ok(())
}
