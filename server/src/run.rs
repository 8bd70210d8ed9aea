//! `twoway-server run`: create the TUN device, listen, tell systemd, answer
//! the control socket, reload on SIGHUP, stop gracefully on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use twoway_common::control::status::{ServerStatus, UdpStatus};
use twoway_common::control::{self, Failure, Kicked, Reloaded, Reply, Request};
use twoway_common::inside::tun::{TunInside, TunSettings};

use crate::config::ServerConfig;
use crate::server::Server;
use crate::udp::UdpEndpoint;
use twoway_common::tuning::Transport;

/// Runs the server in the foreground until a stop signal.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
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
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (key `listen` in {})",
            config.listen,
            config_path.display()
        )
    })?;
    let udp = match t.transport {
        Transport::Auto | Transport::Udp => Some(Arc::new(UdpEndpoint::bind(config.listen).with_context(|| {
            format!(
                "cannot listen for UDP on {} (key `listen` in {}; `tunnel.transport = \"tcp\"` turns UDP off)",
                config.listen,
                config_path.display()
            )
        })?)),
        Transport::Tcp => None,
    };
    let control_listener = control::bind(&config.control.socket)
        .await
        .with_context(|| {
            format!(
                "cannot create control socket {}",
                config.control.socket.display()
            )
        })?;
    let metrics = match config.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (key `metrics.listen`)"))?,
        ),
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
