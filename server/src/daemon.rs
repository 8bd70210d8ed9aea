//! The daemon, `twoway-server run`: create the TUN device, listen, tell
//! systemd, answer the control socket, reload on SIGHUP, stop gracefully on
//! SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use twoway_common::config_file::ConfigErrors;
use twoway_common::control::status::{ServerStatus, UdpStatus};
use twoway_common::control::{self, Failure, Kicked, Reloaded, Reply, Request};
use twoway_common::inside::tun::{TunError, TunInside, TunSettings};

use crate::config::ServerConfig;
use crate::privilege::{DropError, NoNetAdmin};
use crate::server::{Server, StartError};
use crate::udp::UdpEndpoint;
use twoway_common::tuning::Transport;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No CAP_NET_ADMIN (exit code 5).
    #[error(transparent)]
    NoNetAdmin(#[from] NoNetAdmin),
    /// The configuration file (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Policy, certificates, CRL or leases (exit code 2).
    #[error("{0}")]
    Start(#[from] StartError),
    /// The TUN device (exit code 5 when for want of privilege, else 1).
    #[error("{0}")]
    Tun(#[from] TunError),
    /// A socket could not be bound (exit code 2 when the address is taken
    /// or not this machine's, else 1).
    #[error("{what}")]
    Bind {
        /// Which socket, and the key that names its address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Switching to `user` failed (exit code 5 when not started as root, else 1).
    #[error(transparent)]
    Drop(#[from] DropError),
}

impl RunError {
    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoNetAdmin(_) | Self::Drop(DropError::NotRoot(_)) => 5,
            Self::Tun(e) if e.is_privilege() => 5,
            Self::Config(_) | Self::Start(_) => 2,
            // The configured address is taken or not this machine's: a
            // configuration error (systemd should not restart into it every 2 s).
            Self::Bind { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                2
            }
            Self::Tun(_) | Self::Bind { .. } | Self::Drop(_) => 1,
        }
    }
}

fn bind_error(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Bind { what, source }
}

/// Runs the server in the foreground until a stop signal.
pub async fn run(config_path: &Path) -> Result<(), RunError> {
    // One clear message (exit 5) before any file is read or device tried.
    crate::privilege::check_net_admin()?;
    let config = ServerConfig::load(config_path)?;
    twoway_common::priority::apply(config.tunnel.nice);
    let server = Arc::new(Server::new(config.clone())?);
    let t = &config.tunnel;
    let tun = TunInside::create(&TunSettings {
        name: t.name.clone(),
        ipv4: (t.server_address(), t.network.prefix()),
        ipv6: t
            .network6
            .zip(t.server_address6())
            .map(|(n, a)| (a, n.prefix())),
        mtu: t.mtu,
        offload: t.offload,
        multi_queue: t.queue_count() > 1,
    })?;
    let mut queues = vec![Arc::new(tun)];
    for _ in 1..t.queue_count() {
        queues.push(Arc::new(queues[0].add_queue()?));
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(bind_error(format!(
            "cannot listen on {} (key `listen` in {})",
            config.listen,
            config_path.display()
        )))?;
    let udp = match t.transport {
        Transport::Auto | Transport::Udp => Some(Arc::new(
            UdpEndpoint::bind(config.listen).map_err(bind_error(format!(
                "cannot listen for UDP on {} (key `listen` in {}; `tunnel.transport = \"tcp\"` turns UDP off)",
                config.listen,
                config_path.display()
            )))?,
        )),
        Transport::Tcp => None,
    };
    let control_listener = control::bind(&config.control.socket)
        .await
        .map_err(bind_error(format!(
            "cannot create control socket {}",
            config.control.socket.display()
        )))?;
    let metrics = match config.metrics.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(bind_error(format!(
            "cannot listen on {addr} (key `metrics.listen`)"
        )))?),
        None => None,
    };
    if let Some(user) = &config.user {
        crate::privilege::drop_to(user, &config.state.dir)?;
    }
    let shutdown = CancellationToken::new();
    if let Some(listener) = metrics {
        let server = server.clone();
        let cancel = shutdown.clone();
        tokio::spawn(async move { crate::metrics::serve(listener, &server, cancel).await });
    }
    if let Some(endpoint) = udp {
        server.enable_udp(endpoint.clone());
        let cancel = shutdown.clone();
        tokio::spawn(async move { endpoint.run(cancel).await });
    }
    tokio::spawn(systemd_status(server.clone(), shutdown.clone()));
    info!(listen = %config.listen, device = queues[0].name(), queues = queues.len(), network = %t.network, "twoway server ready");
    notify_systemd(&[sd_notify::NotifyState::Ready]);

    let handler = {
        let server = server.clone();
        move |req: Request| {
            let server = server.clone();
            async move { answer(&server, req) }
        }
    };
    tokio::spawn(control::serve(control_listener, handler, shutdown.clone()));
    tokio::spawn(signals(server.clone(), shutdown.clone()));
    server
        .clone()
        .serve_queues(listener, queues, shutdown)
        .await;
    let _ = std::fs::remove_file(&config.control.socket);
    info!("twoway server stopped");
    Ok(())
}

fn answer(server: &Server, req: Request) -> control::Answer {
    match req {
        Request::Status => Ok(Reply::ServerStatus(status(server))),
        Request::Kick { identity } => {
            let n = server.kick(&identity);
            if n == 0 {
                Err(Failure::new(format!("no session of identity {identity:?}")))
            } else {
                info!(identity, sessions = n, "kicked");
                Ok(Reply::Kicked(Kicked { kicked: n }))
            }
        }
        Request::Reload => match server.reload() {
            Ok(done) => Ok(Reply::Reloaded(Reloaded {
                closed_sessions: done.closed.len(),
                updated_sessions: done.updated.len(),
            })),
            Err(e) => {
                error!(error = %e, "reload refused; the previous configuration stays in force");
                Err(Failure::new(format!(
                    "reload refused, nothing changed: {e}"
                )))
            }
        },
        Request::Down => Err(Failure::new("`down` is a client command")),
    }
}

/// The object `twoway-server status --json` prints (docs/STATUS.md).
pub fn status(server: &Server) -> ServerStatus {
    let udp = server.udp().map(|e| UdpStatus {
        unknown_batches: e.unknown.load(std::sync::atomic::Ordering::Relaxed),
        overflow_batches: e.overflow.load(std::sync::atomic::Ordering::Relaxed),
    });
    let config = &server.config().path;
    let config = std::path::absolute(config).unwrap_or_else(|_| config.clone());
    let t = server.traffic();
    let dropped = twoway_common::relay::DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), t.dropped[*r as usize]))
        .collect();
    ServerStatus {
        config: config.display().to_string(),
        dropped,
        sessions: server.sessions(),
        udp,
    }
}

async fn signals(server: Arc<Server>, shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading]);
                if let Err(e) = server.reload() {
                    error!(error = %e, "reload refused; the previous configuration stays in force");
                }
                notify_systemd(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    info!("stopping: saying bye to every client");
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
}

/// Keeps systemd's STATUS= line current and pets the watchdog if one is set.
async fn systemd_status(server: Arc<Server>, shutdown: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(std::time::Duration::from_secs(5), |d| d / 2);
    let mut last = usize::MAX;
    loop {
        let n = server.registry.len();
        if n != last {
            notify_systemd(&[sd_notify::NotifyState::Status(&format!("{n} session(s)"))]);
            last = n;
        }
        if watchdog.is_some() {
            notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        }
        tokio::select! {
            _ = tokio::time::sleep(period.min(std::time::Duration::from_secs(5))) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}
