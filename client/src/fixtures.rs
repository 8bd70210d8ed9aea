//! What the client's unit tests share: an assignment as a server sends it.

use ipnetwork::IpNetwork;
use twoway_common::message::Assignment;

/// alice's assignment: 10.77.0.10/24 (and fd77::a/64 with `v6`), gateway
/// 10.77.0.1, `routes`, no DNS, MTU 1400.
pub fn assignment(routes: &[&str], v6: bool) -> Assignment {
    let net = |s: &str| s.parse::<IpNetwork>().expect("a network");
    Assignment {
        address: net("10.77.0.10/24"),
        address6: v6.then(|| net("fd77::a/64")),
        gateways: vec!["10.77.0.1".parse().expect("an address")],
        routes: routes.iter().map(|r| net(r)).collect(),
        dns: vec![],
        search: vec![],
        mtu: 1400,
        keepalive_secs: 10,
        timeout_secs: 60,
        features: vec![],
        udp_session: None,
        udp_secret: None,
    }
}
