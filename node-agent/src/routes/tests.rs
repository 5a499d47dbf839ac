use std::net::IpAddr;

use mesh_api::WireGuardKey;

use super::*;

pub(crate) fn node(
    cluster: &str,
    name: &str,
    ip: &str,
    cidr: &str,
    key: Option<&str>,
) -> NodeRecord {
    NodeRecord {
        cluster: ClusterName::new(cluster).unwrap(),
        name: NodeName::new(name).unwrap(),
        ips: vec![ip.parse::<IpAddr>().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: key.map(|k| k.parse::<WireGuardKey>().unwrap()),
    }
}

pub(crate) const KEY_A: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
pub(crate) const KEY_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn local() -> LocalNode {
    LocalNode {
        cluster: ClusterName::new("c1").unwrap(),
        name: NodeName::new("n1").unwrap(),
        pod_cidrs: vec!["10.1.1.0/24".parse().unwrap()],
    }
}

fn r(dst: &str, hop: NextHop) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        next_hop: hop,
    }
}

fn via(ip: &str) -> NextHop {
    NextHop::Via(ip.parse().unwrap())
}

#[test]
fn every_other_node_of_every_cluster_is_routed_via_its_ip() {
    let n1 = node("c1", "n1", "192.168.0.1", "10.1.1.0/24", None);
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", None);
    let got = desired_routes(&[&n1, &n2, &m1], &local(), None);
    let want: BTreeMap<Ipv4Net, NextHop> = [
        ("10.1.2.0/24".parse().unwrap(), via("192.168.0.2")),
        ("10.2.1.0/24".parse().unwrap(), via("192.168.0.3")),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        got, want,
        "own node excluded; same node name in another cluster kept"
    );
}

#[test]
fn with_encryption_cidrs_carried_by_a_peer_go_through_the_device() {
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", Some(KEY_A));
    let n3 = node("c1", "n3", "192.168.0.3", "10.1.3.0/24", None);
    let refused = node("c1", "n4", "192.168.0.4", "10.1.4.0/24", Some(KEY_B));
    let carried: Vec<IpNet> = vec!["10.1.2.0/24".parse().unwrap()];
    let tunnel = Tunnel {
        dev: "mesh-wg0",
        carried: &carried,
    };
    let got = desired_routes(&[&n2, &n3, &refused], &local(), Some(tunnel));
    assert_eq!(
        got[&"10.1.4.0/24".parse::<Ipv4Net>().unwrap()],
        via("192.168.0.4"),
        "a node with a key but no peer is not blackholed into the device"
    );
    assert_eq!(
        got[&"10.1.2.0/24".parse::<Ipv4Net>().unwrap()],
        NextHop::Dev("mesh-wg0".into())
    );
    assert_eq!(
        got[&"10.1.3.0/24".parse::<Ipv4Net>().unwrap()],
        via("192.168.0.3"),
        "a node without a key yet stays on native routing"
    );
    let plain = desired_routes(&[&n2], &local(), None);
    assert_eq!(plain.values().next(), Some(&via("192.168.0.2")));
}

#[test]
fn overlapping_local_cidrs_ipv6_and_addressless_nodes_are_skipped() {
    let overlap = node("c2", "x", "192.168.0.9", "10.1.1.128/25", None);
    let mut v6 = node("c2", "y", "192.168.0.8", "fd00::/64", None);
    v6.pod_cidrs.push("10.3.0.0/24".parse().unwrap());
    let mut noaddr = node("c2", "z", "fd00::1", "10.4.0.0/24", None);
    noaddr.ips = vec!["fd00::1".parse().unwrap()];
    let got = desired_routes(&[&overlap, &v6, &noaddr], &local(), None);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[&"10.3.0.0/24".parse::<Ipv4Net>().unwrap()],
        via("192.168.0.8")
    );
}

#[test]
fn plan_is_minimal_and_never_flushes() {
    let current = vec![
        r("10.1.2.0/24", via("192.168.0.2")), // unchanged
        r("10.1.3.0/24", via("192.168.0.3")), // next hop changes
        r("10.9.0.0/24", via("192.168.0.9")), // node gone
    ];
    let desired: BTreeMap<Ipv4Net, NextHop> = [
        ("10.1.2.0/24".parse().unwrap(), via("192.168.0.2")),
        ("10.1.3.0/24".parse().unwrap(), NextHop::Dev("wg".into())),
        ("10.1.4.0/24".parse().unwrap(), via("192.168.0.4")),
    ]
    .into_iter()
    .collect();
    let p = plan(&current, &desired);
    assert_eq!(
        p.replace,
        vec![
            r("10.1.3.0/24", NextHop::Dev("wg".into())),
            r("10.1.4.0/24", via("192.168.0.4")),
        ]
    );
    assert_eq!(p.delete, vec![r("10.9.0.0/24", via("192.168.0.9"))]);
    assert!(
        plan(
            &[r("10.1.2.0/24", via("192.168.0.2"))],
            &desired
                .iter()
                .filter(|(k, _)| k.to_string() == "10.1.2.0/24")
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        )
        .is_empty()
    );
}

#[test]
fn sync_converges_and_a_second_pass_changes_nothing() {
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "m1", "192.168.0.3", "10.2.1.0/24", None);
    let mut table = MemoryRoutes::default();
    let desired = desired_routes(&[&n2, &m1], &local(), None);
    let first = sync(&mut table, &desired).unwrap();
    assert_eq!(first.replaced.len(), 2);
    let again = sync(&mut table, &desired).unwrap();
    assert_eq!(again, RouteSync::default(), "steady state: no writes");
    // m1 disappears: exactly its route goes.
    let desired = desired_routes(&[&n2], &local(), None);
    let gone = sync(&mut table, &desired).unwrap();
    assert_eq!(
        gone.deleted,
        vec!["10.2.1.0/24 via 192.168.0.3".to_string()]
    );
    assert!(gone.replaced.is_empty());
    assert_eq!(table.routes, vec![r("10.1.2.0/24", via("192.168.0.2"))]);
}
