//! The client's routes and DNS across reconnects: plans them from the
//! assignment and the host's routing table (`plan.rs`), applies them
//! through [`HostChanges`], re-plans when the network changes, and tells the
//! session loop when the path to the server moved so that it reconnects at
//! once instead of waiting for the keepalive timeout.

use std::net::IpAddr;

use tracing::{debug, info, warn};
use twoway_common::logging::list;
use twoway_common::message::Assignment;

use crate::config::ClientConfig;
use crate::host::dns::{self, DnsMethod};
use crate::host::journal::HostChanges;
use crate::host::plan::{self, OuterPath, Plan, PlanInput};
use crate::host::routes::{self, Snapshot};

/// The device and assignment routes are planned for.
#[derive(Debug, Clone)]
struct Device {
    name: String,
    assignment: Assignment,
}

/// What [`Routing::refresh`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The connection's path is as it was.
    Same,
    /// The path to the server is gone or different, or the connection's
    /// local address disappeared: the connection is dead or soon will be.
    Moved(String),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Routing {
    changes: HostChanges,
    allow_lan: bool,
    server: IpAddr,
    device: Option<Device>,
    /// The outer path and local address of the current connection.
    connection: Option<(Option<OuterPath>, IpAddr)>,
    /// The outer path seen last.
    last_outer: Option<OuterPath>,
    dns_method: DnsMethod,
}

impl Routing {
    /// Routing towards `server`, recording changes in `changes`.
    pub fn new(changes: HostChanges, config: &ClientConfig, server: IpAddr) -> Self {
        Self {
            changes,
            allow_lan: config.tunnel.allow_lan,
            server,
            device: None,
            connection: None,
            last_outer: None,
            dns_method: DnsMethod::None,
        }
    }

    /// The server address routes are planned for.
    pub fn server(&self) -> IpAddr {
        self.server
    }

    /// How the DNS of the current assignment was applied.
    pub fn dns_method(&self) -> DnsMethod {
        self.dns_method
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

    /// A connection from `local` is up: remember the path it uses.
    pub fn connected(&mut self, local: IpAddr) {
        let outer = routes::read_snapshot()
            .map(|s| self.outer(&s))
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the routing table");
                None
            });
        self.last_outer = outer.clone();
        self.connection = Some((outer, local));
    }

    /// The connection is gone (reconnecting).
    pub fn disconnected(&mut self) {
        self.connection = None;
    }

    /// Routes for the TUN device `name` and `assignment`, installed now.
    pub fn install(&mut self, name: &str, assignment: &Assignment) -> Result<(), String> {
        let plan = self.sync(name, assignment)?;
        info!(full_tunnel = plan.full_tunnel, outer = ?plan::describe(plan.outer.as_ref()), routes = plan.routes.len(), "routes installed");
        Ok(())
    }

    /// Like [`Routing::install`], for an assignment whose routes changed on
    /// the same device (an Update): only the difference is added and
    /// removed, recorded in the journal first; the caller logs the change.
    pub fn update(&mut self, name: &str, assignment: &Assignment) -> Result<(), String> {
        let plan = self.sync(name, assignment)?;
        debug!(
            full_tunnel = plan.full_tunnel,
            routes = plan.routes.len(),
            "routes updated"
        );
        Ok(())
    }

    fn sync(&mut self, name: &str, assignment: &Assignment) -> Result<Plan, String> {
        self.device = Some(Device {
            name: name.to_owned(),
            assignment: assignment.clone(),
        });
        let snapshot = routes::read_snapshot()?;
        let plan = self.plan(&snapshot).unwrap_or_else(|| Plan {
            routes: vec![],
            outer: None,
            full_tunnel: false,
        });
        self.changes.sync_routes(&plan.routes, &snapshot)?;
        Ok(plan)
    }

    /// Looks at the network again (`snapshot`, from
    /// `routes::read_snapshot`): re-plans routes (the outer path may have
    /// changed) and says whether the connection has to be replaced.
    pub fn refresh(&mut self, snapshot: Result<Snapshot, String>) -> Refresh {
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read the routing table");
                return Refresh::Same;
            }
        };
        if let Some(plan) = self.plan(&snapshot) {
            if let Err(e) = self.changes.sync_routes(&plan.routes, &snapshot) {
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

    /// Applies the assignment's DNS on device `dev`, as the config allows.
    pub fn apply_dns(&mut self, config: &ClientConfig, dev: &str, a: &Assignment) -> DnsMethod {
        let method = self.set_dns(config, dev, a);
        if method != DnsMethod::NotApplied {
            info!(method = method.as_str(), dns = %list(&a.dns), search = ?a.search, "DNS");
        }
        method
    }

    /// [`Routing::apply_dns`] for an Update, whose caller logs the change.
    pub fn update_dns(&mut self, config: &ClientConfig, dev: &str, a: &Assignment) -> DnsMethod {
        let method = self.set_dns(config, dev, a);
        debug!(method = method.as_str(), "DNS updated");
        method
    }

    fn set_dns(&mut self, config: &ClientConfig, dev: &str, a: &Assignment) -> DnsMethod {
        let full_tunnel = a.routes.iter().any(|r| r.prefix() == 0);
        let method = if a.dns.is_empty() && a.search.is_empty() {
            self.changes.clear_dns();
            DnsMethod::None
        } else if config.dns.resolved && dns::resolved_running() {
            match self.changes.set_resolved(
                &dns::resolvectl_apply(dev, &a.dns, &a.search, full_tunnel),
                dev,
            ) {
                Ok(()) => DnsMethod::Resolved,
                Err(e) => {
                    warn!(error = %e, "systemd-resolved refused the DNS settings");
                    self.fallback(config)
                }
            }
        } else {
            self.resolv_conf_or_hook(config, dev, a)
        };
        if method == DnsMethod::NotApplied {
            warn!(dns = %list(&a.dns),
                "the server pushed DNS, but systemd-resolved is not running, [dns] manage_resolv_conf is off and there is no up hook");
        }
        self.dns_method = method;
        method
    }

    fn resolv_conf_or_hook(
        &mut self,
        config: &ClientConfig,
        dev: &str,
        a: &Assignment,
    ) -> DnsMethod {
        if !config.dns.manage_resolv_conf {
            return self.fallback(config);
        }
        let text = dns::render_resolv_conf(dev, &a.dns, &a.search);
        match self.changes.set_resolv_conf(&config.dns.resolv_conf, &text) {
            Ok(()) => DnsMethod::ResolvConf,
            Err(e) => {
                warn!(file = %config.dns.resolv_conf.display(), error = %e, "cannot write resolv.conf");
                self.fallback(config)
            }
        }
    }

    fn fallback(&self, config: &ClientConfig) -> DnsMethod {
        if config.hooks.up.is_some() {
            DnsMethod::Hook
        } else {
            DnsMethod::NotApplied
        }
    }

    /// Whether the current plan is a full tunnel.
    pub fn full_tunnel(&self) -> bool {
        self.device
            .as_ref()
            .is_some_and(|d| d.assignment.routes.iter().any(|r| r.prefix() == 0))
    }
}
