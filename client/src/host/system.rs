//! The real [`HostNetwork`]: the client's routes and DNS across reconnects.
//! Plans them from the assignment and the host's routing table (`plan.rs`),
//! applies them through [`HostChanges`], re-plans when the network changes
//! (`watch.rs`), and tells the session loop when the path to the server
//! moved so that it reconnects at once instead of waiting for the keepalive
//! timeout.

use std::net::IpAddr;

use tracing::{debug, info, warn};
use twoway_common::logging::list;
use twoway_common::message::Assignment;

use super::dns::{self, DnsMethod};
use super::journal::HostChanges;
use super::plan::{self, OuterPath, Plan, PlanInput};
use super::routes::{self, Snapshot};
use super::tool::HostError;
use super::watch::Watch;
use super::{Change, HostNetwork, Refresh};
use crate::config::{ClientConfig, DnsSection};

/// The device and assignment routes are planned for.
#[derive(Debug, Clone)]
struct Device {
    name: String,
    assignment: Assignment,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SystemNetwork {
    changes: HostChanges,
    /// Opened when first waited on, once the device and its routes are in place.
    watch: Option<Watch>,
    allow_lan: bool,
    dns: DnsSection,
    /// Whether an up hook can take DNS nothing else applies.
    up_hook: bool,
    server: IpAddr,
    device: Option<Device>,
    /// The outer path and local address of the current connection.
    connection: Option<(Option<OuterPath>, IpAddr)>,
    /// The outer path seen last.
    last_outer: Option<OuterPath>,
}

impl SystemNetwork {
    /// Routes towards `server`, recording changes in `changes`.
    pub fn new(changes: HostChanges, config: &ClientConfig, server: IpAddr) -> Self {
        Self {
            changes,
            watch: None,
            allow_lan: config.tunnel.allow_lan,
            dns: config.dns.clone(),
            up_hook: config.hooks.up.is_some(),
            server,
            device: None,
            connection: None,
            last_outer: None,
        }
    }

    fn plan(&self, snapshot: &Snapshot) -> Option<Plan> {
        let d = self.device.as_ref()?;
        Some(plan::plan(PlanInput {
            assignment: &d.assignment,
            tun: &d.name,
            server: self.server,
            allow_lan: self.allow_lan,
            snapshot,
        }))
    }

    fn outer(&self, snapshot: &Snapshot) -> Option<OuterPath> {
        let tun = self.device.as_ref().map(|d| d.name.as_str()).unwrap_or("");
        plan::outer_path(snapshot, self.server, tun)
    }

    async fn sync(&mut self, name: &str, assignment: &Assignment) -> Result<Plan, HostError> {
        self.device = Some(Device {
            name: name.to_owned(),
            assignment: assignment.clone(),
        });
        let snapshot = routes::read_snapshot().await?;
        let plan = self.plan(&snapshot).unwrap_or_else(|| Plan {
            routes: vec![],
            outer: None,
            full_tunnel: false,
        });
        self.changes.sync_routes(&plan.routes, &snapshot).await?;
        Ok(plan)
    }

    async fn set_dns(&mut self, dev: &str, a: &Assignment) -> DnsMethod {
        let method = if a.dns.is_empty() && a.search.is_empty() {
            self.changes.clear_dns().await;
            DnsMethod::None
        } else if self.dns.resolved && dns::resolved_running() {
            let commands = dns::resolvectl_apply(dev, &a.dns, &a.search, plan::full_tunnel(a));
            match self.changes.set_resolved(&commands, dev).await {
                Ok(()) => DnsMethod::Resolved,
                Err(e) => {
                    warn!(error = %e, "systemd-resolved refused the DNS settings");
                    self.fallback()
                }
            }
        } else {
            self.resolv_conf_or_hook(dev, a)
        };
        if method == DnsMethod::NotApplied {
            warn!(dns = %list(&a.dns),
                "the server pushed DNS, but systemd-resolved is not running, [dns] manage_resolv_conf is off and there is no up hook");
        }
        method
    }

    fn resolv_conf_or_hook(&mut self, dev: &str, a: &Assignment) -> DnsMethod {
        if !self.dns.manage_resolv_conf {
            return self.fallback();
        }
        let text = dns::render_resolv_conf(dev, &a.dns, &a.search);
        match self.changes.set_resolv_conf(&self.dns.resolv_conf, &text) {
            Ok(()) => DnsMethod::ResolvConf,
            Err(e) => {
                warn!(file = %self.dns.resolv_conf.display(), error = %e, "cannot write resolv.conf");
                self.fallback()
            }
        }
    }

    fn fallback(&self) -> DnsMethod {
        if self.up_hook {
            DnsMethod::Hook
        } else {
            DnsMethod::NotApplied
        }
    }
}

impl HostNetwork for SystemNetwork {
    async fn connected(&mut self, local: IpAddr) {
        let outer = match routes::read_snapshot().await {
            Ok(s) => self.outer(&s),
            Err(e) => {
                warn!(error = %e, "cannot read the routing table");
                None
            }
        };
        self.last_outer = outer.clone();
        self.connection = Some((outer, local));
    }

    fn disconnected(&mut self) {
        self.connection = None;
    }

    /// A new device's routes are logged; for an Update only the difference
    /// is added and removed, recorded in the journal first, and the caller
    /// logs the change.
    async fn routes(
        &mut self,
        dev: &str,
        assignment: &Assignment,
        change: Change,
    ) -> Result<(), HostError> {
        let plan = self.sync(dev, assignment).await?;
        match change {
            Change::New => {
                info!(full_tunnel = plan.full_tunnel, outer = ?plan::describe(plan.outer.as_ref()), routes = plan.routes.len(), "routes installed")
            }
            Change::Update => debug!(
                full_tunnel = plan.full_tunnel,
                routes = plan.routes.len(),
                "routes updated"
            ),
        }
        Ok(())
    }

    async fn dns(&mut self, dev: &str, a: &Assignment, change: Change) -> DnsMethod {
        let method = self.set_dns(dev, a).await;
        match change {
            Change::New if method != DnsMethod::NotApplied => {
                info!(method = method.as_str(), dns = %list(&a.dns), search = ?a.search, "DNS")
            }
            Change::New => {}
            Change::Update => debug!(method = method.as_str(), "DNS updated"),
        }
        method
    }

    async fn watch(&mut self) {
        self.watch.get_or_insert_with(Watch::open).changed().await;
    }

    async fn refresh(&mut self) -> Refresh {
        let snapshot = match routes::read_snapshot().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the routing table");
                return Refresh::Same;
            }
        };
        if let Some(plan) = self.plan(&snapshot) {
            if let Err(e) = self.changes.sync_routes(&plan.routes, &snapshot).await {
                warn!(error = %e, "cannot update routes after a network change");
            }
        }
        let outer = self.outer(&snapshot);
        let changed_since_last = outer != self.last_outer;
        if changed_since_last {
            info!(server = %self.server, from = ?plan::describe(self.last_outer.as_ref()), to = ?plan::describe(outer.as_ref()), "path to the server changed");
        }
        self.last_outer = outer.clone();
        match &self.connection {
            Some((path, _)) if *path != outer => Refresh::Moved(match &outer {
                None => "no route to the server any more".into(),
                Some(p) => format!("the path to the server changed to {p}"),
            }),
            Some((_, local)) if !snapshot.addresses.contains(local) => {
                Refresh::Moved(format!("this host no longer has the address {local}"))
            }
            Some(_) => Refresh::Same,
            // Reconnecting: a new usable path is worth an attempt right away.
            None if changed_since_last && outer.is_some() => {
                Refresh::Moved("a path to the server appeared".into())
            }
            None => Refresh::Same,
        }
    }

    async fn undo(&mut self) {
        self.changes.undo().await;
    }
}
