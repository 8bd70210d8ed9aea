//! `twoway up --detach`: start the client in the background and wait until
//! it is up or has failed; on failure, print the error of this attempt only.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use crate::config::ClientConfig;
use crate::error::ClientError;

/// Lines of this attempt's log shown when it failed without a final error line.
const TAIL_LINES: usize = 3;

/// The detached client's log file, next to its control socket.
pub fn log_file(config: &ClientConfig) -> PathBuf {
    config.control.socket.with_extension("log")
}

/// Starts `twoway up` in the background and waits until it is up or failed.
/// Returns the exit code to leave with. Privilege is checked first, so a
/// normal user gets exit 5 as in the foreground, not a log it cannot open.
pub fn detach(config_path: &Path) -> Result<u8, ClientError> {
    crate::privilege::check()?;
    let config = ClientConfig::load(config_path)?;
    let log = log_file(&config);
    if let Some(dir) = log.parent() {
        // The control socket's folder: made as `up` would make it.
        twoway_common::control::create_dir(dir).map_err(|source| ClientError::File {
            what: "",
            path: dir.to_owned(),
            source,
        })?;
    }
    // Never through a symlink: the folder may belong to the units' user.
    let log_handle = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&log)
        .map_err(|source| ClientError::File {
            what: "cannot open log ",
            path: log.clone(),
            source,
        })?;
    // The log is appended by every run: what this attempt writes starts here.
    let start = log_handle.metadata().map(|m| m.len()).unwrap_or(0);
    let exe =
        std::env::current_exe().map_err(|source| ClientError::Process { what: "", source })?;
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
            .map_err(|source| ClientError::Process {
                what: "cannot start background client: ",
                source,
            })?
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
    for l in attempt_error(&read_from(&log, start)) {
        eprintln!("{l}");
    }
    Ok(u8::try_from(code).unwrap_or(1))
}

/// The text of `path` from byte `start` on.
fn read_from(path: &Path, start: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// What to show of a failed attempt's log: its final `twoway: ...` error
/// line(s), or its last lines when it has none (killed, crashed).
fn attempt_error(text: &str) -> Vec<&str> {
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("twoway: ")).collect();
    if !errors.is_empty() {
        return errors;
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_final_error_line_else_the_tail() {
        let log = "INFO connecting\nWARN retry\ntwoway: server unreachable: x\n";
        assert_eq!(attempt_error(log), vec!["twoway: server unreachable: x"]);
        assert_eq!(attempt_error("a\nb\nc\nd\n"), vec!["b", "c", "d"]);
        assert!(attempt_error("").is_empty());
    }

    #[test]
    fn reads_only_what_follows_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.log");
        std::fs::write(&log, "twoway: old error\ntwoway: new error\n").expect("write");
        assert_eq!(read_from(&log, 18), "twoway: new error\n");
        assert_eq!(read_from(&dir.path().join("none.log"), 0), "");
    }
}
