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
    }
}

#[test]
fn every_other_node_must_be_encrypted_with_or_without_a_key() {
    let n1 = node("c1", "n1", "192.168.0.1", "10.1.1.0/24", Some(KEY_A));
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", Some(KEY_A));
    // A CIDR overlapping the local node's is never listed (nor routed).
    let bad = node("c2", "n9", "192.168.0.9", "10.1.1.128/25", None);
    let got = must_encrypt(&[&n1, &n2, &m1, &bad], &local());
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
fn the_set_follows_the_nodes_and_enforcement_needs_a_device() {
    let n2 = node("c1", "n2", "192.168.0.2", "10.1.2.0/24", None);
    let m1 = node("c2", "n1", "192.168.0.3", "10.2.1.0/24", None);
    let mut table = MemoryRoutes::default();
    let mut map = MemoryEncryptionMap {
        device: Some("stale0".into()),
        ..Default::default()
    };
    let mut status = RoutingStatus::default();
    // Strict requested but no device (encryption off): not enforced, yet
    // the set is kept so turning encryption on needs no catch-up.
    sync_nodes(
        &[n2.clone(), m1],
        &local(),
        None,
        &opts(),
        Targets {
            routes: &mut table,
            strict_map: Some(&mut map),
        },
        true,
        &mut status,
    );
    assert_eq!(map.device, None, "{:?}", map.log);
    assert_eq!(map.cidrs.len(), 2);
    assert!(!status.strict_mode);
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
        },
        true,
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
            "off",
            "unlist 10.2.1.0/24"
        ]
        .map(String::from)
    );
}
