use std::collections::BTreeMap;

use super::*;
use crate::records::{
    Backend, EndpointRecord, IdentityRecord, NodeRecord, ServiceMeshOptions, ServiceRecord,
};
use crate::{Identity, LabelSet, NodeName};

fn cn(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

/// c2 (id 2, 10.2.0.0/16) seen from c1 (10.1.0.0/16), with c3 (10.3.0.0/16)
/// also connected.
fn scope() -> RemoteScope {
    RemoteScope {
        cluster: cn("c2"),
        id: ClusterId::new(2).unwrap(),
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        foreign: vec![
            (cn("c1"), vec!["10.1.0.0/16".parse().unwrap()]),
            (cn("c3"), vec!["10.3.0.0/16".parse().unwrap()]),
        ],
    }
}

fn node(cluster: &str, ips: &[&str], cidrs: &[&str]) -> Record {
    Record::Node(NodeRecord {
        cluster: cn(cluster),
        name: NodeName::new("n1").unwrap(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        pod_cidrs: cidrs.iter().map(|s| s.parse().unwrap()).collect(),
        wireguard_key: None,
    })
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    )
    .unwrap()
}

fn identity(number: u32, cluster_label: Option<&str>) -> Record {
    let mut pairs = vec![("app", "web")];
    if let Some(c) = cluster_label {
        pairs.push((CLUSTER_LABEL, c));
    }
    Record::Identity(IdentityRecord {
        cluster: cn("c2"),
        id: Identity::from_u32(number).unwrap(),
        labels: labels(&pairs),
    })
}

fn endpoint(number: u32, ip: &str) -> Record {
    Record::Endpoint(EndpointRecord {
        cluster: cn("c2"),
        namespace: "default".into(),
        pod: "web-1".into(),
        ips: vec![ip.parse().unwrap()],
        identity: Identity::from_u32(number).unwrap(),
        node: NodeName::new("n1").unwrap(),
        ports: vec![],
    })
}

fn service(backend: &str) -> Record {
    Record::Service(ServiceRecord {
        cluster: cn("c2"),
        namespace: "default".into(),
        name: "web".into(),
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![],
        backends: vec![Backend {
            ip: backend.parse().unwrap(),
            ports: vec![],
            ready: true,
            node: None,
            zone: None,
        }],
        options: ServiceMeshOptions::default(),
    })
}

const C2: u32 = 2 << 16;
const C1: u32 = 1 << 16;

#[test]
fn what_a_remote_may_and_may_not_say() {
    use RefusalCode::*;
    let cases: Vec<(&str, Record, Option<RefusalCode>)> = vec![
        (
            "its own node",
            node("c2", &["192.168.77.20"], &["10.2.1.0/24"]),
            None,
        ),
        (
            "a node of c1",
            node("c1", &["192.168.77.20"], &["10.1.1.0/24"]),
            Some(ForeignCluster),
        ),
        (
            "half the address space",
            node("c2", &["192.168.77.20"], &["128.0.0.0/1"]),
            Some(OutsidePodCidrs),
        ),
        (
            "the whole of its CIDR and more",
            node("c2", &["192.168.77.20"], &["10.0.0.0/8"]),
            Some(ForeignAddress),
        ),
        (
            "c1's pod CIDR",
            node("c2", &["192.168.77.20"], &["10.1.2.0/24"]),
            Some(ForeignAddress),
        ),
        (
            "c3's pod CIDR",
            node("c2", &["192.168.77.20"], &["10.3.0.0/24"]),
            Some(ForeignAddress),
        ),
        (
            "a node address in c1's pods",
            node("c2", &["10.1.0.5"], &["10.2.1.0/24"]),
            Some(ForeignAddress),
        ),
        (
            "a loopback node address",
            node("c2", &["127.0.0.1"], &["10.2.1.0/24"]),
            Some(BadAddress),
        ),
        ("its identity", identity(C2 | 300, Some("c2")), None),
        (
            "an identity numbered with c1's id",
            identity(C1 | 300, Some("c2")),
            Some(ForeignIdentity),
        ),
        (
            "an identity labelled c1",
            identity(C2 | 300, Some("c1")),
            Some(ClusterLabel),
        ),
        (
            "an identity without a cluster label",
            identity(C2 | 300, None),
            Some(ClusterLabel),
        ),
        (
            "the reserved identity host",
            identity(1, Some("c2")),
            Some(ReservedIdentity),
        ),
        (
            "a node-local identity",
            identity(Identity::NODE_LOCAL | 5, Some("c2")),
            Some(ReservedIdentity),
        ),
        ("its endpoint", endpoint(C2 | 300, "10.2.1.7"), None),
        (
            "an endpoint with a c1 identity",
            endpoint(C1 | 300, "10.2.1.7"),
            Some(ForeignIdentity),
        ),
        (
            "an endpoint with a world identity",
            endpoint(2, "10.2.1.7"),
            Some(ReservedIdentity),
        ),
        (
            "an endpoint at a c1 pod address",
            endpoint(C2 | 300, "10.1.1.7"),
            Some(ForeignAddress),
        ),
        (
            "an endpoint outside its CIDRs",
            endpoint(C2 | 300, "172.16.0.1"),
            Some(OutsidePodCidrs),
        ),
        ("its service", service("10.2.1.7"), None),
        (
            "a service with a c3 backend",
            service("10.3.0.9"),
            Some(ForeignAddress),
        ),
        (
            "a service with an outside backend",
            service("8.8.8.8"),
            Some(OutsidePodCidrs),
        ),
    ];
    for (what, record, want) in cases {
        let got = check_record(&scope(), &record);
        match (want, got) {
            (None, Ok(())) => {}
            (Some(code), Err(r)) => {
                assert_eq!(r.code, code, "{what}: {r}");
                assert!(!r.detail.is_empty(), "{what}");
            }
            (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_remote_without_declared_cidrs_may_name_no_pod_address() {
    let mut s = scope();
    s.pod_cidrs.clear();
    let err = check_record(&s, &node("c2", &["192.168.77.20"], &["10.2.1.0/24"])).unwrap_err();
    assert_eq!(err.code, RefusalCode::OutsidePodCidrs);
    assert!(err.detail.contains("none declared"), "{err}");
    // Identities carry no address: still fine.
    check_record(&s, &identity(C2 | 300, Some("c2"))).unwrap();
}

#[test]
fn quotas_refuse_past_each_limit_and_zero_means_none() {
    let q = Quotas {
        nodes: 2,
        identities: 0,
        endpoints: 1,
        services: 1,
        bytes: 100,
        labels_per_identity: 1,
    };
    q.check_count(Kind::Node, 1).unwrap();
    assert_eq!(
        q.check_count(Kind::Node, 2).unwrap_err().code,
        RefusalCode::OverQuota
    );
    q.check_count(Kind::Identity, 1_000_000).unwrap();
    q.check_bytes(60, 40).unwrap();
    let err = q.check_bytes(60, 41).unwrap_err();
    assert!(err.detail.contains("100 bytes"), "{err}");
    let err = q.check_labels(&identity(C2 | 300, Some("c2"))).unwrap_err();
    assert!(err.detail.contains("2 labels"), "{err}");
    Quotas::default()
        .check_labels(&identity(C2 | 300, Some("c2")))
        .unwrap();
}

#[test]
fn a_cluster_exports_only_nodes_inside_its_declared_pod_cidrs() {
    let c2 = cn("c2");
    let declared: Vec<IpNet> = vec!["10.2.0.0/16".parse().unwrap()];
    let net = |s: &str| -> Vec<IpNet> { vec![s.parse().unwrap()] };
    check_own_node_cidrs(&c2, &declared, &net("10.2.1.0/24")).unwrap();
    check_own_node_cidrs(&c2, &declared, &[]).unwrap();
    for bad in ["128.0.0.0/1", "10.0.0.0/8", "10.3.0.0/24"] {
        let err = check_own_node_cidrs(&c2, &declared, &net(bad)).unwrap_err();
        assert_eq!(err.code, RefusalCode::OutsidePodCidrs, "{bad}");
        assert!(
            err.detail.contains(bad) && err.detail.contains("--pod-cidrs"),
            "{err}"
        );
    }
    let err = check_own_node_cidrs(&c2, &[], &net("10.2.1.0/24")).unwrap_err();
    assert!(err.detail.contains("none declared"), "{err}");
}

#[test]
fn an_agent_refuses_what_would_touch_its_own_cluster() {
    use RefusalCode::*;
    let local = cn("c1");
    let id = ClusterId::new(1).unwrap();
    let cidrs: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap()];
    let cases: Vec<(&str, Record, Option<RefusalCode>)> = vec![
        (
            "c2's node",
            node("c2", &["192.168.77.20"], &["10.2.1.0/24"]),
            None,
        ),
        (
            "c1's own node, any CIDR",
            node("c1", &["192.168.77.20"], &["10.1.1.0/24"]),
            None,
        ),
        (
            "c2 node over c1's pods",
            node("c2", &["192.168.77.20"], &["10.0.0.0/8"]),
            Some(ForeignAddress),
        ),
        (
            "c2 node at a c1 pod address",
            node("c2", &["10.1.0.7"], &["10.2.1.0/24"]),
            Some(ForeignAddress),
        ),
        ("c2 identity", identity(C2 | 300, Some("c2")), None),
        (
            "c2 identity with c1's id",
            identity(C1 | 300, Some("c2")),
            Some(ForeignIdentity),
        ),
        (
            "c2 identity labelled c1",
            identity(C2 | 300, Some("c1")),
            Some(ClusterLabel),
        ),
        (
            "c2 reserved identity",
            identity(6, Some("c2")),
            Some(ReservedIdentity),
        ),
        (
            "c2 endpoint in c1's pods",
            endpoint(C2 | 300, "10.1.3.3"),
            Some(ForeignAddress),
        ),
        (
            "c2 service with a c1 backend",
            service("10.1.3.3"),
            Some(ForeignAddress),
        ),
        ("c2 service", service("10.2.3.3"), None),
    ];
    for (what, record, want) in cases {
        let got = check_foreign_record(&local, id, &cidrs, &record);
        match (want, got) {
            (None, Ok(())) => {}
            (Some(code), Err(r)) => assert_eq!(r.code, code, "{what}: {r}"),
            (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
        }
    }
}
