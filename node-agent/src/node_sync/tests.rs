use mesh_api::{ClusterName, NodeName};

use super::*;
use crate::routes::MemoryRoutes;
use crate::routes::tests::{KEY_A, node};

fn local() -> LocalNode {
    LocalNode {
        cluster: ClusterName::new("c1").unwrap(),
        name: NodeName::new("n1").unwrap(),
        pod_cidrs: vec!["10.1.1.0/24".parse().unwrap()],
    }
}

fn opts() -> PeerOptions {
    PeerOptions {
        port: 51871,
        keepalive: 0,
        node_encryption: false,
        node_encryption_exclude: Vec::new(),
    }
}

#[test]
fn every_other_node_must_be_encrypted_with_or_without_a_key() {
    let n1 = node("c1", "n1", "192.168.0.1", "10.1.1.0/24", Some(KEY_A));
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", Some(KEY_A));
    // A CIDR overlapping the local node's is never listed (nor routed).
    let bad = node("c2", "n9", "192.168.0.9", "10.1.1.128/25", None);
    let got = must_encrypt(&[&n1, &n2, &m1, &bad], &local(), &[]);
    let want: BTreeMap<Ipv4Net, Ipv4Addr> = [
        (
            "10.1.2.0/24".parse().unwrap(),
            "192.168.0.2".parse().unwrap(),
        ),
        (
            "10.2.1.0/24".parse().unwrap(),
            "192.168.0.3".parse().unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_set_follows_the_nodes_and_strict_without_a_device_drops() {
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", None);
    let mut table = MemoryRoutes::default();
    let mut map = MemoryEncryptionMap {
        device: Some("stale0".into()),
        ..Default::default()
    };
    let mut status = RoutingStatus::default();
    // Strict requested but no device (it failed, or is not up yet): what
    // the set lists is dropped, never sent in clear.
    sync_nodes(
        &[n2.clone(), m1],
        &local(),
        None,
        &opts(),
        Targets {
            routes: &mut table,
            strict_map: Some(&mut map),
            node_encryption: None,
        },
        true,
        &[],
        &mut status,
    );
    assert_eq!(map.device.as_deref(), Some("closed"), "{:?}", map.log);
    assert_eq!(map.cidrs.len(), 2);
    assert!(status.strict_mode && status.strict_closed);
    assert_eq!(status.must_encrypt.len(), 2);
    assert!(status.failures.is_empty(), "{:?}", status.failures);

    // The c2 node goes: unlisted together with its route.
    sync_nodes(
        &[n2],
        &local(),
        None,
        &opts(),
        Targets {
            routes: &mut table,
            strict_map: Some(&mut map),
            node_encryption: None,
        },
        true,
        &[],
        &mut status,
    );
    assert_eq!(
        map.cidrs
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.1.2.0/24"]
    );
    assert_eq!(table.routes.len(), 1);
    assert_eq!(
        map.log,
        [
            "list 10.1.2.0/24",
            "list 10.2.1.0/24",
            "closed",
            "unlist 10.2.1.0/24"
        ]
        .map(String::from)
    );
}

/// A configured remote cluster's declared pod CIDRs are listed whether or
/// not its nodes are known (their records withdrawn, not streamed yet);
/// a node's own CIDR is more specific and wins the lookup. One overlapping
/// this node's pods is never listed.
#[test]
fn remote_clusters_pod_cidrs_are_listed_without_their_nodes() {
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", Some(KEY_A));
    let remotes: Vec<Ipv4Net> = vec![
        "10.2.0.0/16".parse().unwrap(),
        "10.3.0.0/16".parse().unwrap(),
        "10.1.0.0/16".parse().unwrap(),
    ];
    let got = must_encrypt(&[&m1], &local(), &remotes);
    let want: BTreeMap<Ipv4Net, Ipv4Addr> = [
        ("10.2.0.0/16", "0.0.0.0"),
        ("10.2.1.0/24", "192.168.0.3"),
        ("10.3.0.0/16", "0.0.0.0"),
    ]
    .into_iter()
    .map(|(n, ip)| (n.parse().unwrap(), ip.parse().unwrap()))
    .collect();
    assert_eq!(got, want);
}

/// Strict mode turned off (or encryption off) switches enforcement off
/// before routes change.
#[test]
fn strict_off_is_off() {
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let mut table = MemoryRoutes::default();
    let mut map = MemoryEncryptionMap {
        device: Some("closed".into()),
        ..Default::default()
    };
    let mut status = RoutingStatus::default();
    sync_nodes(
        &[n2],
        &local(),
        None,
        &opts(),
        Targets {
            routes: &mut table,
            strict_map: Some(&mut map),
            node_encryption: None,
        },
        false,
        &[],
        &mut status,
    );
    assert_eq!(map.device, None);
    assert!(!status.strict_mode && !status.strict_closed);
}
