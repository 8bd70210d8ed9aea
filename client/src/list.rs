//! `twoway list`: every tunnel running on this machine, one per config.
//!
//! A running client answers `status` on its control socket. The candidates
//! are the control sockets of the client configs in the config folder
//! (/etc/twoway/*.toml) and every `*.sock` in the runtime folder
//! (/run/twoway, where the default sockets live); each is asked once.
//! Servers' sockets and dead sockets are skipped. A client names its config
//! in its status, so a tunnel started from a config elsewhere is listed too
//! when its socket is in the runtime folder.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use twoway_common::control;
use twoway_common::control::status::{Carrier, ClientState, Tunnel};

use crate::config::ClientConfig;
use crate::error::ClientError;

/// How long one socket may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A socket to ask, and the config it came from if known.
#[derive(Debug)]
struct Candidate {
    socket: PathBuf,
    config: Option<PathBuf>,
}

/// The files in `dir` ending in `.ext`, sorted; none if it cannot be read
/// (a folder this user may not read is said on stderr: "no tunnels" must not
/// hide tunnels we may not see).
fn files_with(dir: &Path, ext: &str, denied: &mut bool) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                eprintln!(
                    "twoway: cannot list {}: {}",
                    dir.display(),
                    twoway_common::control::permission_hint()
                );
                *denied = true;
            }
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

fn key(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_owned())
}

fn candidates(config_dir: &Path, run_dir: &Path, denied: &mut bool) -> Vec<Candidate> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    // Configs this user may not read are skipped: their sockets are in the run folder.
    let mut configs_denied = false;
    for path in files_with(config_dir, "toml", &mut configs_denied) {
        // Server configs and files this user cannot read are not client tunnels.
        if let Ok(c) = ClientConfig::load(&path) {
            if seen.insert(key(&c.control.socket)) {
                out.push(Candidate {
                    socket: c.control.socket,
                    config: Some(path),
                });
            }
        }
    }
    for socket in files_with(run_dir, "sock", denied) {
        if seen.insert(key(&socket)) {
            out.push(Candidate {
                socket,
                config: None,
            });
        }
    }
    out
}

/// One running tunnel, as `list --json` prints it (docs/STATUS.md).
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The configuration's name.
    pub name: Option<String>,
    /// The configuration file.
    pub config: Option<String>,
    /// The control socket that answered.
    pub socket: String,
    /// Where the client is in its life.
    pub state: ClientState,
    /// Its IPv4 tunnel address, once assigned.
    pub address: Option<IpAddr>,
    /// The server as its configuration names it.
    pub server: String,
    /// Its TUN device, once up.
    pub device: Option<String>,
    /// When the tunnel came up last.
    pub since: Option<String>,
    /// Where data goes now.
    pub transport: Carrier,
}

/// The list entry of a running client's status answer.
fn entry(c: &Candidate, state: ClientState, tunnel: Tunnel) -> Entry {
    let config = tunnel
        .config
        .map(PathBuf::from)
        .or_else(|| c.config.clone());
    let name = config
        .as_deref()
        .unwrap_or(&c.socket)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    Entry {
        name,
        config: config.map(|p| p.display().to_string()),
        socket: c.socket.display().to_string(),
        state,
        address: tunnel.address,
        server: tunnel.server,
        device: tunnel.device,
        since: tunnel.since,
        transport: tunnel.transport,
    }
}

/// The running tunnels, as `list --json` prints them, and whether a socket
/// or the run folder could not be looked at for want of permission.
pub async fn running(config_dir: &Path, run_dir: &Path) -> (Vec<Entry>, bool) {
    let mut tunnels = Vec::new();
    let mut denied = false;
    for c in candidates(config_dir, run_dir, &mut denied) {
        let status = match crate::cli::query(&c.socket, PROBE_TIMEOUT).await {
            Ok(status) => status,
            Err(e) => {
                // Not silently: "no tunnels" must not hide one we may not ask.
                if e.permission_denied() {
                    eprintln!("twoway: {e}");
                    denied = true;
                }
                continue;
            }
        };
        // Only a client answers with a state (a server's answer does not
        // parse as one); `down` means nothing runs there.
        if let (state, Some(tunnel)) = (status.state, status.tunnel) {
            if state != ClientState::Down {
                tunnels.push(entry(&c, state, tunnel));
            }
        }
    }
    (tunnels, denied)
}

/// `twoway list [--json]`: exit 5 (after printing what it found) when a
/// socket or the run folder could not be looked at for want of permission.
pub async fn list(json: bool, config_dir: &Path, run_dir: &Path) -> Result<(), ClientError> {
    let (tunnels, denied) = running(config_dir, run_dir).await;
    let result = if denied {
        Err(ClientError::ListIncomplete)
    } else {
        Ok(())
    };
    if json {
        println!("{}", control::json_line(&tunnels));
        return result;
    }
    if tunnels.is_empty() {
        println!("no tunnels");
    }
    let text = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for t in &tunnels {
        println!(
            "{:<16} {:<12} {:<16} {:<24} {}",
            text(t.name.clone()),
            t.state.as_str(),
            text(t.address.map(|a| a.to_string())),
            t.server,
            text(t.config.clone()),
        );
    }
    result
}
