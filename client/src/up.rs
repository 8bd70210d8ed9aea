//! `twoway up`: what a client needs before its first connection (privilege,
//! credentials, the control socket, signals, the cleanup of what a killed
//! run left behind), then the session loop (`session.rs`) on the real TUN
//! device and the real host network.

use tokio_util::sync::CancellationToken;
use tracing::info;
use twoway_common::control;
use twoway_common::inside::tun::TunInside;

use crate::config::ClientConfig;
use crate::daemon::{control_handler, signals};
use crate::error::ClientError;
use crate::host::journal::{self, HostChanges};
use crate::host::system::SystemNetwork;
use crate::session::{self, Client};
use crate::status::Status;

pub use crate::session::OnReady;

/// Runs the client until `down`, a signal, or a final error.
pub async fn up(config: ClientConfig, on_ready: Option<OnReady>) -> Result<(), ClientError> {
    // Privilege first: without CAP_NET_ADMIN `up` ends (exit 5) before it
    // reads a key file. A key other users can read, or a profile holding
    // the key that is not 0600, is refused here (exit 2).
    crate::privilege::check()?;
    let credentials = crate::credentials::load(&config)?;
    let tls = credentials.tls;
    twoway_common::priority::apply(config.tunnel.nice);
    let status = Status::new(&config.server)
        .with_config(&config.path)
        .with_certificate(credentials.certificate.clone());
    let stop = CancellationToken::new();
    tokio::spawn(crate::expiry::watch(credentials.certificate, stop.clone()));
    let socket = control::bind(&config.control.socket)
        .await
        .map_err(|source| ClientError::File {
            what: "control socket ",
            path: config.control.socket.clone(),
            source,
        })?;
    let _socket_file = RemoveOnDrop(config.control.socket.clone());
    tokio::spawn(control::serve(
        socket,
        control_handler(status.clone(), stop.clone()),
        stop.clone(),
    ));
    tokio::spawn(signals(stop.clone()));

    // Undo what a client of this config left behind when it was killed.
    let (changes, stale) = HostChanges::recover(&journal::state_path(&config.control.socket)).await;
    if stale {
        info!("removed the routes and DNS settings a previous run left behind");
    }
    let client = Client {
        config: &config,
        tls,
        status: &status,
        stop: &stop,
    };
    session::run(
        client,
        on_ready,
        |server| SystemNetwork::new(changes, &config, server.ip()),
        TunInside::create,
    )
    .await
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
