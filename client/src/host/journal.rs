//! Every change the client makes to the host's network configuration beyond
//! the TUN device itself: routes, the DNS of systemd-resolved, a managed
//! resolv.conf. Each change is recorded in a state file next to the control
//! socket (written atomically) before and after it is made, and undone on
//! down, on exit, and, after a crash, on the next start. The tools run
//! through `tool.rs`; undoing is an explicit async step ([`HostChanges::undo`]):
//! a journal dropped without it (a panic) stays on disk like a crash's, for
//! the next start or `twoway down`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::host::dns::{self, ResolvConfBackup};
use crate::host::routes::{self, RouteAction, RouteSpec, Snapshot};
use crate::host::tool::{self, HostError};

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The process that made the changes.
    pub pid: u32,
    /// Routes installed (or being installed).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// A resolv.conf replaced by twoway, with what to put back.
    pub resolv_conf: Option<ResolvConfBackup>,
    /// The link whose systemd-resolved DNS twoway set.
    pub resolved_link: Option<String>,
}

impl Recorded {
    fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.resolv_conf.is_none() && self.resolved_link.is_none()
    }
}

/// The state file of a client whose control socket is `socket`.
pub fn state_path(socket: &Path) -> PathBuf {
    socket.with_extension("state")
}

/// The host changes of one running client.
#[derive(Debug)]
pub struct HostChanges {
    path: PathBuf,
    rec: Recorded,
}

impl HostChanges {
    /// Undoes what a client that did not stop cleanly left in `path`, then
    /// starts an empty record there. Returns whether there was anything.
    pub async fn recover(path: &Path) -> (Self, bool) {
        let stale = cleanup_stale(path).await;
        let rec = Recorded {
            pid: std::process::id(),
            ..Recorded::default()
        };
        (
            Self {
                path: path.to_owned(),
                rec,
            },
            stale,
        )
    }

    fn save(&self) {
        let result = if self.rec.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            serde_json::to_vec_pretty(&self.rec)
                .map_err(std::io::Error::other)
                .and_then(|b| twoway_common::atomic_file::write_atomic(&self.path, &b, 0o600))
        };
        if let Err(e) = result {
            warn!(file = %self.path.display(), error = %e,
                "cannot record network changes; a crash would leave them behind");
        }
    }

    /// Makes the installed routes `desired`: adds, in order, those the kernel
    /// does not have (per `snapshot`), then removes ours that are no longer
    /// wanted. Stops at the first route that cannot be added.
    pub async fn sync_routes(
        &mut self,
        desired: &[RouteSpec],
        snapshot: &Snapshot,
    ) -> Result<(), HostError> {
        let stale: Vec<RouteSpec> = self
            .rec
            .routes
            .iter()
            .filter(|r| !desired.contains(r))
            .cloned()
            .collect();
        let missing: Vec<&RouteSpec> = desired
            .iter()
            .filter(|spec| !snapshot.routes.iter().any(|k| k.matches(spec)))
            .collect();
        if missing.is_empty() && stale.is_empty() && self.rec.routes == desired {
            return Ok(());
        }
        // Record first: a crash in between must still find everything.
        let mut all = self.rec.routes.clone();
        all.extend(
            desired
                .iter()
                .filter(|r| !all.contains(r))
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.rec.routes = all;
        self.save();
        for spec in missing {
            debug!(route = ?spec.to_string(), "adding route");
            tool::ip(&routes::route_args(RouteAction::Replace, spec)).await?;
        }
        for spec in stale.iter().rev() {
            remove_route(spec).await;
        }
        self.rec.routes = desired.to_vec();
        self.save();
        Ok(())
    }

    /// Sets DNS on `dev` through systemd-resolved.
    pub async fn set_resolved(
        &mut self,
        commands: &[Vec<String>],
        dev: &str,
    ) -> Result<(), HostError> {
        self.rec.resolved_link = Some(dev.to_owned());
        self.save();
        for c in commands {
            tool::resolvectl(c).await?;
        }
        Ok(())
    }

    /// Writes `contents` to the resolv.conf at `path`, backing up the
    /// original the first time.
    pub fn set_resolv_conf(&mut self, path: &Path, contents: &str) -> std::io::Result<()> {
        let mut backup = match self.rec.resolv_conf.take() {
            Some(b) if b.path == path => b,
            other => {
                if let Some(old) = other {
                    restore_resolv_conf(&old);
                }
                ResolvConfBackup::take(path)?
            }
        };
        // The backup is on disk before the file changes.
        backup.written = contents.to_owned();
        self.rec.resolv_conf = Some(backup.clone());
        self.save();
        let result = backup.write(contents);
        self.rec.resolv_conf = Some(backup);
        self.save();
        result
    }

    /// Undoes the DNS settings (the assignment no longer has any).
    pub async fn clear_dns(&mut self) {
        let dns_only = Recorded {
            resolv_conf: self.rec.resolv_conf.take(),
            resolved_link: self.rec.resolved_link.take(),
            ..Recorded::default()
        };
        undo(&dns_only).await;
        self.save();
    }

    /// Undoes every recorded change.
    pub async fn undo(&mut self) {
        undo(&std::mem::take(&mut self.rec)).await;
        self.save();
    }
}

impl Drop for HostChanges {
    /// Every way the session ends calls [`HostChanges::undo`]; what is left
    /// here comes from a panic unwinding it. Undone then all the same, on a
    /// thread of its own with a small runtime of its own (the caller's may be
    /// the one unwinding): blocking here is the price of leaving the host as
    /// it was. Should that fail too, the file stays for the next `up` or `down`.
    fn drop(&mut self) {
        if self.rec.is_empty() {
            return;
        }
        warn!(file = %self.path.display(), "network changes not undone by the session; undoing them now");
        let rec = std::mem::take(&mut self.rec);
        let undone = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(undo(&rec));
            Ok::<_, std::io::Error>(rec)
        })
        .join();
        match undone {
            Ok(Ok(_)) => self.save(),
            Ok(Err(e)) => warn!(error = %e, "cannot undo the network changes; the next `twoway up` or `twoway down` of this config undoes them"),
            Err(_) => warn!("undoing the network changes failed; the next `twoway up` or `twoway down` of this config undoes them"),
        }
    }
}

async fn remove_route(spec: &RouteSpec) {
    // A route on a removed device is gone already; a route the kernel
    // replaced no longer matches: both fail harmlessly.
    if let Err(e) = tool::ip(&routes::route_args(RouteAction::Delete, spec)).await {
        debug!(error = %e, "route removal");
    }
}

fn restore_resolv_conf(b: &ResolvConfBackup) {
    match b.restore() {
        Ok(()) => info!(file = %b.path.display(), "resolv.conf restored"),
        Err(e) => warn!(file = %b.path.display(), error = %e, "cannot restore resolv.conf"),
    }
}

async fn undo(rec: &Recorded) {
    if let Some(dev) = &rec.resolved_link {
        if let Err(e) = tool::resolvectl(&dns::resolvectl_revert(dev)).await {
            debug!(error = %e, "resolvectl revert");
        }
    }
    if let Some(b) = &rec.resolv_conf {
        restore_resolv_conf(b);
    }
    for spec in rec.routes.iter().rev() {
        remove_route(spec).await;
    }
}

/// Reads the state file at `path` if it is ours: a regular file (not a
/// symlink), owned by this process's user and readable by nobody else, as
/// [`HostChanges`] writes it. The folder may be writable by another user
/// (the units' runtime folder belongs to user twoway), and what the file
/// says is undone as root: a file planted there must not choose what root
/// rewrites or removes. `Ok(None)`: no file.
fn read_own(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let own = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() || meta.uid() != own || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "not a state file of ours (owner uid {}, mode {:o}; want uid {own}, 0600)",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut text)?;
    Ok(Some(text))
}

/// The process that wrote the state file at `path`, if there is one.
pub fn recorded_pid(path: &Path) -> Option<u32> {
    let text = read_own(path).ok()??;
    serde_json::from_slice::<Recorded>(&text)
        .ok()
        .map(|r| r.pid)
}

/// Whether process `pid` is running (a zombie is not).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Undoes what the state file at `path` records and removes it. Returns
/// whether there was a state file.
pub async fn cleanup_stale(path: &Path) -> bool {
    let text = match read_own(path) {
        Ok(Some(t)) => t,
        Ok(None) => return false,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "state file ignored and removed; nothing in it is undone");
            let _ = std::fs::remove_file(path);
            return true;
        }
    };
    match serde_json::from_slice::<Recorded>(&text) {
        Ok(rec) => {
            warn!(file = %path.display(), pid = rec.pid, routes = rec.routes.len(),
                "undoing the network changes of a client that did not stop cleanly");
            undo(&rec).await;
        }
        Err(e) => warn!(file = %path.display(), error = %e, "unreadable state file; removing it"),
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!(file = %path.display(), error = %e, "cannot remove the state file");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: the state file sits in a folder the units' user may
    /// write to, and what it says is undone as root. A symlink or a file
    /// others may read or write (so not one we wrote) is ignored.
    #[tokio::test]
    async fn a_state_file_not_ours_is_not_undone() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, resolv) = twoway_common::temp_path::temp_path("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
        let planted = serde_json::json!({
            "pid": 999_999_999u32,
            "resolv_conf": {"path": resolv, "written": "nameserver 192.0.2.53\n", "original": "owned\n"},
        });
        let state = dir.path().join("alice.state");
        std::fs::write(&state, planted.to_string()).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_own(&state).is_err(), "mode 0644");
        assert!(cleanup_stale(&state).await, "there was a file");
        assert!(!state.exists(), "removed");
        assert_eq!(
            std::fs::read_to_string(&resolv).unwrap(),
            "nameserver 192.0.2.53\n",
            "not undone"
        );
        // A symlink to a file that would pass is not followed.
        let real = dir.path().join("real.state");
        std::fs::write(&real, planted.to_string()).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &state).unwrap();
        assert!(read_own(&state).is_err(), "a symlink");
        assert!(read_own(&real).unwrap().is_some(), "the real one is ours");
    }

    #[tokio::test]
    async fn state_file_round_trip_and_stale_resolv_conf_restored() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_path(&dir.path().join("alice.sock"));
        assert_eq!(state, dir.path().join("alice.state"));
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
        let (mut changes, stale) = HostChanges::recover(&state).await;
        assert!(!stale);
        changes
            .set_resolv_conf(&resolv, "nameserver 10.99.0.53\n")
            .unwrap();
        let rec: Recorded = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(rec.pid, std::process::id());
        assert!(rec.resolv_conf.is_some());
        // A crash: the record stays, the next start puts the file back.
        std::mem::forget(changes);
        assert_eq!(
            std::fs::read_to_string(&resolv).unwrap(),
            "nameserver 10.99.0.53\n"
        );
        let (mut changes, stale) = HostChanges::recover(&state).await;
        assert!(stale);
        assert_eq!(
            std::fs::read_to_string(&resolv).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        assert!(!state.exists());
        changes.undo().await;
        assert!(!state.exists(), "nothing recorded, no file");
    }

    /// A session that unwinds (a panic) without its explicit undo: dropping
    /// the journal undoes what it recorded, from inside a runtime.
    #[tokio::test]
    async fn dropping_the_journal_undoes_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_path(&dir.path().join("bob.sock"));
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
        let (mut changes, _) = HostChanges::recover(&state).await;
        changes
            .set_resolv_conf(&resolv, "nameserver 10.99.0.53\n")
            .unwrap();
        assert!(state.exists());
        drop(changes);
        assert_eq!(
            std::fs::read_to_string(&resolv).unwrap(),
            "nameserver 192.0.2.1\n"
        );
        assert!(!state.exists(), "undone, so no record is left");
    }

    #[test]
    fn liveness_of_processes() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }
}
