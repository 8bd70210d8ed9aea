//! The local control socket of a running server or client: a Unix socket
//! (mode 0600) speaking one JSON request line and one JSON response line.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;

/// A command sent over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Report state and counters.
    Status,
    /// Server: close every session of an identity.
    Kick {
        /// The identity to kick.
        identity: String,
    },
    /// Server: re-read policy, CRL and certificate.
    Reload,
    /// Client: take the tunnel down and exit.
    Down,
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Could not connect to the socket. The OS error is part of the message
    /// (once) and deliberately not a `source`, so that printing the chain
    /// does not repeat it.
    #[error("cannot reach {path}: {}", describe_connect(.error))]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        error: io::Error,
    },
    /// The exchange failed half-way.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The answer was not JSON.
    #[error("control socket answered something that is not JSON: {0}")]
    BadAnswer(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

impl ControlError {
    /// True when nothing runs behind the socket: the file is missing, it
    /// is a stale socket nobody listens on, or the process behind it went
    /// away during the exchange (killed while our connect sat in its backlog).
    pub fn not_running(&self) -> bool {
        match self {
            Self::Connect { error, .. } => matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ),
            Self::Io(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            Self::BadAnswer(answer) => answer.is_empty(),
            Self::Refused(_) => false,
        }
    }

    /// True when the socket (or its folder) may not be opened by this user.
    pub fn permission_denied(&self) -> bool {
        matches!(self, Self::Connect { error, .. } if error.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// The reason of a failed connect, with the hint that fits it.
fn describe_connect(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such socket (is it running?)".into(),
        io::ErrorKind::ConnectionRefused => "nothing listens on it (is it running?)".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (run as root, or as the user that owns the socket)".into()
        }
        _ => error.to_string(),
    }
}

/// Sends a request and returns the answer object (with `"ok": true`).
pub async fn request(path: &Path, req: &Request, limit: Duration) -> Result<Value, ControlError> {
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|error| ControlError::Connect {
                path: path.display().to_string(),
                error,
            })?;
        let (r, mut w) = stream.into_split();
        let mut line =
            serde_json::to_string(req).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
        line.push('\n');
        w.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(r).read_line(&mut answer).await?;
        let value: Value =
            serde_json::from_str(&answer).map_err(|_| ControlError::BadAnswer(answer.clone()))?;
        if value["ok"] == Value::Bool(true) {
            Ok(value)
        } else {
            Err(ControlError::Refused(
                value["error"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_owned(),
            ))
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ControlError::Io(io::Error::new(io::ErrorKind::TimedOut, "no answer")))?
}

/// Binds the socket with mode 0600, replacing a stale socket file. Refuses
/// if another process still answers on it.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until `cancel`; each connection gets one answer.
pub async fn serve<H, Fut>(listener: UnixListener, handler: H, cancel: CancellationToken)
where
    H: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Value> + Send,
{
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let read = tokio::io::AsyncReadExt::take(r, MAX_REQUEST);
            let answer = match BufReader::new(read).read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handler(req).await,
                    Err(e) => failure(format!("bad request: {e}")),
                },
                Err(e) => failure(format!("bad request: {e}")),
            };
            let mut text = answer.to_string();
            text.push('\n');
            let _ = w.write_all(text.as_bytes()).await;
        });
    }
}

/// A failure answer.
pub fn failure(message: impl Into<String>) -> Value {
    json!({ "ok": false, "error": message.into() })
}

/// Formats a time as RFC 3339 UTC, for status output.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_errors_say_the_os_error_once_with_the_right_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        let e = request(&missing, &Request::Status, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.not_running() && !e.permission_denied(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("missing.sock") && text.contains("is it running?"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_none(), "{text}");

        let denied = ControlError::Connect {
            path: "/run/twoway/alice.sock".into(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(denied.permission_denied() && !denied.not_running());
        let text = denied.to_string();
        assert!(
            text.contains("permission denied") && !text.contains("is it running"),
            "{text}"
        );
    }
}
