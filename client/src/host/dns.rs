//! Pushed DNS servers and search domains: through systemd-resolved per link
//! when it runs, else into a resolv.conf the config asks twoway to manage
//! (backed up and restored), else left to the up hook (`TWOWAY_DNS`,
//! `TWOWAY_SEARCH`). Argument building and file contents are pure.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the pushed DNS was put in force; shown as `dns_method` in `status --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsMethod {
    /// The server pushed no DNS.
    None,
    /// Per-link DNS in systemd-resolved (`resolvectl`).
    Resolved,
    /// twoway wrote the configured resolv.conf (restored on down).
    ResolvConf,
    /// Handed to the up hook in `TWOWAY_DNS` and `TWOWAY_SEARCH`.
    Hook,
    /// Pushed, but nothing applied it (no resolved, no resolv.conf management, no hook).
    NotApplied,
}

impl DnsMethod {
    /// The name in `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Resolved => "systemd-resolved",
            Self::ResolvConf => "resolv.conf",
            Self::Hook => "hook",
            Self::NotApplied => "not-applied",
        }
    }
}

/// Where systemd-resolved keeps its runtime files while it runs.
pub const RESOLVED_RUNTIME_DIR: &str = "/run/systemd/resolve";

/// Whether systemd-resolved runs here: its runtime folder exists and `resolvectl` is installed.
pub fn resolved_running() -> bool {
    Path::new(RESOLVED_RUNTIME_DIR).is_dir() && find_in_path("resolvectl").is_some()
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// The `resolvectl` invocations that put `dns` and `search` on link `dev`.
/// A full tunnel takes every query (`~.` and default route); a split tunnel
/// only names under its search domains, unless it pushed none. Pure.
pub fn resolvectl_apply(
    dev: &str,
    dns: &[IpAddr],
    search: &[String],
    full_tunnel: bool,
) -> Vec<Vec<String>> {
    let mut servers = vec!["dns".to_owned(), dev.to_owned()];
    servers.extend(dns.iter().map(ToString::to_string));
    let mut domains = vec!["domain".to_owned(), dev.to_owned()];
    if full_tunnel {
        domains.push("~.".into());
    }
    domains.extend(search.iter().cloned());
    let default_route = full_tunnel || search.is_empty();
    vec![
        servers,
        domains,
        vec![
            "default-route".into(),
            dev.to_owned(),
            if default_route { "yes" } else { "no" }.into(),
        ],
    ]
}

/// The `resolvectl` invocation that drops everything set on `dev`. Pure.
pub fn resolvectl_revert(dev: &str) -> Vec<String> {
    vec!["revert".into(), dev.into()]
}

/// The resolv.conf twoway writes. Pure.
pub fn render_resolv_conf(dev: &str, dns: &[IpAddr], search: &[String]) -> String {
    let mut s =
        format!("# Written by twoway for {dev}; the previous file comes back on `twoway down`.\n");
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    s
}

/// What was in place before twoway wrote a resolv.conf, recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvConfBackup {
    /// The file twoway manages.
    pub path: PathBuf,
    /// It was a symbolic link to this target (e.g. systemd's stub).
    pub symlink: Option<PathBuf>,
    /// Its contents, if it was a regular file; `None` if it did not exist.
    pub original: Option<String>,
    /// What twoway wrote, to tell whether someone changed it since.
    pub written: String,
}

impl ResolvConfBackup {
    /// Reads what is at `path` now, to be restored later.
    pub fn take(path: &Path) -> std::io::Result<Self> {
        let symlink = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Some(std::fs::read_link(path)?),
            _ => None,
        };
        let original = match (&symlink, std::fs::read_to_string(path)) {
            (Some(_), _) => None,
            (None, Ok(text)) => Some(text),
            (None, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            (None, Err(e)) => return Err(e),
        };
        Ok(Self {
            path: path.to_owned(),
            symlink,
            original,
            written: String::new(),
        })
    }

    /// Writes `contents` in place of the file (replacing a symbolic link).
    pub fn write(&mut self, contents: &str) -> std::io::Result<()> {
        write_readable(&self.path, contents)?;
        self.written = contents.to_owned();
        Ok(())
    }

    /// Puts the previous file back, unless someone else rewrote it meanwhile.
    pub fn restore(&self) -> std::io::Result<()> {
        let now = std::fs::read_to_string(&self.path).ok();
        if now.as_deref() != Some(self.written.as_str()) {
            tracing::warn!(file = %self.path.display(),
                "resolv.conf was changed by someone else since twoway wrote it; leaving it");
            return Ok(());
        }
        match (&self.symlink, &self.original) {
            (Some(target), _) => {
                std::fs::remove_file(&self.path)?;
                std::os::unix::fs::symlink(target, &self.path)
            }
            (None, Some(text)) => write_readable(&self.path, text),
            (None, None) => std::fs::remove_file(&self.path),
        }
    }
}

/// Atomic replacement, readable by everyone whatever the umask (resolvers run as any user).
fn write_readable(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    twoway_common::atomic_file::write_atomic(path, contents.as_bytes(), 0o644)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn resolved_arguments_for_full_and_split_tunnels() {
        let dns = ips(&["10.99.0.53", "fd99::53"]);
        let search = vec!["corp.example".to_owned()];
        let full = resolvectl_apply("tw-alice", &dns, &search, true);
        assert_eq!(full[0], ["dns", "tw-alice", "10.99.0.53", "fd99::53"]);
        assert_eq!(full[1], ["domain", "tw-alice", "~.", "corp.example"]);
        assert_eq!(full[2], ["default-route", "tw-alice", "yes"]);
        let split = resolvectl_apply("tw-alice", &dns, &search, false);
        assert_eq!(split[1], ["domain", "tw-alice", "corp.example"]);
        assert_eq!(split[2], ["default-route", "tw-alice", "no"]);
        let bare = resolvectl_apply("tw-alice", &dns, &[], false);
        assert_eq!(bare[2], ["default-route", "tw-alice", "yes"]);
        assert_eq!(resolvectl_revert("tw-alice"), ["revert", "tw-alice"]);
    }

    #[test]
    fn resolv_conf_contents() {
        let text = render_resolv_conf(
            "tw-alice",
            &ips(&["10.99.0.53"]),
            &["corp.example".into(), "eng.corp.example".into()],
        );
        assert!(text.starts_with("# Written by twoway for tw-alice"));
        assert!(text.contains("\nnameserver 10.99.0.53\n"));
        assert!(text.ends_with("search corp.example eng.corp.example\n"));
    }

    #[test]
    fn backup_restores_files_links_and_absence() {
        let (dir, file) = twoway_common::temp_path::temp_path("resolv.conf");
        std::fs::write(&file, "nameserver 192.0.2.1\n").unwrap();
        let mut b = ResolvConfBackup::take(&file).unwrap();
        b.write("nameserver 10.99.0.53\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 10.99.0.53\n"
        );
        b.restore().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 192.0.2.1\n"
        );

        let stub = dir.path().join("stub.conf");
        std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&stub, &file).unwrap();
        let mut b = ResolvConfBackup::take(&file).unwrap();
        b.write("nameserver 10.99.0.53\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&stub).unwrap(),
            "nameserver 127.0.0.53\n",
            "the link's target is not touched"
        );
        b.restore().unwrap();
        assert_eq!(std::fs::read_link(&file).unwrap(), stub);

        // Rewritten by someone else meanwhile: left alone.
        let mut b = ResolvConfBackup::take(&file).unwrap();
        b.write("nameserver 10.99.0.53\n").unwrap();
        std::fs::write(&file, "nameserver 192.0.2.99\n").unwrap();
        b.restore().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 192.0.2.99\n"
        );
    }
}
