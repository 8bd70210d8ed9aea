//! The `twoway-server` command line and what each command does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use twoway_common::control::status::ServerStatus;
use twoway_common::control::{self, Request};
use twoway_common::logging::LogFormat;

use crate::config::{ServerConfig, DEFAULT_CONFIG};
use crate::failure::Failure;
use crate::pki;

/// twoway VPN server: mutual-TLS tunnels with identity-based addresses.
#[derive(Debug, Parser)]
#[command(name = "twoway-server", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown in --help.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 internal error; 2 usage or configuration error; \
5 missing privilege (no CAP_NET_ADMIN or /dev/net/tun; the control socket may not be opened; \
kick and reload need root).";

/// Server commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server in the foreground (SIGHUP reloads, SIGTERM stops).
    Run {
        /// Server configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate configuration, policy and certificates; exit 2 naming every problem.
    Check {
        /// Server configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show connected clients.
    Status {
        /// One JSON object for scripts.
        #[arg(long)]
        json: bool,
        /// Server configuration file (to find the control socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Close every session of an identity.
    Kick {
        /// The identity to disconnect.
        identity: String,
        /// Server configuration file (to find the control socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Re-read policy, CRL and certificate without dropping unaffected clients.
    Reload {
        /// Server configuration file (to find the control socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The built-in certificate authority.
    #[command(subcommand)]
    Pki(PkiCommand),
}

/// PKI commands.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA, a server certificate, an empty CRL and example server.toml and policy.toml.
    Init {
        /// Folder for the PKI (created; must not hold a CA already).
        #[arg(long)]
        dir: PathBuf,
        /// Server DNS name (clients check it).
        #[arg(long)]
        name: String,
        /// Server IP address to put in the certificate (repeatable); the first one goes into client configs.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Port the server will listen on.
        #[arg(long, default_value_t = pki::DEFAULT_PORT)]
        port: u16,
        /// Validity of the server certificate in days.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS_SERVER)]
        days: u32,
    },
    /// Issue a client certificate and key and a ready client config IDENTITY.toml.
    Issue {
        /// PKI folder.
        #[arg(long)]
        dir: PathBuf,
        /// The client's identity (certificate CN).
        identity: String,
        /// Validity in days.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS_CLIENT)]
        days: u32,
        /// Write the client files here instead of the PKI folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write one file, IDENTITY.toml (0600), with the CA, certificate and
        /// key inside it, instead of four.
        #[arg(long)]
        inline: bool,
    },
    /// Certify the key of a request made by `twoway request` (the key stays on
    /// the client): IDENTITY.pem and IDENTITY.toml (pointing at IDENTITY.key).
    /// The identity is the request's CN.
    Sign {
        /// PKI folder.
        #[arg(long)]
        dir: PathBuf,
        /// The request, IDENTITY.csr.
        csr: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS_CLIENT)]
        days: u32,
        /// Write the client files here instead of the PKI folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The identity you expect: the request's CN must be it (the CN is
        /// the requester's word).
        #[arg(long)]
        identity: Option<String>,
    },
    /// A new certificate for the same key as the identity's current one. The
    /// old certificate stays valid until it expires (`pki revoke` revokes both).
    Renew {
        /// PKI folder.
        #[arg(long)]
        dir: PathBuf,
        /// The identity to renew.
        identity: String,
        /// Validity of the new certificate in days.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS_CLIENT)]
        days: u32,
        /// Where the client files are (and the new ones go), instead of the PKI folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke every live certificate of an identity (then `twoway-server reload`).
    Revoke {
        /// PKI folder.
        #[arg(long)]
        dir: PathBuf,
        /// The identity to revoke.
        identity: String,
    },
    /// List issued certificates.
    List {
        /// PKI folder.
        #[arg(long)]
        dir: PathBuf,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// A control request this user may not make (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ControlPrivilege(pub String);

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlFailure {
    /// This user may not make it (exit code 5).
    #[error(transparent)]
    Privilege(#[from] ControlPrivilege),
    /// The config, which names the socket, is unusable (exit code 2).
    #[error("{0}")]
    Config(#[from] twoway_common::config_file::ConfigErrors),
    /// The server did not answer (exit code 1).
    #[error("{0}")]
    Control(#[from] control::ControlError),
}

/// Sends one control request to the running server. A refusal for want of
/// privilege (the socket may not be opened, or `kick`/`reload` by a user who
/// is not root) is a [`ControlPrivilege`] (exit code 5).
///
/// A user who may not read the config (a member of group `twoway` asking for
/// status) asks the default socket, and takes the answer only if that server
/// runs this config.
pub async fn control_request<T: serde::de::DeserializeOwned>(
    config: &Path,
    req: Request,
) -> Result<T, ControlFailure> {
    let (socket, check) = match ServerConfig::load(config) {
        Ok(c) => (c.control.socket, false),
        Err(e) if e.permission_denied() && !req.changes() => {
            (crate::config::ControlSection::default().socket, true)
        }
        Err(e) if e.permission_denied() => {
            return Err(ControlPrivilege(format!("{} needs root: {e}", req.name())).into())
        }
        Err(e) => return Err(e.into()),
    };
    let answer: serde_json::Value = match control::request(&socket, &req, CONTROL_TIMEOUT).await {
        Ok(answer) => answer,
        Err(e) if e.permission_denied() => return Err(ControlPrivilege(e.to_string()).into()),
        Err(e) if check => {
            return Err(ControlPrivilege(format!(
                "{}: cannot read it (permission denied), and the default control socket \
                 does not answer: {e}",
                config.display()
            ))
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    if check && !runs(&answer, config) {
        return Err(ControlPrivilege(format!(
            "{}: cannot read it (permission denied), and the server at {} runs {}; \
             run as root to find this config's control socket",
            config.display(),
            socket.display(),
            answer["config"].as_str().unwrap_or("another config")
        ))
        .into());
    }
    serde_json::from_value(answer.clone())
        .map_err(|_| control::ControlError::BadAnswer(answer.to_string()).into())
}

/// Whether a status answer comes from a server started with `config`.
fn runs(answer: &serde_json::Value, config: &Path) -> bool {
    let absolute = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
    answer["config"].as_str() == Some(&*absolute.to_string_lossy())
}

/// An error and its causes on one line, each said once: a cause whose text
/// the line already holds (many errors print their source themselves) is
/// left out, so an OS error does not appear two or three times.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Prints server status, as a table or JSON.
pub fn print_status(status: &ServerStatus, json: bool) {
    if json {
        println!("{}", control::json_line(status));
        return;
    }
    println!("{} session(s)", status.sessions.len());
    if !status.sessions.is_empty() {
        println!(
            "{:<24} {:<16} {:<22} {:<21} {:>12} {:>12}",
            "IDENTITY", "ADDRESS", "REMOTE", "SINCE", "RX BYTES", "TX BYTES"
        );
    }
    for s in &status.sessions {
        println!(
            "{:<24} {:<16} {:<22} {:<21} {:>12} {:>12}",
            s.identity, s.address, s.remote, s.since, s.rx_bytes, s.tx_bytes
        );
    }
}

/// Names each file a PKI command wrote, one a line.
fn print_written(files: &[PathBuf]) {
    for f in files {
        println!("wrote {}", f.display());
    }
}

/// Runs a PKI command.
pub fn pki_command(cmd: PkiCommand) -> Result<(), Failure> {
    match cmd {
        PkiCommand::Init {
            dir,
            name,
            ips,
            port,
            days,
        } => {
            let written = pki::init(&pki::InitOptions {
                dir,
                name,
                ips,
                port,
                days,
            })?;
            print_written(&written);
        }
        PkiCommand::Issue {
            dir,
            identity,
            days,
            out,
            inline,
        } => {
            let opts = pki::IssueOptions {
                dir,
                identity,
                days,
                out,
            };
            let written = if inline {
                pki::issue_inline(&opts)?
            } else {
                pki::issue(&opts)?
            };
            print_written(&written);
        }
        PkiCommand::Sign {
            dir,
            csr,
            days,
            out,
            identity,
        } => {
            let done = pki::sign(&pki::SignOptions {
                dir,
                csr,
                days,
                out,
                identity,
            })?;
            print_written(&done.written);
            let id = &done.identity;
            println!(
                "signed {id} (serial {}); give the client {id}.pem, {id}.toml and ca.pem: \
                 they go next to its {id}.key",
                done.serial
            );
        }
        PkiCommand::Renew {
            dir,
            identity,
            days,
            out,
        } => {
            let done = pki::renew(&dir, &identity, days, out.as_deref())?;
            print_written(&done.written);
            println!(
                "renewed {identity} (serial {}); the old certificate stays valid until it expires",
                done.serial
            );
        }
        PkiCommand::Revoke { dir, identity } => {
            let count = pki::revoke(&dir, &identity)?;
            let what = if count == 1 {
                "1 certificate".to_string()
            } else {
                format!("{count} certificates")
            };
            println!(
                "revoked {identity} ({what}); run `twoway-server reload` to cut its live sessions"
            );
        }
        PkiCommand::List { dir, json } => {
            let records = pki::list(&dir)?;
            if json {
                println!("{}", serde_json::to_string(&records)?);
            } else {
                println!(
                    "{:<32} {:<34} {:<22} REVOKED",
                    "IDENTITY", "SERIAL", "NOT AFTER"
                );
                for r in records {
                    println!(
                        "{:<32} {:<34} {:<22} {}",
                        r.identity,
                        r.serial,
                        r.not_after,
                        if r.revoked { "yes" } else { "no" }
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("ca.pem: certificates: {0}")]
        struct Certificates(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("starting the server")]
        struct Starting(#[source] Certificates);
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let once = os.to_string();
        let text = error_text(&Starting(Certificates(os)));
        assert_eq!(text.matches(&once).count(), 1, "{text}");
        assert_eq!(
            text,
            format!("starting the server: ca.pem: certificates: {once}")
        );
    }
}
