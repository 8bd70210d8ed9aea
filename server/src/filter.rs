//! What a client may send into the server's inside: its own source address
//! only, and nothing to other clients unless policy allows. Pure but for the
//! policy's `client_to_client`, which a reload changes in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipnetwork::{Ipv4Network, Ipv6Network};
use twoway_common::ippacket;
use twoway_common::relay::DropReason;

/// The checks for one session's packets.
#[derive(Debug, Clone)]
pub struct SourceFilter {
    /// The client's IPv4 address.
    pub address: Ipv4Addr,
    /// The client's IPv6 address, if it has one.
    pub address6: Option<Ipv6Addr>,
    /// The tunnel network (other clients live here).
    pub network: Ipv4Network,
    /// The IPv6 tunnel network.
    pub network6: Option<Ipv6Network>,
    /// The server's own tunnel addresses, always reachable.
    pub gateways: Vec<IpAddr>,
    /// Whether packets to other clients pass; shared with the session's
    /// registry entry, so that a reload changes it without a reconnect.
    pub client_to_client: Arc<AtomicBool>,
}

impl SourceFilter {
    /// Accepts a packet, or says why it is dropped.
    pub fn check(&self, packet: &[u8]) -> Result<(), DropReason> {
        let a = ippacket::addresses(packet).map_err(|_| DropReason::Malformed)?;
        let client_to_client = || self.client_to_client.load(Ordering::Relaxed);
        match (a.src, a.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                if src != self.address {
                    return Err(DropReason::Spoofed);
                }
                if self.network.contains(dst)
                    && !self.gateways.contains(&a.dst)
                    && !client_to_client()
                {
                    return Err(DropReason::ClientToClient);
                }
                Ok(())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let Some(own) = self.address6 else {
                    // No IPv6 in this tunnel: the kernel's link-local chatter ends here.
                    return Err(DropReason::NoRoute);
                };
                if src != own {
                    return Err(if src.is_unicast_link_local() {
                        DropReason::NoRoute
                    } else {
                        DropReason::Spoofed
                    });
                }
                let to_peer = self.network6.is_some_and(|n| n.contains(dst));
                if to_peer && !self.gateways.contains(&a.dst) && !client_to_client() {
                    return Err(DropReason::ClientToClient);
                }
                Ok(())
            }
            _ => Err(DropReason::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twoway_common::ippacket::build;

    fn filter(c2c: bool) -> SourceFilter {
        SourceFilter {
            address: "10.77.0.10".parse().unwrap(),
            address6: Some("fd77::a".parse().unwrap()),
            network: "10.77.0.0/24".parse().unwrap(),
            network6: Some("fd77::/64".parse().unwrap()),
            gateways: vec!["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()],
            client_to_client: Arc::new(AtomicBool::new(c2c)),
        }
    }
    fn v4(src: &str, dst: &str) -> Vec<u8> {
        build::ipv4(src.parse().unwrap(), dst.parse().unwrap(), b"x")
    }
    fn v6(src: &str, dst: &str) -> Vec<u8> {
        build::ipv6(src.parse().unwrap(), dst.parse().unwrap(), b"x")
    }

    #[test]
    fn own_source_to_corporate_and_server_passes() {
        let f = filter(false);
        assert_eq!(f.check(&v4("10.77.0.10", "10.99.0.5")), Ok(()));
        assert_eq!(f.check(&v4("10.77.0.10", "10.77.0.1")), Ok(()));
        assert_eq!(f.check(&v6("fd77::a", "fd99::5")), Ok(()));
    }

    #[test]
    fn forged_source_is_dropped() {
        let f = filter(false);
        assert_eq!(
            f.check(&v4("10.77.0.11", "10.99.0.5")),
            Err(DropReason::Spoofed)
        );
        assert_eq!(
            f.check(&v4("198.18.0.1", "10.99.0.5")),
            Err(DropReason::Spoofed)
        );
        assert_eq!(f.check(&v6("fd77::b", "fd99::5")), Err(DropReason::Spoofed));
    }

    #[test]
    fn client_to_client_only_when_allowed() {
        assert_eq!(
            filter(false).check(&v4("10.77.0.10", "10.77.0.20")),
            Err(DropReason::ClientToClient)
        );
        assert_eq!(filter(true).check(&v4("10.77.0.10", "10.77.0.20")), Ok(()));
        assert_eq!(
            filter(false).check(&v6("fd77::a", "fd77::b")),
            Err(DropReason::ClientToClient)
        );
        // A reload flips it for the live session.
        let f = filter(false);
        f.client_to_client.store(true, Ordering::Relaxed);
        assert_eq!(f.check(&v4("10.77.0.10", "10.77.0.20")), Ok(()));
    }

    #[test]
    fn ipv6_without_assignment_and_garbage_are_dropped() {
        let mut f = filter(false);
        f.address6 = None;
        assert_eq!(f.check(&v6("fe80::1", "ff02::2")), Err(DropReason::NoRoute));
        assert_eq!(f.check(b"\x45garbage"), Err(DropReason::Malformed));
        assert_eq!(f.check(&[]), Err(DropReason::Malformed));
    }
}
