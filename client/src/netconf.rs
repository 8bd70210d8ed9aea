//! Routes through the tunnel, installed with the `ip` tool. Argument building
//! is pure and unit-tested; `Routes` removes what it installed when dropped.

use std::process::Command;

use ipnetwork::IpNetwork;

/// `ip` arguments to add (replace) or delete a route via `dev`.
pub fn route_args(action: RouteAction, dev: &str, net: &IpNetwork) -> Vec<String> {
    let family = if net.is_ipv4() { "-4" } else { "-6" };
    let verb = match action {
        RouteAction::Replace => "replace",
        RouteAction::Delete => "del",
    };
    [family, "route", verb, &net.to_string(), "dev", dev]
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What to do with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// Add, or update if present.
    Replace,
    /// Remove.
    Delete,
}

fn ip(args: &[String]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Routes installed on a device; dropping removes them.
#[derive(Debug)]
pub struct Routes {
    dev: String,
    installed: Vec<IpNetwork>,
}

impl Routes {
    /// Installs every route via `dev`; on failure removes those already added.
    pub fn install(dev: &str, routes: &[IpNetwork]) -> Result<Self, String> {
        let mut guard = Self {
            dev: dev.to_owned(),
            installed: Vec::new(),
        };
        for net in routes {
            ip(&route_args(RouteAction::Replace, dev, net))?;
            guard.installed.push(*net);
        }
        Ok(guard)
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        for net in self.installed.drain(..).rev() {
            // The device's removal takes its routes too; this only matters while it lives.
            if let Err(e) = ip(&route_args(RouteAction::Delete, &self.dev, &net)) {
                tracing::debug!(error = %e, "route removal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_family_specific_arguments() {
        let v4: IpNetwork = "10.99.0.0/24".parse().unwrap();
        let v6: IpNetwork = "fd99::/64".parse().unwrap();
        assert_eq!(
            route_args(RouteAction::Replace, "tw-alice", &v4),
            ["-4", "route", "replace", "10.99.0.0/24", "dev", "tw-alice"]
        );
        assert_eq!(
            route_args(RouteAction::Delete, "tw-alice", &v6),
            ["-6", "route", "del", "fd99::/64", "dev", "tw-alice"]
        );
    }
}
