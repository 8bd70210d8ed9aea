//! Dropping root after setup: once the TUN device, the listening socket and
//! the control socket exist, the server needs no privilege at all.

use std::path::Path;

use anyhow::{bail, Context};
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

/// `user` is set but the server did not start as root (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("`user = {0:?}` needs the server to start as root (under systemd, use User= instead)")]
pub struct NotRoot(pub String);

/// Switches the whole process to `name` (user and primary group), after
/// giving it the state folder. Every capability is lost with root, and
/// no-new-privileges keeps set-uid programs from giving any back.
pub fn drop_to(name: &str, state_dir: &Path) -> anyhow::Result<()> {
    if !Uid::effective().is_root() {
        return Err(NotRoot(name.to_owned()).into());
    }
    let user = User::from_name(name)
        .with_context(|| format!("looking up user {name:?}"))?
        .with_context(|| format!("no such user {name:?} (key `user`)"))?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    chown(state_dir, Some(user.uid), Some(user.gid))
        .with_context(|| format!("giving {} to {name}", state_dir.display()))?;
    setgroups(&[user.gid]).context("setgroups")?;
    setgid(user.gid).context("setgid")?;
    // glibc applies setuid to every thread of the process.
    setuid(user.uid).context("setuid")?;
    if Uid::effective().is_root() || Gid::effective().as_raw() != user.gid.as_raw() {
        bail!("privilege drop to {name:?} did not take effect");
    }
    nix::sys::prctl::set_no_new_privs().context("no-new-privileges")?;
    tracing::info!(user = name, "dropped root privileges");
    Ok(())
}
