//! The server's inside: one reader of the TUN device hands each packet to the
//! session that owns its destination, through that session's bounded queue,
//! so a slow client never stalls the others.

use std::collections::HashMap;
use std::net::IpAddr;

use arc_swap::ArcSwap;
use bytes::Bytes;
use twoway_common::inside::{max_read, Inside, RecvBuffer};
use twoway_common::ippacket;
use twoway_common::offload;
use twoway_common::queue::QueueTx;
use twoway_common::relay::{Counters, DropReason};

#[derive(Clone)]
struct Route {
    session: u64,
    queue: QueueTx,
}

/// Tunnel address → session queue. The packet path reads it without a lock
/// (a snapshot swapped in when sessions come and go, which is rare); the
/// registry, which owns the sessions, is the only writer.
#[derive(Default)]
pub struct Router {
    routes: ArcSwap<HashMap<IpAddr, Route>>,
    /// Packets read from the device and what became of them.
    pub counters: Counters,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// Sends packets for `address` to `session`'s queue (replacing an older owner).
    pub(crate) fn insert(&self, address: IpAddr, session: u64, queue: QueueTx) {
        let route = Route { session, queue };
        self.routes.rcu(|routes| {
            let mut next = HashMap::clone(routes);
            next.insert(address, route.clone());
            next
        });
    }

    /// Removes every address still owned by `session`.
    pub(crate) fn remove_session(&self, session: u64) {
        self.routes.rcu(|routes| {
            let mut next = HashMap::clone(routes);
            next.retain(|_, r| r.session != session);
            next
        });
    }

    /// Whether a session currently owns `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.routes.load().contains_key(&address)
    }

    /// Queues one packet read from the device for its session, or drops it.
    /// The IP header starts at `offset` (after the offload header, if any).
    pub fn dispatch(&self, packet: Bytes, offset: usize) {
        let ip = packet.get(offset..).unwrap_or_default();
        let dst = match ippacket::addresses(ip) {
            Ok(a) => a.dst,
            Err(_) => return self.counters.drop_packet(DropReason::Malformed),
        };
        let routes = self.routes.load();
        let Some(route) = routes.get(&dst) else {
            return self.counters.drop_packet(DropReason::NoRoute);
        };
        let urgent = ippacket::is_interactive(ip);
        let queued = if urgent {
            route.queue.try_send_urgent(packet)
        } else {
            route.queue.try_send(packet)
        };
        if queued.is_err() {
            self.counters.drop_packet(DropReason::QueueFull);
        }
    }

    /// Reads the device until it fails, dispatching every packet.
    pub async fn read_inside<I: Inside>(&self, inside: &I, mtu: u16) -> std::io::Result<()> {
        let mut reader = RecvBuffer::new(max_read(inside, mtu));
        let offset = if inside.offload() {
            offload::HEADER_LEN
        } else {
            0
        };
        loop {
            let packet = reader.recv(inside).await?;
            self.dispatch(packet, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twoway_common::ippacket::build;

    fn packet_to(dst: &str) -> Bytes {
        Bytes::from(build::ipv4(
            "10.99.0.5".parse().unwrap(),
            dst.parse().unwrap(),
            b"x",
        ))
    }

    #[test]
    fn packets_go_to_the_owner_and_full_queues_drop() {
        let router = Router::default();
        let (tx, mut rx) = twoway_common::queue::channel(1, 1 << 20);
        router.insert("10.77.0.10".parse().unwrap(), 7, tx);
        router.dispatch(packet_to("10.77.0.10"), 0);
        router.dispatch(packet_to("10.77.0.10"), 0);
        router.dispatch(packet_to("10.77.0.11"), 0);
        router.dispatch(Bytes::from_static(b"junk"), 0);
        assert!(rx.try_recv().is_some());
        assert_eq!(router.counters.dropped(DropReason::QueueFull), 1);
        assert_eq!(router.counters.dropped(DropReason::NoRoute), 1);
        assert_eq!(router.counters.dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn removing_a_session_keeps_a_newer_owner() {
        let router = Router::default();
        let addr: IpAddr = "10.77.0.10".parse().unwrap();
        let (old, _rx1) = twoway_common::queue::channel(1, 1 << 20);
        let (new, _rx2) = twoway_common::queue::channel(1, 1 << 20);
        router.insert(addr, 1, old);
        router.insert(addr, 2, new);
        router.remove_session(1);
        assert!(router.contains(addr));
        router.remove_session(2);
        assert!(!router.contains(addr));
    }
}
