//! Getting the session back: jittered exponential backoff between attempts,
//! cut short when the network changes (a new path to the server is worth an
//! attempt right away), with routes kept up to date meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ClientConfig;
use crate::connect::{connect_to, Connection};
use crate::error::ClientError;
use crate::host::{HostNetwork, Refresh};

/// First reconnect delay; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Connects to `server` again; the first attempt without delay when
/// `at_once`. `None` when stopped.
pub async fn reconnect(
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    stop: &CancellationToken,
    server: SocketAddr,
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
            c = connect_to(config, tls.clone(), Some(server)) => c,
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

/// `delay` scaled by a factor in [0.5, 1.0), so clients cut off together do not return together.
pub fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(factor)
}
