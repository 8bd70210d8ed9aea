//! Getting the session back: jittered exponential backoff between attempts,
//! cut short when the network changes (a new path to the server is worth an
//! attempt right away), with routes kept up to date meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ClientConfig;
use crate::connect::{connect_any, connect_to, Connection};
use crate::error::ClientError;
use crate::host::{HostNetwork, Refresh};

/// First reconnect delay; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Connects again: each attempt first to `server`, the address of entry
/// `last` of the config's list that worked last, then to the other entries;
/// the first attempt without delay when `at_once`. `None` when stopped.
pub async fn reconnect(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    stop: &CancellationToken,
    (server, last): (SocketAddr, usize),
    host: &mut impl HostNetwork,
    at_once: bool,
) -> Result<Option<Connection>, ClientError> {
    let mut delay = BACKOFF_MIN;
    let mut now = at_once;
    loop {
        if !now {
            let sleep = tokio::time::sleep(jitter(delay));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = stop.cancelled() => return Ok(None),
                    _ = host.watch() => {
                        if let Refresh::Moved(why) = host.refresh().await {
                            info!(reason = %why, "network changed; trying to reconnect now");
                            delay = BACKOFF_MIN;
                            break;
                        }
                    }
                }
            }
        }
        now = false;
        let attempt = tokio::select! {
            c = again(config, tls, server, last) => c,
            _ = stop.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(c) => {
                info!("reconnected");
                return Ok(Some(c));
            }
            Err(e) if e.is_retryable() => warn!(error = %e, retry_in = ?delay, "reconnect failed"),
            Err(e) => return Err(e),
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// One attempt: the node that worked last, at its address, then the others.
async fn again(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    server: SocketAddr,
    last: usize,
) -> Result<Connection, ClientError> {
    let mut same = config.clone();
    same.server = config.server.at(last);
    match connect_to(&same, tls.clone(), Some(server)).await {
        Err(e) if e.is_retryable() && config.server.all().len() > 1 => {
            warn!(server = %same.server, error = %e, "server failed; trying the others");
            connect_any(config, tls.clone(), last + 1).await
        }
        other => other,
    }
}

/// `delay` scaled by a factor in [0.5, 1.0), so clients cut off together do not return together.
pub fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(factor)
}
