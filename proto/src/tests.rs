//! Property tests: every valid domain record survives a trip through the
//! wire format unchanged, and so does every watch event.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use mesh_api::ClusterId;

fn cluster() -> impl Strategy<Value = ClusterName> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]".prop_map(|s| ClusterName::new(s).unwrap())
}

fn node_name() -> impl Strategy<Value = NodeName> {
    "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,2}".prop_map(|s| NodeName::new(s).unwrap())
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,15}[a-z0-9]"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 8u8..=32)
            .prop_map(|(a, p)| IpNet::new(Ipv4Addr::from(a).into(), p).unwrap().trunc()),
        (any::<u128>(), 16u8..=128)
            .prop_map(|(a, p)| IpNet::new(Ipv6Addr::from(a).into(), p).unwrap().trunc()),
    ]
}

fn protocol_s() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ]
}

fn named_port() -> impl Strategy<Value = NamedPort> {
    ("[a-z]{0,8}", 1u16.., protocol_s()).prop_map(|(name, port, protocol)| NamedPort {
        name,
        port,
        protocol,
    })
}

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        proptest::sample::select(mesh_api::ReservedIdentity::ALL.to_vec()).prop_map(Identity::from),
        (1i64..=255, Identity::MIN_LOCAL..=u16::MAX).prop_map(|(c, l)| Identity::new(
            ClusterId::new(c).unwrap(),
            l
        )
        .unwrap()),
    ]
}

fn labels() -> impl Strategy<Value = LabelSet> {
    proptest::collection::btree_map(
        "([a-z]{1,8}\\.io/)?[a-z][a-z0-9_.-]{0,10}[a-z0-9]",
        "([a-z0-9]([a-z0-9_.-]{0,10}[a-z0-9])?)?",
        0..6,
    )
    .prop_map(|m: BTreeMap<String, String>| LabelSet::new(m).unwrap())
}

fn node() -> impl Strategy<Value = NodeRecord> {
    (
        cluster(),
        node_name(),
        proptest::collection::vec(ip(), 0..3),
        proptest::collection::vec(cidr(), 0..3),
        proptest::option::of(any::<[u8; 32]>().prop_map(WireGuardKey::from_bytes)),
    )
        .prop_map(
            |(cluster, name, ips, pod_cidrs, wireguard_key)| NodeRecord {
                cluster,
                name,
                ips,
                pod_cidrs,
                wireguard_key,
            },
        )
}

fn endpoint() -> impl Strategy<Value = EndpointRecord> {
    (
        cluster(),
        dns_label(),
        dns_label(),
        proptest::collection::vec(ip(), 1..3),
        identity(),
        node_name(),
        proptest::collection::vec(named_port(), 0..3),
    )
        .prop_map(
            |(cluster, namespace, pod, ips, identity, node, ports)| EndpointRecord {
                cluster,
                namespace,
                pod,
                ips,
                identity,
                node,
                ports,
            },
        )
}

fn backend() -> impl Strategy<Value = Backend> {
    (
        ip(),
        proptest::collection::vec(named_port(), 0..3),
        any::<bool>(),
        proptest::option::of(node_name()),
        proptest::option::of("[a-z0-9-]{1,12}"),
    )
        .prop_map(|(ip, ports, ready, node, zone)| Backend {
            ip,
            ports,
            ready,
            node,
            zone,
        })
}

fn service() -> impl Strategy<Value = ServiceRecord> {
    let port = ("[a-z]{0,8}", 1u16.., protocol_s(), any::<u16>()).prop_map(
        |(name, port, protocol, target_port)| ServicePort {
            name,
            port,
            protocol,
            target_port,
        },
    );
    let affinity = prop_oneof![
        Just(Affinity::None),
        Just(Affinity::Local),
        Just(Affinity::Remote)
    ];
    (
        cluster(),
        dns_label(),
        dns_label(),
        proptest::collection::vec(ip(), 0..2),
        proptest::collection::vec(port, 0..3),
        proptest::collection::vec(backend(), 0..4),
        (any::<bool>(), any::<bool>(), affinity),
    )
        .prop_map(
            |(
                cluster,
                namespace,
                name,
                cluster_ips,
                ports,
                backends,
                (global, shared, affinity),
            )| {
                ServiceRecord {
                    cluster,
                    namespace,
                    name,
                    cluster_ips,
                    ports,
                    backends,
                    options: ServiceMeshOptions {
                        global,
                        shared,
                        affinity,
                    },
                }
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        node().prop_map(Record::Node),
        (cluster(), identity(), labels()).prop_map(|(cluster, id, labels)| Record::Identity(
            IdentityRecord {
                cluster,
                id,
                labels
            }
        )),
        endpoint().prop_map(Record::Endpoint),
        service().prop_map(Record::Service),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::ALL.to_vec())
}

fn event() -> impl Strategy<Value = WatchEvent> {
    prop_oneof![
        (any::<u64>(), record())
            .prop_map(|(revision, record)| WatchEvent::Upsert { revision, record }),
        (any::<u64>(), kind(), ".{0,20}").prop_map(|(revision, kind, key)| WatchEvent::Delete {
            revision,
            kind,
            key
        }),
        (
            any::<u64>(),
            proptest::collection::vec(kind(), 0..4),
            proptest::collection::vec("[a-z]{1,8}", 0..3)
        )
            .prop_map(|(revision, kinds, pending)| WatchEvent::SyncComplete {
                revision,
                kinds,
                pending
            }),
        ".{0,30}".prop_map(|reason| WatchEvent::Reset { reason }),
    ]
}

proptest! {
    #[test]
    fn records_round_trip(r in record()) {
        let wire = pb::upsert::Record::from(&r);
        prop_assert_eq!(Record::try_from(&wire).unwrap(), r);
    }

    #[test]
    fn events_round_trip_through_bytes(e in event()) {
        use prost::Message as _;
        let bytes = pb::WatchEvent::from(&e).encode_to_vec();
        let decoded = pb::WatchEvent::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(WatchEvent::try_from(&decoded).unwrap(), e);
    }
}

#[test]
fn bad_wire_values_name_the_field() {
    let mut n = pb::Node::from(&NodeRecord {
        cluster: ClusterName::new("c1").unwrap(),
        name: NodeName::new("n1").unwrap(),
        ips: vec![],
        pod_cidrs: vec![],
        wireguard_key: None,
    });
    n.pod_cidrs = vec!["10.1.0.1/16".into()];
    let err = NodeRecord::try_from(&n).unwrap_err().to_string();
    assert!(
        err.contains("Node.pod_cidrs") && err.contains("10.1.0.0/16"),
        "{err}"
    );
    n.pod_cidrs = vec![];
    n.ips = vec!["300.1.1.1".into()];
    let err = NodeRecord::try_from(&n).unwrap_err().to_string();
    assert!(
        err.contains("Node.ips") && err.contains("300.1.1.1"),
        "{err}"
    );
    let ev = pb::WatchEvent { event: None };
    let err = WatchEvent::try_from(&ev).unwrap_err().to_string();
    assert!(err.contains("WatchEvent") && err.contains("event"), "{err}");
    let id = pb::Identity {
        cluster: "c1".into(),
        id: 0x0001_0005,
        labels: Default::default(),
    };
    let err = IdentityRecord::try_from(&id).unwrap_err().to_string();
    assert!(err.contains("256"), "{err}");
}
