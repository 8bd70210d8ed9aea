use super::*;
use crate::fixtures::assignment;
use crate::host::routes::parse_routes;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A laptop on 192.168.1.0/24 (gateway .1) with a v6 prefix, connected to a tunnel.
fn laptop() -> Snapshot {
    let v4 = serde_json::json!([
        {"dst":"default","gateway":"192.168.1.1","dev":"wlan0","protocol":"dhcp","metric":600,"flags":[]},
        {"dst":"default","gateway":"192.168.9.1","dev":"eth9","metric":900,"flags":["linkdown"]},
        {"dst":"192.168.1.0/24","dev":"wlan0","protocol":"kernel","scope":"link","flags":[]},
        {"dst":"10.77.0.0/24","dev":"tw-alice","protocol":"kernel","scope":"link","flags":[]},
        {"dst":"0.0.0.0/1","dev":"tw-alice","protocol":"119","scope":"link","flags":[]},
        {"dst":"203.0.113.10","gateway":"192.168.1.254","dev":"wlan0","protocol":"119","flags":[]}
    ]);
    let v6 = serde_json::json!([
        {"dst":"2001:db8:1::/64","dev":"wlan0","protocol":"ra","metric":600,"flags":[]},
        {"dst":"fe80::/64","dev":"wlan0","protocol":"kernel","metric":256,"flags":[]},
        {"dst":"default","gateway":"fe80::1","dev":"wlan0","protocol":"ra","metric":600,"flags":[]}
    ]);
    let mut routes = parse_routes(&v4, false);
    routes.extend(parse_routes(&v6, true));
    Snapshot {
        routes,
        addresses: vec![ip("192.168.1.20")],
    }
}

fn input<'a>(a: &'a Assignment, snap: &'a Snapshot, allow_lan: bool) -> PlanInput<'a> {
    PlanInput {
        assignment: a,
        tun: "tw-alice",
        server: ip("203.0.113.10"),
        allow_lan,
        snapshot: snap,
    }
}

/// The plan for an assignment of `routes` (with an IPv6 address if `v6`)
/// on the [`laptop`].
fn laptop_plan(routes: &[&str], v6: bool, allow_lan: bool) -> Plan {
    plan(input(&assignment(routes, v6), &laptop(), allow_lan))
}

/// A route into the tunnel.
fn tun(dst: &str) -> RouteSpec {
    RouteSpec::dev(net(dst), "tw-alice")
}

/// A route that makes `dst` unreachable.
fn un(dst: &str) -> RouteSpec {
    RouteSpec::unreachable(net(dst))
}

fn via(dst: &str, gw: &str, dev: &str) -> RouteSpec {
    RouteSpec::via(net(dst), ip(gw), dev)
}

fn backstop(dst: &str) -> RouteSpec {
    RouteSpec {
        metric: Some(BACKSTOP_METRIC),
        ..un(dst)
    }
}

#[test]
fn halves_split_networks() {
    assert_eq!(
        halves(net("0.0.0.0/0")),
        Some([net("0.0.0.0/1"), net("128.0.0.0/1")])
    );
    assert_eq!(
        halves(net("192.168.1.0/24")),
        Some([net("192.168.1.0/25"), net("192.168.1.128/25")])
    );
    assert_eq!(halves(net("::/0")), Some([net("::/1"), net("8000::/1")]));
    assert_eq!(halves(net("10.0.0.1/32")), None);
}

#[test]
fn outer_path_ignores_our_routes_the_tunnel_and_dead_links() {
    let snap = laptop();
    let path = outer_path(&snap, ip("203.0.113.10"), "tw-alice").unwrap();
    assert_eq!(
        path,
        OuterPath {
            gateway: Some(ip("192.168.1.1")),
            dev: "wlan0".into()
        }
    );
    let on_link = outer_path(&snap, ip("192.168.1.7"), "tw-alice").unwrap();
    assert_eq!(on_link.gateway, None);
    assert_eq!(
        outer_path(&Snapshot::default(), ip("203.0.113.10"), "tw"),
        None
    );
}

#[test]
fn split_tunnel_only_adds_its_routes() {
    let p = laptop_plan(&["10.99.0.0/24", "fd99::/64"], true, false);
    assert!(!p.full_tunnel);
    assert_eq!(p.routes, [tun("10.99.0.0/24"), tun("fd99::/64")]);
    assert!(p.outer.is_some());
}

#[test]
fn ipv6_routes_without_an_ipv6_address_are_unreachable() {
    let p = laptop_plan(&["10.99.0.0/24", "fd99::/64"], false, false);
    assert_eq!(p.routes[1], un("fd99::/64"));
}

#[test]
fn full_tunnel_v4_pins_the_server_splits_the_lan_and_blocks_v6() {
    let p = laptop_plan(&["0.0.0.0/0"], false, false);
    assert!(p.full_tunnel);
    assert_eq!(
        p.routes,
        [
            RouteSpec::dev(net("192.168.1.1/32"), "wlan0"),
            via("203.0.113.10/32", "192.168.1.1", "wlan0"),
            tun("0.0.0.0/1"),
            tun("128.0.0.0/1"),
            tun("192.168.1.0/25"),
            tun("192.168.1.128/25"),
            un("2001:db8:1::/65"),
            un("2001:db8:1:0:8000::/65"),
            backstop("0.0.0.0/1"),
            backstop("128.0.0.0/1"),
            un("::/1"),
            un("8000::/1"),
        ]
    );
}

#[test]
fn allow_lan_leaves_the_local_subnets_alone() {
    let p = laptop_plan(&["0.0.0.0/0", "::/0"], true, true);
    assert_eq!(
        p.routes,
        [
            via("203.0.113.10/32", "192.168.1.1", "wlan0"),
            tun("0.0.0.0/1"),
            tun("128.0.0.0/1"),
            tun("::/1"),
            tun("8000::/1"),
            backstop("0.0.0.0/1"),
            backstop("128.0.0.0/1"),
            backstop("::/1"),
            backstop("8000::/1"),
        ]
    );
}

#[test]
fn a_server_without_a_path_is_made_unreachable() {
    let a = assignment(&["0.0.0.0/0"], false);
    let snap = Snapshot::default();
    let p = plan(input(&a, &snap, true));
    assert_eq!(p.outer, None);
    assert_eq!(p.routes[0], un("203.0.113.10/32"));
}

#[test]
fn a_split_route_covering_the_server_pins_it_too() {
    let p = laptop_plan(&["203.0.113.0/24"], false, false);
    assert_eq!(
        p.routes,
        [
            via("203.0.113.10/32", "192.168.1.1", "wlan0"),
            tun("203.0.113.0/24")
        ]
    );
}

#[test]
fn outer_paths_display_as_ip_route_writes_them() {
    let via = OuterPath {
        gateway: Some(ip("192.168.1.1")),
        dev: "eth0".into(),
    };
    assert_eq!(describe(Some(&via)), "via 192.168.1.1 dev eth0");
    let link = OuterPath {
        gateway: None,
        dev: "eth0".into(),
    };
    assert_eq!(link.to_string(), "dev eth0");
    assert_eq!(describe(None), "none");
}
