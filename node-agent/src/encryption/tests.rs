use mesh_api::{ClusterName, NodeName};

use super::*;
use crate::routes::tests::{KEY_A, KEY_B, node};

const OWN: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

fn local() -> LocalNode {
    LocalNode {
        cluster: ClusterName::new("c1").unwrap(),
        name: NodeName::new("n1").unwrap(),
        pod_cidrs: vec!["10.1.1.0/24".parse().unwrap()],
    }
}

fn opts(node_encryption: bool) -> PeerOptions {
    PeerOptions {
        port: 51871,
        keepalive: 25,
        node_encryption,
        node_encryption_exclude: Vec::new(),
    }
}

#[test]
fn peers_are_other_nodes_with_keys_of_every_cluster() {
    let own_key: WireGuardKey = OWN.parse().unwrap();
    let me = node("c1", "n1", "192.168.0.1", "10.1.1.0/24", Some(OWN));
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", Some(KEY_A));
    let nokey = node("c1", "n3", "192.168.0.3", "10.1.3.0/24", None);
    let m1 = node("c2", "m1", "192.168.0.4", "10.2.1.0/24", Some(KEY_B));
    let peers = desired_peers(&[&me, &n2, &nokey, &m1], &local(), &own_key, &opts(false));
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(peers[0].public_key, KEY_A.parse().unwrap());
    assert_eq!(
        peers[0].endpoint,
        Some("192.168.0.2:51871".parse().unwrap())
    );
    assert_eq!(
        peers[0].allowed_ips,
        vec!["10.1.2.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(peers[0].persistent_keepalive, Some(25));
    assert_eq!(peers[1].public_key, KEY_B.parse().unwrap());
    assert_eq!(
        peers[1].endpoint,
        Some("192.168.0.4:51871".parse().unwrap())
    );
}

#[test]
fn node_encryption_adds_the_node_ip_and_keepalive_zero_is_off() {
    let own_key: WireGuardKey = OWN.parse().unwrap();
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", Some(KEY_A));
    let o = PeerOptions {
        keepalive: 0,
        ..opts(true)
    };
    let peers = desired_peers(&[&n2], &local(), &own_key, &o);
    assert_eq!(
        peers[0].allowed_ips,
        vec![
            "10.1.2.0/24".parse::<IpNet>().unwrap(),
            "192.168.0.2/32".parse().unwrap()
        ]
    );
    assert_eq!(peers[0].persistent_keepalive, None);
}

/// An excluded node address (the API server's) keeps its pod CIDR in the
/// tunnel but not its own address; node routes follow the AllowedIPs.
#[test]
fn node_encryption_leaves_excluded_addresses_alone_and_routes_the_rest() {
    let own_key: WireGuardKey = OWN.parse().unwrap();
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", Some(KEY_A));
    let cp = node("c1", "cp", "192.168.1.10", "10.1.9.0/24", Some(KEY_B));
    let o = PeerOptions {
        node_encryption_exclude: vec!["192.168.1.0/24".parse().unwrap()],
        ..opts(true)
    };
    let peers = desired_peers(&[&n2, &cp], &local(), &own_key, &o);
    assert_eq!(
        peers[1].allowed_ips,
        vec!["10.1.9.0/24".parse::<IpNet>().unwrap()],
        "the excluded node's address stays out of the tunnel"
    );
    let routes = node_routes(&peers, "mesh-wg0");
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        vec![(
            "192.168.0.2/32".parse().unwrap(),
            crate::routes::NextHop::Dev("mesh-wg0".into())
        )]
    );
    assert!(
        node_routes(
            &desired_peers(&[&n2], &local(), &own_key, &opts(false)),
            "x"
        )
        .is_empty()
    );
}

#[test]
fn duplicate_keys_and_overlapping_cidrs_never_reach_the_device() {
    let own_key: WireGuardKey = OWN.parse().unwrap();
    let copy_of_me = node("c2", "clone", "192.168.0.7", "10.7.0.0/24", Some(OWN));
    let a = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", Some(KEY_A));
    let same_key = node("c1", "n9", "192.168.0.9", "10.1.9.0/24", Some(KEY_A));
    let overlap = node("c2", "m1", "192.168.0.4", "10.1.2.0/25", Some(KEY_B));
    let peers = desired_peers(
        &[&copy_of_me, &a, &same_key, &overlap],
        &local(),
        &own_key,
        &opts(false),
    );
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].public_key, KEY_A.parse().unwrap());
}
