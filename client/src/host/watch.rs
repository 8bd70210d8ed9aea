//! Noticing network changes: a NETLINK_ROUTE socket subscribed to link,
//! address and route events of both families. The messages themselves are
//! not parsed; each burst only wakes the client, which then reads the routing
//! table with `ip -j` and decides whether the path to the server moved
//! (`system.rs`). A slow timer covers lost events (a full socket buffer) and
//! hosts where the socket cannot be opened.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use tokio::sync::mpsc;

/// Quiet time after an event before the client looks (events come in bursts).
pub const SETTLE: Duration = Duration::from_millis(250);
/// Look at least this often even without events.
pub const POLL: Duration = Duration::from_secs(10);
/// How often the reading thread checks whether it should end.
const RECV_TIMEOUT_SECS: i64 = 1;

/// rtnetlink multicast groups: links, IPv4/IPv6 addresses and routes.
const GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// Wakes up when the host's links, addresses or routes change. A small
/// thread blocks on the netlink socket and signals a channel.
#[derive(Debug)]
pub struct Watch {
    events: Option<mpsc::Receiver<()>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// Subscribes to route netlink events; without them, falls back to polling.
    pub fn open() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let events = match subscribe() {
            Ok(fd) => {
                let (tx, rx) = mpsc::channel(1);
                let flag = stop.clone();
                match std::thread::Builder::new()
                    .name("netlink-watch".into())
                    .spawn(move || read_events(&fd, &tx, &flag))
                {
                    Ok(_) => Some(rx),
                    Err(e) => {
                        warn_polling(&e.to_string());
                        None
                    }
                }
            }
            Err(e) => {
                warn_polling(&e.to_string());
                None
            }
        };
        Self { events, stop }
    }

    /// Returns after a burst of changes has settled, or after [`POLL`].
    pub async fn changed(&mut self) {
        let Some(events) = &mut self.events else {
            return tokio::time::sleep(POLL).await;
        };
        tokio::select! {
            e = events.recv() => if e.is_none() {
                // The reader ended: poll from now on.
                self.events = None;
                return tokio::time::sleep(POLL).await;
            },
            _ = tokio::time::sleep(POLL) => return,
        }
        tokio::time::sleep(SETTLE).await;
        while events.try_recv().is_ok() {}
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn warn_polling(e: &str) {
    tracing::warn!(error = %e, poll = ?POLL,
        "cannot watch netlink for network changes; checking on a timer instead");
}

fn subscribe() -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(RECV_TIMEOUT_SECS, 0),
    )?;
    Ok(fd)
}

/// Blocks on the socket; each message (or lost messages) is one signal.
fn read_events(fd: &OwnedFd, tx: &mpsc::Sender<()>, stop: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let got = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => false,
            Ok(_) | Err(nix::errno::Errno::ENOBUFS) => true,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            Err(e) => {
                tracing::warn!(error = %e, "netlink watch failed");
                return;
            }
        };
        if got && tx.try_send(()).is_err() && tx.is_closed() {
            return;
        }
    }
}
