//! The tunnel device of a running client: the device with the assignment's
//! addresses and MTU, the task reading it into the outbound queue, the
//! routes and DNS put in force through the [`HostNetwork`], and the up and
//! down hooks around it. Generic over the device, so that tests use an
//! in-memory one.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};
use twoway_common::inside::tun::{TunError, TunSettings};
use twoway_common::inside::Inside;
use twoway_common::message::{Assignment, Update};
use twoway_common::queue::QueueTx;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::hooks;
use crate::host::{plan, Change, DnsMethod, HostNetwork};
use crate::status::Status;
use crate::update::Diff;

/// Makes the device for an assignment: `TunInside::create` for real.
pub trait OpenDevice<I>: FnMut(&TunSettings) -> Result<I, TunError> + Send {}
impl<I, F: FnMut(&TunSettings) -> Result<I, TunError> + Send> OpenDevice<I> for F {}

/// The configured device and the task reading it (routes and DNS are the
/// [`HostNetwork`]'s). [`Tunnel::close`] runs the down hook and removes it.
pub struct Tunnel<I> {
    /// The device.
    pub tun: Arc<I>,
    /// Its name.
    pub name: String,
    /// What it is configured for.
    pub assignment: Assignment,
    /// How the assignment's DNS was put in force.
    pub dns_method: DnsMethod,
    reader: JoinHandle<()>,
    down_hook: Option<(String, Vec<(String, String)>)>,
    /// The last update hook started (each waits for the one before it);
    /// dropping it ends it, with the ones before.
    update_hook: Option<AbortOnDropHandle<()>>,
}

impl<I> Drop for Tunnel<I> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<I: Inside> Tunnel<I> {
    /// Runs the down hook, then takes the device down and waits until it is
    /// gone, so that a device of the same name can be created at once (the
    /// reader task holds the device until it has finished).
    pub async fn close(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
        // An update hook still running is moot now, and must not run after
        // (or beside) the down hook: ended first, with what it started.
        if let Some(update) = self.update_hook.take() {
            update.abort();
            let _ = update.await;
        }
        if let Some((cmd, env)) = self.down_hook.take() {
            hooks::run("down", &cmd, &env).await;
        }
    }

    /// Makes the device for `a` with `open`, puts routes and DNS in force,
    /// starts reading it into `queue`, and runs the up hook.
    pub async fn open(
        config: &ClientConfig,
        a: &Assignment,
        queue: QueueTx,
        host: &mut impl HostNetwork,
        open: &mut impl OpenDevice<I>,
    ) -> Result<Self, ClientError> {
        let name = config.device_name();
        let ipv4 = match a.address.ip() {
            IpAddr::V4(ip) => (ip, a.address.prefix()),
            IpAddr::V6(_) => return Err(ClientError::Ipv6Address),
        };
        let ipv6 = a.address6.and_then(|n| match n.ip() {
            IpAddr::V6(ip) => Some((ip, n.prefix())),
            IpAddr::V4(_) => None,
        });
        let tun = Arc::new(open(&TunSettings {
            name: name.clone(),
            ipv4,
            ipv6,
            mtu: a.mtu,
            offload: config.tunnel.offload,
            multi_queue: false,
        })?);
        let reader = {
            let tun = tun.clone();
            let max = twoway_common::inside::max_read(&*tun, a.mtu);
            tokio::spawn(async move {
                if let Err(e) = twoway_common::inside::reader::to_queue(&*tun, queue, max).await {
                    warn!(error = %e, "reading the tunnel device failed");
                }
            })
        };
        let mut tunnel = Self {
            tun,
            name,
            assignment: a.clone(),
            dns_method: DnsMethod::None,
            reader,
            down_hook: None,
            update_hook: None,
        };
        host.routes(&tunnel.name, a, Change::New).await?;
        tunnel.dns_method = host.dns(&tunnel.name, a, Change::New).await;
        info!(device = tunnel.name, address = %a.address, routes = %twoway_common::logging::list(&a.routes), "tunnel up");
        let env = hooks::environment(a, &tunnel.name, &config.server);
        if let Some(cmd) = &config.hooks.up {
            hooks::run("up", cmd, &env).await;
        }
        tunnel.down_hook = config.hooks.down.clone().map(|cmd| (cmd, env));
        Ok(tunnel)
    }

    /// Puts a changed grant in force on the same device and connection:
    /// routes added and removed (through the journal of host changes, so
    /// that `down` or crash recovery removes exactly what is installed),
    /// DNS replaced, status updated (its `since` stays), the up hook run
    /// again with the new environment (in the background, after any update
    /// hook still running: each may take up to [`hooks::HOOK_TIMEOUT`]).
    /// Returns what changed, for the caller's log line.
    pub async fn update(
        &mut self,
        config: &ClientConfig,
        update: &Update,
        host: &mut impl HostNetwork,
        status: &Status,
    ) -> Diff {
        let diff = Diff::between(&self.assignment.grant(), update);
        let next = self.assignment.updated(update);
        if diff.is_empty() {
            self.assignment = next;
            return diff;
        }
        let full_before = plan::full_tunnel(&self.assignment);
        if let Err(e) = host.routes(&self.name, &next, Change::Update).await {
            warn!(error = %e, "cannot install every route the server pushed; the others are in place");
            status.failed(format!("applying the server's new routes: {e}"));
        }
        // A full tunnel takes every DNS query: its coming or going changes DNS too.
        if diff.dns_changed() || plan::full_tunnel(&next) != full_before {
            self.dns_method = host.dns(&self.name, &next, Change::Update).await;
        }
        status.updated(&next);
        status.dns(self.dns_method, plan::full_tunnel(&next));
        let env = hooks::environment(&next, &self.name, &config.server);
        if let Some(cmd) = config.hooks.up.clone() {
            let env = env.clone();
            // One update hook at a time, in the order the updates came.
            let before = self.update_hook.take();
            self.update_hook = Some(AbortOnDropHandle::new(tokio::spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                hooks::run("update", &cmd, &env).await
            })));
        }
        if let Some((_, old)) = &mut self.down_hook {
            *old = env;
        }
        self.assignment = next;
        diff
    }

    /// Shows the device and its assignment in `status`.
    pub fn show(&self, status: &Status) {
        status.up(&self.assignment, &self.name);
        status.dns(self.dns_method, plan::full_tunnel(&self.assignment));
    }
}
