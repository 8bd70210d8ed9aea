//! What crosses the control socket: one [`Request`] line, then one answer
//! line, a [`Reply`] with `"ok":true` or a [`Failure`] with `"ok":false`.
//! Both ends build and read these types; docs/STATUS.md describes the JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::{ClientStatus, ServerStatus};

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

impl Request {
    /// The command's name, as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Kick { .. } => "kick",
            Self::Reload => "reload",
            Self::Down => "down",
        }
    }

    /// Whether the request changes something (and so needs root).
    pub fn changes(&self) -> bool {
        !matches!(self, Self::Status)
    }
}

/// The answer to a request that was carried out; on the wire its fields
/// beside `"ok":true`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// Server: `status`.
    ServerStatus(ServerStatus),
    /// Client: `status`.
    ClientStatus(Box<ClientStatus>),
    /// Server: `kick`.
    Kicked(Kicked),
    /// Server: `reload`.
    Reloaded(Reloaded),
    /// Client: `down`; nothing more to say.
    Done {},
}

/// The reply to `kick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    /// Sessions ended.
    pub kicked: usize,
}

/// The reply to `reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Sessions ended because their address changed or they are no longer allowed.
    pub closed_sessions: usize,
    /// Sessions sent a changed grant without a reconnect.
    pub updated_sessions: usize,
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The caller may not make this request (exit code 5 at the caller).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// What went wrong, for the user.
    pub error: String,
}

impl Failure {
    /// A request that failed.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            denied: false,
            error: error.into(),
        }
    }

    /// A request the caller may not make.
    pub fn denied(error: impl Into<String>) -> Self {
        Self {
            denied: true,
            error: error.into(),
        }
    }
}

/// What a handler answers.
pub type Answer = Result<Reply, Failure>;

/// One JSON line of `value` (without the newline), its object keys in
/// alphabetical order at every level, as docs/STATUS.md promises.
pub fn json_line<T: Serialize>(value: &T) -> String {
    // serde_json's Map is ordered by key (no `preserve_order`): passing
    // through Value sorts what a struct's declaration order would not.
    serde_json::to_value(value)
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!(r#"{{"error":"cannot encode the answer: {e}","ok":false}}"#))
}

/// The answer line for `answer`: the reply's fields (or the failure's) with `ok`.
pub fn answer_line(answer: &Answer) -> String {
    let (value, ok) = match answer {
        Ok(reply) => (serde_json::to_value(reply), true),
        Err(failure) => (serde_json::to_value(failure), false),
    };
    match value {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".into(), Value::Bool(ok));
            Value::Object(map).to_string()
        }
        Ok(other) => format!(r#"{{"error":"not an object: {other}","ok":false}}"#),
        Err(e) => json_line(&Failure::new(format!("cannot encode the answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_reply_with_ok_keys_in_order() {
        let kicked = Ok(Reply::Kicked(Kicked { kicked: 2 }));
        assert_eq!(answer_line(&kicked), r#"{"kicked":2,"ok":true}"#);
        let reloaded = Ok(Reply::Reloaded(Reloaded {
            closed_sessions: 1,
            updated_sessions: 3,
        }));
        assert_eq!(
            answer_line(&reloaded),
            r#"{"closed_sessions":1,"ok":true,"updated_sessions":3}"#
        );
        assert_eq!(answer_line(&Ok(Reply::Done {})), r#"{"ok":true}"#);
        let failed = Err(Failure::new("no session of identity \"bob\""));
        assert_eq!(
            answer_line(&failed),
            r#"{"error":"no session of identity \"bob\"","ok":false}"#
        );
        let denied = Err(Failure::denied("down needs root"));
        assert_eq!(
            answer_line(&denied),
            r#"{"denied":true,"error":"down needs root","ok":false}"#
        );
    }

    #[test]
    fn requests_are_tagged_by_cmd() {
        let kick = Request::Kick {
            identity: "alice".into(),
        };
        assert_eq!(
            serde_json::to_string(&kick).unwrap(),
            r#"{"cmd":"kick","identity":"alice"}"#
        );
        let back: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(back, Request::Status);
    }
}
