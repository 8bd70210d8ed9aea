//! The `twoway` command line and the commands that talk to a running client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use twoway_common::control::{self, Request};
use twoway_common::logging::LogFormat;

use crate::config::{ClientConfig, DEFAULT_CONFIG};
use crate::error::{ClientError, EXIT_CODES_HELP};

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

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect and bring the tunnel up (foreground unless --detach).
    Up {
        /// Client configuration file (as written by `twoway-server pki issue`).
        #[arg(long)]
        config: PathBuf,
        /// Return once the tunnel is up (exit 0) or has failed, leaving a background process.
        #[arg(long)]
        detach: bool,
        /// Internal: print "ready" on stdout once up (used by --detach).
        #[arg(long, hide = true)]
        notify_ready: bool,
    },
    /// Take the tunnel down.
    Down {
        /// Client configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the tunnel's state.
    Status {
        /// One JSON object for scripts.
        #[arg(long)]
        json: bool,
        /// Client configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `down` waits for the client to finish.
const DOWN_WAIT: Duration = Duration::from_secs(10);

/// The detached client's log file, next to its control socket.
pub fn log_file(config: &ClientConfig) -> PathBuf {
    config.control.socket.with_extension("log")
}

/// Starts `twoway up` in the background and waits until it is up or failed.
/// Returns the exit code to leave with.
pub fn detach(config_path: &Path) -> Result<u8, ClientError> {
    let config = ClientConfig::load(config_path)?;
    let log = log_file(&config);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClientError::Config(format!("{}: {e}", dir.display())))?;
    }
    let log_handle = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| ClientError::Config(format!("cannot open log {}: {e}", log.display())))?;
    let exe = std::env::current_exe().map_err(|e| ClientError::Internal(e.to_string()))?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Process::new(exe)
            .arg("up")
            .arg("--config")
            .arg(config_path)
            .arg("--notify-ready")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_handle)
            .process_group(0)
            .spawn()
            .map_err(|e| ClientError::Internal(format!("cannot start background client: {e}")))?
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() == "ready" {
        println!(
            "twoway: tunnel up (pid {}, log {})",
            child.id(),
            log.display()
        );
        return Ok(0);
    }
    let code = child.wait().map(|s| s.code().unwrap_or(1)).unwrap_or(1);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    for l in tail.into_iter().rev() {
        eprintln!("{l}");
    }
    Ok(u8::try_from(code).unwrap_or(1))
}

/// Asks the running client to go down and waits until it has.
pub async fn down(config_path: &Path) -> Result<(), ClientError> {
    let config = ClientConfig::load(config_path)?;
    let socket = &config.control.socket;
    if let Err(e) = control::request(socket, &Request::Down, CONTROL_TIMEOUT).await {
        // No client running, but one that was killed may have left routes or DNS behind.
        let state = crate::changes::state_path(socket);
        let owner_alive =
            crate::changes::recorded_pid(&state).is_some_and(crate::changes::process_alive);
        if !owner_alive && crate::changes::cleanup_stale(&state) {
            println!("twoway: no client was running; removed the routes and DNS settings it left");
            return Ok(());
        }
        return Err(ClientError::Config(e.to_string()));
    }
    let start = Instant::now();
    while socket.exists() && start.elapsed() < DOWN_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if socket.exists() {
        return Err(ClientError::Internal(format!(
            "client did not stop within {DOWN_WAIT:?}"
        )));
    }
    println!("twoway: tunnel down");
    Ok(())
}

/// Prints the running client's status.
pub async fn status(config_path: &Path, json: bool) -> Result<(), ClientError> {
    let config = ClientConfig::load(config_path)?;
    let mut answer = control::request(&config.control.socket, &Request::Status, CONTROL_TIMEOUT)
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    if let Some(map) = answer.as_object_mut() {
        map.remove("ok");
    }
    if json {
        println!("{answer}");
    } else {
        for (k, v) in answer.as_object().into_iter().flatten() {
            if !v.is_null() {
                println!(
                    "{k:>10}: {}",
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                );
            }
        }
    }
    Ok(())
}
