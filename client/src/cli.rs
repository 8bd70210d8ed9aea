//! The `twoway` command line and the commands that talk to a running client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use twoway_common::control::status::{ClientState, ClientStatus};
use twoway_common::control::{self, ControlError, Request};
use twoway_common::logging::LogFormat;

use crate::config::{self, ClientConfig};
use crate::error::{ClientError, EXIT_CODES_HELP};

pub use crate::detach::{detach, log_file};

/// twoway VPN client: connect this machine to a twoway server.
#[derive(Debug, Parser)]
#[command(name = "twoway", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which config a command is about: NAME or --config PATH, not both.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Tunnel name: NAME means /etc/twoway/NAME.toml (as `wg-quick up wg0`).
    /// A NAME with a `/` or ending in `.toml` is a path.
    #[arg(value_name = "NAME", conflicts_with = "config")]
    pub name: Option<String>,
    /// Client configuration file (as written by `twoway-server pki issue`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl Target {
    /// The config file meant; /etc/twoway/client.toml when neither is given.
    pub fn path(&self) -> PathBuf {
        config::config_path(self.name.as_deref(), self.config.as_deref())
    }
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect and bring the tunnel up (foreground unless --detach).
    /// `twoway up alice` is `twoway up --config /etc/twoway/alice.toml`.
    Up {
        #[command(flatten)]
        target: Target,
        /// Return once the tunnel is up (exit 0) or has failed (the exit code
        /// of the failure, with this attempt's error), leaving a background process.
        #[arg(long)]
        detach: bool,
        /// Internal: print "ready" on stdout once up (used by --detach).
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Take the tunnel down. Exit 0 also when it is not running (and say so).
    Down {
        #[command(flatten)]
        target: Target,
    },
    /// Show the tunnel's state. A tunnel that is not running is `down`
    /// (`{"state":"down"}` with --json), exit 0.
    Status {
        /// One JSON object for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make a private key and a certificate request for IDENTITY on this
    /// machine: DIR/IDENTITY.key (0600, it never leaves) and DIR/IDENTITY.csr,
    /// for `twoway-server pki sign`.
    Request {
        /// The identity to ask a certificate for (its CN).
        #[arg(long, value_name = "IDENTITY")]
        identity: String,
        /// Folder for IDENTITY.key and IDENTITY.csr (created 0700 if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Every tunnel running on this machine, one line (or JSON object) per config.
    /// Found through the configs in --config-dir and the sockets in --run-dir.
    List {
        /// A JSON array for scripts (`[]` when none runs).
        #[arg(long)]
        json: bool,
        /// Folder of client configs whose control sockets are probed.
        #[arg(long, value_name = "DIR", default_value = config::CONFIG_DIR)]
        config_dir: PathBuf,
        /// Folder whose *.sock control sockets are probed.
        #[arg(long, value_name = "DIR", default_value = config::RUN_DIR)]
        run_dir: PathBuf,
    },
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `down` waits for the client to finish.
const DOWN_WAIT: Duration = Duration::from_secs(10);

/// How long one socket may take to answer while looking for a client.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The control socket of the client of `config_path`, from the config. A
/// user who may not read the config (a member of group `twoway` asking for
/// status) finds it without: the default socket RUN_DIR/NAME.sock, or any
/// socket in RUN_DIR, whose client says it runs this config. `None`: no
/// client of this config runs (as far as this user can tell).
async fn socket_of(config_path: &Path) -> Result<Option<PathBuf>, ClientError> {
    let unreadable = match ClientConfig::load(config_path) {
        Ok(config) => return Ok(Some(config.control.socket)),
        Err(e) if e.permission_denied() => e,
        Err(e) => return Err(e.into()),
    };
    let wanted = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
    let default = config::default_socket(config_path);
    let run_dir = default.parent().unwrap_or(Path::new(config::RUN_DIR));
    let mut candidates = vec![default.clone()];
    match std::fs::read_dir(run_dir) {
        Ok(entries) => {
            let mut others: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock") && *p != default)
                .collect();
            others.sort();
            candidates.extend(others);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::RunDirDenied {
                config: unreadable,
                run_dir: run_dir.to_owned(),
            })
        }
        // No run folder: nothing runs.
        Err(_) => {}
    }
    let mut refused = None;
    for socket in candidates {
        match query(&socket, PROBE_TIMEOUT).await {
            Ok(status) if status.config() == Some(&*wanted.to_string_lossy()) => {
                return Ok(Some(socket))
            }
            Ok(_) => {}
            Err(e) if e.permission_denied() => {
                refused.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    match refused {
        // A client we may not ask could be this config's: do not say "down".
        Some(source) => Err(ClientError::SocketDenied {
            config: unreadable,
            source,
        }),
        None => Ok(None),
    }
}

/// Asks the running client to go down and waits until it has.
pub async fn down(config_path: &Path) -> Result<(), ClientError> {
    let Some(socket) = socket_of(config_path).await? else {
        println!(
            "twoway: tunnel {} is not running; nothing to do",
            config_path.display()
        );
        return Ok(());
    };
    let socket = &socket;
    if let Err(e) =
        control::request::<serde::de::IgnoredAny>(socket, &Request::Down, CONTROL_TIMEOUT).await
    {
        if !e.not_running() {
            return Err(e.into());
        }
        // No client running, but one that was killed may have left routes or DNS behind.
        let state = crate::host::journal::state_path(socket);
        let owner_alive = crate::host::journal::recorded_pid(&state)
            .is_some_and(crate::host::journal::process_alive);
        if !owner_alive && crate::host::journal::cleanup_stale(&state).await {
            println!("twoway: no client was running; removed the routes and DNS settings it left");
        } else {
            println!(
                "twoway: tunnel {} is not running; nothing to do",
                config_path.display()
            );
        }
        return Ok(());
    }
    let start = Instant::now();
    while socket.exists() && start.elapsed() < DOWN_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if socket.exists() {
        return Err(ClientError::DidNotStop(DOWN_WAIT));
    }
    println!("twoway: tunnel down");
    Ok(())
}

/// The status of the client behind `socket`, or [`ClientStatus::down`] when
/// none runs there.
pub async fn query(socket: &Path, limit: Duration) -> Result<ClientStatus, ControlError> {
    match control::request(socket, &Request::Status, limit).await {
        Ok(status) => Ok(status),
        Err(e) if e.not_running() => Ok(ClientStatus::down()),
        Err(e) => Err(e),
    }
}

/// Prints the running client's status; a stopped one is `down`. Each entry
/// of `warnings` gets a line of its own.
pub async fn status(config_path: &Path, json: bool) -> Result<(), ClientError> {
    let status = match socket_of(config_path).await? {
        Some(socket) => query(&socket, CONTROL_TIMEOUT).await?,
        None => ClientStatus::down(),
    };
    if json {
        println!("{}", control::json_line(&status));
        return Ok(());
    }
    // Every field with a value, by name, as the JSON has them.
    let fields = serde_json::to_value(&status).unwrap_or_default();
    for (k, v) in fields.as_object().into_iter().flatten() {
        if k == "warnings" {
            continue;
        }
        if !v.is_null() {
            println!(
                "{k:>10}: {}",
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    if status.state == ClientState::Down {
        println!("{:>10}: {}", "config", config_path.display());
    }
    for w in status.tunnel.iter().flat_map(|t| &t.warnings) {
        println!("{:>10}: {w}", "warning");
    }
    Ok(())
}
