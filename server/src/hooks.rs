//! Server session hooks (`[hooks] session_up`, `session_down`): a command run
//! with `/bin/sh -c` when a client's session is up and when it has ended,
//! with the identity, its bare addresses and the node in the environment
//! (how a deployment announces a client's /32 toward the node that holds it).
//! Each runs in its own task with a timeout and never holds up a session;
//! the hooks of one address run in the order their sessions rose and fell,
//! so a quick reconnect's `up` never runs before the old session's `down`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use twoway_common::config_file::ConfigError;
use twoway_common::hook::{self, Outcome};

/// `[hooks]` of server.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSection {
    /// Command run when a session is up.
    pub session_up: Option<String>,
    /// Command run when a session has ended.
    pub session_down: Option<String>,
    /// Seconds a hook may run before it is killed.
    pub timeout_secs: u32,
}

impl Default for HooksSection {
    fn default() -> Self {
        Self {
            session_up: None,
            session_down: None,
            timeout_secs: 10,
        }
    }
}

impl HooksSection {
    /// Every problem with the values; `p` is the config file.
    pub fn validate(&self, p: &std::path::Path, errors: &mut Vec<ConfigError>) {
        if !(1..=600).contains(&self.timeout_secs) {
            errors.push(ConfigError::invalid(
                p,
                "hooks.timeout_secs",
                "must be between 1 and 600",
            ));
        }
        for (key, command) in [
            ("hooks.session_up", &self.session_up),
            ("hooks.session_down", &self.session_down),
        ] {
            if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
                errors.push(ConfigError::invalid(
                    p,
                    key,
                    "is empty; remove the key for no hook",
                ));
            }
        }
    }
}

/// Runs the hooks of one server.
#[derive(Debug)]
pub struct SessionHooks {
    section: HooksSection,
    node: String,
    /// Per address: the end of the last hook queued for it.
    last: Mutex<HashMap<IpAddr, oneshot::Receiver<()>>>,
    /// Every queued or running hook, so that a stopping server can let its
    /// last `session_down` hooks finish.
    running: TaskTracker,
}

/// The environment of one session's hooks.
#[derive(Debug, Clone)]
pub struct SessionHook {
    hooks: Arc<SessionHooks>,
    env: Vec<(&'static str, String)>,
    address: IpAddr,
}

impl SessionHooks {
    /// Hooks of `section` on node `node` ("" outside a cluster).
    pub fn new(section: HooksSection, node: String) -> Arc<Self> {
        Arc::new(Self {
            section,
            node,
            last: Mutex::new(HashMap::new()),
            running: TaskTracker::new(),
        })
    }

    /// At shutdown, after the last session ended: waits for the hooks still
    /// queued or running (the sessions' `session_down`), each bounded by
    /// its own time limit, and for all of them at most `within`.
    pub async fn finish(&self, within: Duration) {
        self.running.close();
        if tokio::time::timeout(within, self.running.wait())
            .await
            .is_err()
        {
            tracing::warn!("some session hooks did not finish before the server stopped");
        }
    }

    /// The hooks of a session of `identity` with `addresses` (IPv4 first),
    /// if any hook is configured.
    pub fn session(self: &Arc<Self>, identity: &str, addresses: &[IpAddr]) -> Option<SessionHook> {
        if self.section.session_up.is_none() && self.section.session_down.is_none() {
            return None;
        }
        let address = *addresses.first()?;
        let bare = |a: Option<&IpAddr>| a.map(ToString::to_string).unwrap_or_default();
        Some(SessionHook {
            hooks: self.clone(),
            env: vec![
                ("TWOWAY_IDENTITY", identity.to_owned()),
                ("TWOWAY_ADDRESS", bare(addresses.first())),
                ("TWOWAY_ADDRESS6", bare(addresses.get(1))),
                ("TWOWAY_NODE", self.node.clone()),
            ],
            address,
        })
    }

    /// Queues `command` behind the earlier hooks of `address`.
    fn spawn(self: &Arc<Self>, which: &'static str, command: String, hook: &SessionHook) {
        let (done, finished) = oneshot::channel();
        let before = self
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hook.address, finished);
        let env = hook.env.clone();
        let limit = Duration::from_secs(self.section.timeout_secs.into());
        let hooks = self.clone();
        let address = hook.address;
        self.running.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            run(which, &command, &env, limit).await;
            let _ = done.send(());
            // Forget the address once nothing is queued behind this hook.
            let mut last = hooks.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.get_mut(&address).is_some_and(|r| r.try_recv().is_ok()) {
                last.remove(&address);
            }
        });
    }
}

impl SessionHook {
    /// Runs `session_up` (in the background).
    pub fn up(&self) {
        if let Some(c) = self.hooks.section.session_up.clone() {
            self.hooks.spawn("session_up", c, self);
        }
    }

    /// Runs `session_down` (in the background).
    pub fn down(&self) {
        if let Some(c) = self.hooks.section.session_down.clone() {
            self.hooks.spawn("session_down", c, self);
        }
    }
}

/// Runs one hook to its end or its time limit; failures are logged.
async fn run(which: &str, command: &str, env: &[(&'static str, String)], limit: Duration) {
    let env = env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([("TWOWAY_HOOK", which)]);
    match hook::run(command, env, limit).await {
        Outcome::Succeeded { stderr } if stderr.is_empty() => {
            tracing::debug!(hook = which, "hook done")
        }
        Outcome::Succeeded { stderr } => tracing::info!(hook = which, %stderr, "hook done"),
        Outcome::Failed { status, stderr } => {
            tracing::warn!(hook = which, %status, %stderr, "hook failed")
        }
        Outcome::TimedOut => tracing::warn!(
            hook = which,
            seconds = limit.as_secs(),
            "hook ran too long and was killed"
        ),
        Outcome::Error(e) => tracing::warn!(hook = which, error = %e, "cannot start the hook"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twoway_common::eventually::eventually;

    #[tokio::test]
    async fn hooks_of_one_address_run_in_order_with_the_environment() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let section = HooksSection {
            // The first up sleeps: the down queued after it must still wait.
            session_up: Some(format!(
                "[ \"$TWOWAY_IDENTITY\" = slow ] && sleep 0.3; echo \"$TWOWAY_HOOK $TWOWAY_IDENTITY $TWOWAY_ADDRESS $TWOWAY_ADDRESS6 $TWOWAY_NODE\" >> {}",
                log.path().display()
            )),
            session_down: Some(format!("echo \"$TWOWAY_HOOK $TWOWAY_IDENTITY\" >> {}", log.path().display())),
            timeout_secs: 5,
        };
        let hooks = SessionHooks::new(section, "vpn-a".into());
        let a: Vec<IpAddr> = vec!["10.77.0.130".parse().unwrap(), "fd77::82".parse().unwrap()];
        let slow = hooks.session("slow", &a).unwrap();
        slow.up();
        slow.down();
        let next = hooks.session("alice", &a[..1]).unwrap();
        next.up();
        let want = "session_up slow 10.77.0.130 fd77::82 vpn-a\nsession_down slow\nsession_up alice 10.77.0.130  vpn-a\n";
        eventually(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                let got = std::fs::read_to_string(log.path()).unwrap_or_default();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_hook_past_its_time_is_killed() {
        let started = std::time::Instant::now();
        run("session_up", "sleep 30", &[], Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_hooks_no_work() {
        let hooks = SessionHooks::new(HooksSection::default(), String::new());
        assert!(hooks
            .session("alice", &["10.77.0.2".parse().unwrap()])
            .is_none());
    }
}
