//! The local control socket of a running server or client: a Unix socket
//! speaking one JSON request line and one JSON response line.
//!
//! Who may ask what: the socket is 0660 with group [`GROUP`] when that group
//! exists (else 0600), so its members can connect and read `status`. A request
//! that changes something (`down`, `kick`, `reload`) is checked again at the
//! socket, with the peer's credentials (SO_PEERCRED): only root and the user
//! the process runs as (who could signal it anyway) may send one. The file
//! mode alone would let every group member take the tunnel down.
//!
//! What the lines hold is typed in [`protocol`] (requests and answers) and
//! [`status`] (the status objects); [`timestamp`] formats their times.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

mod protocol;
pub mod status;
pub mod timestamp;

pub use protocol::{answer_line, json_line, Answer, Failure, Kicked, Reloaded, Reply, Request};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// Control connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 32;
/// How long one connection may take for its request and answer.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(5);

/// The group whose members may read status over the control socket (the
/// group the systemd units run as).
pub const GROUP: &str = "twoway";

/// Whether a peer with user id `peer` (None: unknown) may make `req` of a
/// process running as `own`: anyone who could connect may read status; a
/// change needs root or `own`, who could signal the process anyway.
pub fn authorize(req: &Request, peer: Option<u32>, own: u32) -> Result<(), String> {
    if !req.changes() {
        return Ok(());
    }
    match peer {
        Some(uid) if uid == 0 || uid == own => Ok(()),
        Some(uid) if own == 0 => Err(format!("{} needs root (you are uid {uid})", req.name())),
        Some(uid) => Err(format!(
            "{} needs root, or uid {own} that runs this process (you are uid {uid})",
            req.name()
        )),
        None => Err(format!(
            "{} needs root, and the caller's credentials could not be read",
            req.name()
        )),
    }
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
    /// The answer was JSON, but not the reply asked for (another program,
    /// or another version, answers on that socket).
    #[error("control socket answered something unexpected: {0}")]
    Unexpected(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
    /// The daemon refused the request because the caller lacks the privilege.
    #[error("{0}")]
    Denied(String),
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
            Self::Unexpected(_) | Self::Refused(_) | Self::Denied(_) => false,
        }
    }

    /// True when the socket (or its folder) may not be opened by this user,
    /// or the daemon refused a request this user may not make (exit code 5).
    pub fn permission_denied(&self) -> bool {
        match self {
            Self::Connect { error, .. } => error.kind() == io::ErrorKind::PermissionDenied,
            Self::Denied(_) => true,
            _ => false,
        }
    }
}

/// The reason of a failed connect, with the hint that fits it.
fn describe_connect(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such socket (is it running?)".into(),
        io::ErrorKind::ConnectionRefused => "nothing listens on it (is it running?)".into(),
        io::ErrorKind::PermissionDenied => permission_hint(),
        _ => error.to_string(),
    }
}

/// What to do about a control socket (or its folder) this user may not open.
pub fn permission_hint() -> String {
    if group_id().is_some() {
        format!("permission denied (run as root; members of group `{GROUP}` may read status)")
    } else {
        format!(
            "permission denied (run as root; with a group `{GROUP}`, its members may read status)"
        )
    }
}

/// The id of [`GROUP`], if this machine has it.
pub fn group_id() -> Option<nix::unistd::Gid> {
    nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid)
}

/// Sends a request and reads the answer as `T` (which may ignore `ok`).
pub async fn request<T: DeserializeOwned>(
    path: &Path,
    req: &Request,
    limit: Duration,
) -> Result<T, ControlError> {
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
        if value.get("ok") != Some(&Value::Bool(true)) {
            let failure =
                serde_json::from_value(value).unwrap_or_else(|_| Failure::new("request failed"));
            return Err(if failure.denied {
                ControlError::Denied(failure.error)
            } else {
                ControlError::Refused(failure.error)
            });
        }
        serde_json::from_value(value).map_err(|e| ControlError::Unexpected(e.to_string()))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ControlError::Io(io::Error::new(io::ErrorKind::TimedOut, "no answer")))?
}

/// Binds the socket, replacing a stale socket file; refuses if another
/// process still answers on it. The socket is 0660 with group [`GROUP`] when
/// the group exists, 0600 otherwise. A folder made for it is 0750 with that
/// group (0755 without), so that the group can reach the socket.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    let group = group_id();
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
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
    // The socket is made with its final mode (a umask around bind) and given
    // to the group with lchown: nothing after the bind follows the path, so
    // a symlink swapped in by whoever may write to the folder (the runtime
    // folder of the units' user) cannot redirect a chmod or chown.
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    let listener = {
        use nix::sys::stat::{umask, Mode};
        let old = umask(Mode::from_bits_truncate(0o777 & !mode));
        let bound = UnixListener::bind(path);
        umask(old);
        bound?
    };
    if let Some(gid) = group {
        give_to_group(path, gid);
    }
    Ok(listener)
}

/// Creates the folder of a control socket if it is missing (and its parents):
/// 0750 with group [`GROUP`] where that group exists, so that the group can
/// reach the sockets in it, else 0755. An existing folder is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let group = group_id();
    let mode = if group.is_some() { 0o750 } else { 0o755 };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
            if let Some(gid) = group {
                give_to_group(dir, gid);
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the group of `path`; false (with a warning) if that is not allowed.
fn give_to_group(path: &Path, gid: nix::unistd::Gid) {
    // Already the group's (the units run with Group=twoway, so the socket is
    // made with it): nothing to do. The units' system call filter refuses
    // chown (@privileged), so calling it anyway would only log a warning.
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.gid() == gid.as_raw()) {
        return;
    }
    if let Err(e) = std::os::unix::fs::lchown(path, None, Some(gid.as_raw())) {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot give the control socket to group `{GROUP}`; only its owner, its group and root may use it"
        );
    }
}

/// Answers requests until `cancel`; each connection gets one answer.
pub async fn serve<H, Fut>(listener: UnixListener, handler: H, cancel: CancellationToken)
where
    H: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Answer> + Send,
{
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
        // A bounded number of connections, each with a time limit: members
        // of the group may connect, and idle connections must not use up the
        // daemon's file descriptors.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!("control socket: {MAX_CONNECTIONS} connections open; one refused");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(EXCHANGE_LIMIT, answer_one(stream, handler)).await;
        });
    }
}

/// Reads one request from `stream` and writes its answer.
async fn answer_one<H, Fut>(stream: UnixStream, handler: H)
where
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Answer>,
{
    // Who is asking: the kernel's word (SO_PEERCRED), not the file mode.
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let read = tokio::io::AsyncReadExt::take(r, MAX_REQUEST);
    let answer = match BufReader::new(read).read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => match authorize(&req, peer, nix::unistd::geteuid().as_raw()) {
                Ok(()) => handler(req).await,
                Err(why) => {
                    tracing::warn!(request = req.name(), uid = ?peer, "control request refused: {why}");
                    Err(Failure::denied(why))
                }
            },
            Err(e) => Err(Failure::new(format!("bad request: {e}"))),
        },
        Err(e) => Err(Failure::new(format!("bad request: {e}"))),
    };
    let mut text = answer_line(&answer);
    text.push('\n');
    let _ = w.write_all(text.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_for_anyone_who_connects_changes_for_root_and_the_owner() {
        let kick = Request::Kick {
            identity: "alice".into(),
        };
        for req in [&Request::Status, &Request::Down, &Request::Reload, &kick] {
            assert!(authorize(req, Some(0), 0).is_ok(), "root: {req:?}");
            assert!(authorize(req, Some(998), 998).is_ok(), "owner: {req:?}");
        }
        assert!(authorize(&Request::Status, Some(1000), 0).is_ok());
        assert!(authorize(&Request::Status, None, 0).is_ok());
        let e = authorize(&Request::Down, Some(1000), 0).unwrap_err();
        assert_eq!(e, "down needs root (you are uid 1000)");
        let e = authorize(&kick, Some(1000), 998).unwrap_err();
        assert!(e.starts_with("kick needs root, or uid 998"), "{e}");
        let e = authorize(&Request::Reload, None, 0).unwrap_err();
        assert!(e.starts_with("reload needs root"), "{e}");
    }

    #[tokio::test]
    async fn a_denied_answer_is_a_permission_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.expect("read");
            let mut text = answer_line(&Err(Failure::denied("down needs root (you are uid 1000)")));
            text.push('\n');
            w.write_all(text.as_bytes()).await.expect("write");
        });
        let e = request::<Value>(&path, &Request::Down, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.permission_denied() && !e.not_running(), "{e:?}");
        assert_eq!(e.to_string(), "down needs root (you are uid 1000)");
    }

    /// Review finding: idle connections of group members must not use up the
    /// daemon's descriptors: beyond the cap a connection is closed at once,
    /// and the others still get answers once one frees its place.
    #[tokio::test]
    async fn idle_connections_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        let listener = bind(&path).await.expect("bind");
        let cancel = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            |_req| async { Ok(Reply::Done {}) },
            cancel.clone(),
        ));
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&path).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = UnixStream::connect(&path).await.expect("connect");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut extra, &mut buf),
        )
        .await
        .expect("closed at once, not held")
        .unwrap_or(0);
        assert_eq!(n, 0, "over the cap: closed");
        drop(idle.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer: Value = request(&path, &Request::Status, Duration::from_secs(2))
            .await
            .expect("a place again");
        assert_eq!(answer, serde_json::json!({"ok": true}));
        cancel.cancel();
    }

    #[tokio::test]
    async fn the_socket_is_0660_group_twoway_where_that_group_exists() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("c.sock");
        let _listener = bind(&path).await.expect("bind");
        let socket = std::fs::metadata(&path).expect("socket");
        let folder = std::fs::metadata(path.parent().expect("parent")).expect("folder");
        match group_id() {
            Some(gid) if nix::unistd::geteuid().is_root() => {
                assert_eq!(socket.mode() & 0o777, 0o660);
                assert_eq!(socket.gid(), gid.as_raw());
                assert_eq!(folder.mode() & 0o777, 0o750);
                assert_eq!(folder.gid(), gid.as_raw());
            }
            Some(_) => {}
            None => {
                assert_eq!(socket.mode() & 0o777, 0o600);
                assert_eq!(folder.mode() & 0o777, 0o755);
            }
        }
    }

    #[tokio::test]
    async fn connect_errors_say_the_os_error_once_with_the_right_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        let e = request::<Value>(&missing, &Request::Status, Duration::from_secs(1))
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
