//! Up and down hooks: commands run after the tunnel is up and before it goes
//! down, with the assignment in environment variables, as child processes
//! through tokio with a time limit. A failing hook is logged, never fatal.

use std::time::Duration;

use twoway_common::hook::{self, Outcome};
use twoway_common::message::Assignment;

/// Longest a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment a hook sees, as (name, value) pairs. Pure.
pub fn environment(a: &Assignment, device: &str, server: &str) -> Vec<(String, String)> {
    let join = |v: Vec<String>| v.join(" ");
    vec![
        ("TWOWAY_DEVICE".into(), device.to_owned()),
        ("TWOWAY_SERVER".into(), server.to_owned()),
        ("TWOWAY_ADDRESS".into(), a.address.to_string()),
        (
            "TWOWAY_ADDRESS6".into(),
            a.address6.map(|n| n.to_string()).unwrap_or_default(),
        ),
        (
            "TWOWAY_GATEWAYS".into(),
            join(a.gateways.iter().map(ToString::to_string).collect()),
        ),
        (
            "TWOWAY_ROUTES".into(),
            join(a.routes.iter().map(ToString::to_string).collect()),
        ),
        (
            "TWOWAY_DNS".into(),
            join(a.dns.iter().map(ToString::to_string).collect()),
        ),
        ("TWOWAY_SEARCH".into(), a.search.join(" ")),
        ("TWOWAY_MTU".into(), a.mtu.to_string()),
    ]
}

/// Runs `command` with `sh -c` as a child process in its own process group,
/// waiting at most [`HOOK_TIMEOUT`] (then the group is killed). Logs the
/// outcome; never fails.
pub async fn run(kind: &str, command: &str, env: &[(String, String)]) {
    let env = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("TWOWAY_HOOK", kind)]);
    match hook::run(command, env, HOOK_TIMEOUT).await {
        Outcome::Succeeded { stderr } if stderr.is_empty() => {
            tracing::info!(hook = kind, "hook ran")
        }
        Outcome::Succeeded { stderr } => tracing::info!(hook = kind, %stderr, "hook ran"),
        Outcome::Failed { status, stderr } => {
            tracing::warn!(hook = kind, %status, %stderr, "hook failed")
        }
        Outcome::TimedOut => tracing::warn!(hook = kind, "hook timed out and was killed"),
        Outcome::Error(e) => tracing::warn!(hook = kind, error = %e, "hook could not run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_carries_the_assignment() {
        let mut a = crate::fixtures::assignment(&["10.99.0.0/24", "10.100.0.0/16"], false);
        a.dns = vec!["10.99.0.53".parse().unwrap()];
        a.search = vec!["corp.example".into()];
        let env = environment(&a, "tw-alice", "vpn:4433");
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("TWOWAY_ADDRESS"), "10.77.0.10/24");
        assert_eq!(get("TWOWAY_ROUTES"), "10.99.0.0/24 10.100.0.0/16");
        assert_eq!(get("TWOWAY_DNS"), "10.99.0.53");
        assert_eq!(get("TWOWAY_ADDRESS6"), "");
        assert_eq!(get("TWOWAY_DEVICE"), "tw-alice");
    }

    #[tokio::test]
    async fn hook_sees_its_environment_and_failure_is_not_fatal() {
        let (_dir, out) = twoway_common::temp_path::temp_path("out");
        let env = vec![("TWOWAY_DEVICE".to_string(), "tw-x".to_string())];
        run(
            "up",
            &format!("echo \"$TWOWAY_HOOK $TWOWAY_DEVICE\" > {}", out.display()),
            &env,
        )
        .await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "up tw-x\n");
        run("down", "exit 3", &env).await;
    }
}
