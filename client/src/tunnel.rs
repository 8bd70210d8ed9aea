//! The tunnel device of a running client: the TUN device with the
//! assignment's addresses and MTU, the task reading it into the outbound
//! queue, the routes and DNS put in force through [`Routing`], and the up and
//! down hooks around it.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{info, warn};
use twoway_common::inside::tun::{TunInside, TunSettings};
use twoway_common::message::{Assignment, Update};
use twoway_common::queue::QueueTx;
use twoway_common::relay;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::hooks;
use crate::host::system::Routing;
use crate::status::Status;
use crate::update::Diff;

/// The configured device: TUN and the task reading it (routes and DNS are in [`Routing`]).
pub struct Tunnel {
    pub tun: Arc<TunInside>,
    reader: JoinHandle<()>,
    pub assignment: Assignment,
    down_hook: Option<(String, Vec<(String, String)>)>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some((cmd, env)) = self.down_hook.take() {
            hooks::run("down", &cmd, &env);
        }
        self.reader.abort();
    }
}

impl Tunnel {
    /// Takes the device down and waits until it is gone, so that a device of
    /// the same name can be created at once (the reader task holds the device
    /// until it has finished).
    pub async fn close(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    pub fn open(
        config: &ClientConfig,
        a: &Assignment,
        queue: QueueTx,
        routing: &mut Routing,
    ) -> Result<Self, ClientError> {
        let name = config.device_name();
        let ipv4 = match a.address.ip() {
            IpAddr::V4(ip) => (ip, a.address.prefix()),
            IpAddr::V6(_) => {
                return Err(ClientError::Internal(
                    "server assigned an IPv6 address as IPv4".into(),
                ))
            }
        };
        let ipv6 = a.address6.and_then(|n| match n.ip() {
            IpAddr::V6(ip) => Some((ip, n.prefix())),
            IpAddr::V4(_) => None,
        });
        let tun = TunInside::create(&TunSettings {
            name,
            ipv4,
            ipv6,
            mtu: a.mtu,
            offload: config.tunnel.offload,
            multi_queue: false,
        })
        .map_err(|e| {
            if e.is_privilege() {
                ClientError::Privilege(e.to_string())
            } else {
                ClientError::Internal(e.to_string())
            }
        })?;
        let tun = Arc::new(tun);
        routing
            .install(tun.name(), a)
            .map_err(ClientError::Internal)?;
        routing.apply_dns(config, tun.name(), a);
        let reader = {
            let tun = tun.clone();
            let max = twoway_common::inside::max_read(&*tun, a.mtu);
            tokio::spawn(async move {
                if let Err(e) = relay::inside_to_queue(&*tun, queue, max).await {
                    warn!(error = %e, "reading the tunnel device failed");
                }
            })
        };
        info!(device = tun.name(), address = %a.address, routes = %twoway_common::logging::list(&a.routes), "tunnel up");
        let env = hooks::environment(a, tun.name(), &config.server);
        if let Some(cmd) = &config.hooks.up {
            hooks::run("up", cmd, &env);
        }
        let down_hook = config.hooks.down.clone().map(|cmd| (cmd, env));
        Ok(Self {
            tun,
            reader,
            assignment: a.clone(),
            down_hook,
        })
    }

    /// Puts a changed grant in force on the same device and connection:
    /// routes added and removed (through the journal of host changes, so
    /// that `down` or crash recovery removes exactly what is installed),
    /// DNS replaced, status updated (its `since` stays), the up hook run
    /// again with the new environment. Returns what changed, for the
    /// caller's log line. Blocks on `ip` and `resolvectl`.
    pub fn update(
        &mut self,
        config: &ClientConfig,
        update: &Update,
        routing: &mut Routing,
        status: &Status,
    ) -> Diff {
        let diff = Diff::between(&self.assignment.grant(), update);
        let next = self.assignment.updated(update);
        if diff.is_empty() {
            self.assignment = next;
            return diff;
        }
        let dev = self.tun.name();
        let full_before = routing.full_tunnel();
        if let Err(e) = routing.update(dev, &next) {
            warn!(error = %e, "cannot install every route the server pushed; the others are in place");
            status.failed(format!("applying the server's new routes: {e}"));
        }
        // A full tunnel takes every DNS query: its coming or going changes DNS too.
        if diff.dns_changed() || routing.full_tunnel() != full_before {
            routing.update_dns(config, dev, &next);
        }
        status.updated(&next);
        status.dns(routing.dns_method(), routing.full_tunnel());
        let env = hooks::environment(&next, dev, &config.server);
        if let Some(cmd) = config.hooks.up.clone() {
            let env = env.clone();
            // Not on the relay's thread: a hook may take up to 30 s.
            tokio::task::spawn_blocking(move || hooks::run("update", &cmd, &env));
        }
        if let Some((_, old)) = &mut self.down_hook {
            *old = env;
        }
        self.assignment = next;
        diff
    }
}
