//! What keeps a running client reachable from outside its session: the
//! answers on its control socket (`status`, `down`) and the signals that
//! take it down.

use tokio_util::sync::CancellationToken;
use tracing::info;
use twoway_common::control::{self, Failure, Reply, Request};

use crate::status::Status;

/// Answers the control socket's requests from `status` and `stop`.
pub fn control_handler(
    status: Status,
    stop: CancellationToken,
) -> impl Fn(Request) -> std::future::Ready<control::Answer> + Clone + Send + 'static {
    move |req| {
        std::future::ready(match req {
            Request::Status => Ok(Reply::ClientStatus(Box::new(status.report()))),
            Request::Down => {
                info!("down requested");
                stop.cancel();
                Ok(Reply::Done {})
            }
            other => Err(Failure::new(format!("{other:?} is a server command"))),
        })
    }
}

/// Cancels `stop` on SIGTERM or SIGINT; SIGHUP is ignored.
pub async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // A detached client outlives its terminal.
            _ = hup.recv() => continue,
        }
    }
    info!("signal received; taking the tunnel down");
    stop.cancel();
}
