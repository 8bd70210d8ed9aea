//! `twoway-server run`: create the TUN device, listen, tell systemd, answer
//! the control socket, reload on SIGHUP, stop gracefully on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use twoway_common::control::{self, Request};
use twoway_common::inside::tun::{TunInside, TunSettings};

use crate::config::ServerConfig;
use crate::server::Server;

/// Runs the server in the foreground until a stop signal.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = ServerConfig::load(config_path)?;
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
    })?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (key `listen` in {})",
            config.listen,
            config_path.display()
        )
    })?;
    let control_listener = control::bind(&config.control.socket)
        .await
        .with_context(|| {
            format!(
                "cannot create control socket {}",
                config.control.socket.display()
            )
        })?;
    let shutdown = CancellationToken::new();
    info!(listen = %config.listen, device = tun.name(), network = %t.network, "twoway server ready");
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
        .serve(listener, Arc::new(tun), shutdown)
        .await;
    let _ = std::fs::remove_file(&config.control.socket);
    info!("twoway server stopped");
    Ok(())
}

fn answer(server: &Server, req: Request) -> serde_json::Value {
    match req {
        Request::Status => {
            json!({ "ok": true, "sessions": server.sessions(), "dropped": dropped(server) })
        }
        Request::Kick { identity } => {
            let n = server.kick(&identity);
            if n == 0 {
                control::failure(format!("no session of identity {identity:?}"))
            } else {
                info!(identity, sessions = n, "kicked");
                json!({ "ok": true, "kicked": n })
            }
        }
        Request::Reload => match server.reload() {
            Ok(closed) => json!({ "ok": true, "closed_sessions": closed.len() }),
            Err(e) => {
                error!(error = %e, "reload refused; the previous configuration stays in force");
                control::failure(format!("reload refused, nothing changed: {e}"))
            }
        },
        Request::Down => control::failure("`down` is a client command"),
    }
}

fn dropped(server: &Server) -> serde_json::Value {
    let c = &server.router.counters;
    let map: serde_json::Map<String, serde_json::Value> = twoway_common::relay::DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), json!(c.dropped(*r))))
        .collect();
    serde_json::Value::Object(map)
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

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}
