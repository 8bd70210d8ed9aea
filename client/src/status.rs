//! The client's state as `twoway status` shows it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use twoway_common::control::status::{Carrier, ClientState, ClientStatus, Tunnel};
use twoway_common::control::timestamp::rfc3339;
use twoway_common::message::Assignment;
use twoway_common::outside::udp::UdpPath;
use twoway_common::relay::Counters;

use crate::credentials::Certificate;
use crate::host::dns::DnsMethod;

/// Where the client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection in progress.
    Connecting,
    /// Tunnel up.
    Up,
    /// Connection lost; the device and routes stay while we reconnect.
    Reconnecting,
}

impl State {
    fn reported(self) -> ClientState {
        match self {
            Self::Connecting => ClientState::Connecting,
            Self::Up => ClientState::Up,
            Self::Reconnecting => ClientState::Reconnecting,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    assignment: Option<Assignment>,
    device: Option<String>,
    since: Option<SystemTime>,
    last_error: Option<String>,
    dns_method: Option<DnsMethod>,
    full_tunnel: bool,
    /// The session's UDP path, when it has the UDP channel.
    udp: Option<Arc<UdpPath>>,
}

/// Shared status, updated by the session loop, read by the control socket.
#[derive(Debug, Clone)]
pub struct Status {
    server: String,
    config: Option<String>,
    certificate: Option<Certificate>,
    inner: Arc<Mutex<Inner>>,
    /// Traffic counters across reconnects.
    pub counters: Arc<Counters>,
}

impl Status {
    /// A new status for `server`, connecting.
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_owned(),
            config: None,
            certificate: None,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Connecting,
                assignment: None,
                device: None,
                since: None,
                last_error: None,
                dns_method: None,
                full_tunnel: false,
                udp: None,
            })),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The config file this client runs (shown as `config`, used by `twoway list`).
    pub fn with_config(mut self, path: &std::path::Path) -> Self {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        self.config = Some(absolute.display().to_string());
        self
    }

    /// The client certificate: `certificate_expires`, and a warning while it
    /// expires within [`crate::expiry::WARN_WITHIN`].
    pub fn with_certificate(mut self, certificate: Certificate) -> Self {
        self.certificate = Some(certificate);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tunnel is up with `assignment` on `device`.
    pub fn up(&self, assignment: &Assignment, device: &str) {
        let mut s = self.lock();
        s.state = State::Up;
        s.assignment = Some(assignment.clone());
        s.device = Some(device.to_owned());
        s.since = Some(SystemTime::now());
        s.last_error = None;
    }

    /// The server changed the session's routes or DNS: the session, its
    /// state and `since` stay as they are.
    pub fn updated(&self, assignment: &Assignment) {
        self.lock().assignment = Some(assignment.clone());
    }

    /// How the DNS of the assignment was applied, and whether it is a full tunnel.
    pub fn dns(&self, method: DnsMethod, full_tunnel: bool) {
        let mut s = self.lock();
        s.dns_method = Some(method);
        s.full_tunnel = full_tunnel;
    }

    /// The UDP path of the current session (None: data only over TCP).
    pub fn udp(&self, path: Option<Arc<UdpPath>>) {
        self.lock().udp = path;
    }

    /// Something went wrong that did not end the session (shown as `last_error`).
    pub fn failed(&self, why: String) {
        self.lock().last_error = Some(why);
    }

    /// The connection was lost for `why`.
    pub fn reconnecting(&self, why: String) {
        let mut s = self.lock();
        s.state = State::Reconnecting;
        s.last_error = Some(why);
    }

    /// What `status --json` prints.
    pub fn report(&self) -> ClientStatus {
        let s = self.lock();
        let a = s.assignment.as_ref();
        let tunnel = Tunnel {
            server: self.server.clone(),
            transport: s.udp.as_ref().map_or(Carrier::Tcp, |p| p.transport()),
            config: self.config.clone(),
            device: s.device.clone(),
            address: a.map(|a| a.address.ip()),
            address6: a.and_then(|a| a.address6).map(|n| n.ip()),
            routes: a.map(|a| a.routes.clone()).unwrap_or_default(),
            full_tunnel: s.full_tunnel,
            dns: a.map(|a| a.dns.clone()).unwrap_or_default(),
            search: a.map(|a| a.search.clone()).unwrap_or_default(),
            dns_method: s.dns_method.map(|m| m.as_str().to_owned()),
            mtu: a.map(|a| a.mtu),
            since: s.since.map(rfc3339),
            rx_bytes: self.counters.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.counters.tx_bytes.load(Ordering::Relaxed),
            last_error: s.last_error.clone(),
            certificate_expires: self.certificate.as_ref().map(|c| rfc3339(c.not_after)),
            warnings: self.warnings(),
        };
        ClientStatus {
            state: s.state.reported(),
            tunnel: Some(tunnel),
        }
    }

    /// What the user should act on; empty when all is well.
    fn warnings(&self) -> Vec<String> {
        self.certificate
            .as_ref()
            .and_then(|c| crate::expiry::warning(c, SystemTime::now()))
            .into_iter()
            .collect()
    }
}
