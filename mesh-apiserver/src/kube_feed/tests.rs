use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeAddress, NodeSpec, NodeStatus, PodIP, PodSpec, PodStatus, ServicePort as KPort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::leader::Leadership;
use crate::store::MemoryStore;

fn meta(
    ns: Option<&str>,
    name: &str,
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> ObjectMeta {
    let m = |v: &[(&str, &str)]| {
        Some(
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        annotations: m(annotations),
        labels: m(labels),
        ..Default::default()
    }
}

fn c() -> ClusterName {
    ClusterName::new("a").unwrap()
}

#[test]
fn node_internal_ip_first_pod_cidrs_and_wireguard_key() {
    let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let node = Node {
        metadata: meta(None, "n1", &[(mesh_api::annotations::WG_PUB_KEY, key)], &[]),
        spec: Some(NodeSpec {
            pod_cidrs: Some(vec!["10.1.1.0/24".into(), "fd00:1:1::/64".into()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "n1".into(),
                },
                NodeAddress {
                    type_: "ExternalIP".into(),
                    address: "203.0.113.1".into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.0.2.1".into(),
                },
            ]),
            ..Default::default()
        }),
    };
    let (r, w) = node_record(&c(), &node).unwrap();
    assert!(w.is_none());
    assert_eq!(r.ips[0].to_string(), "192.0.2.1");
    assert_eq!(r.ips.len(), 2);
    assert_eq!(r.pod_cidrs.len(), 2);
    assert_eq!(r.wireguard_key.unwrap().to_string(), key);
    let mut bad = node.clone();
    bad.metadata = meta(
        None,
        "n1",
        &[(mesh_api::annotations::WG_PUB_KEY, "nope")],
        &[],
    );
    let (r, w) = node_record(&c(), &bad).unwrap();
    assert!(r.wireguard_key.is_none());
    assert!(w.unwrap().message.contains("wg-pub-key"));
}

fn svc(annotations: &[(&str, &str)]) -> Service {
    Service {
        metadata: meta(Some("default"), "web", annotations, &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(vec![KPort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice() -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            Some("default"),
            "web-abc",
            &[],
            &[("kubernetes.io/service-name", "web")],
        ),
        address_type: "IPv4".into(),
        endpoints: vec![
            Endpoint {
                addresses: vec!["10.1.1.5".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                node_name: Some("n1".into()),
                ..Default::default()
            },
            Endpoint {
                addresses: vec!["10.1.1.6".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

#[test]
fn global_services_with_backends_and_malformed_annotations() {
    let s = slice();
    let (r, w) = service_record(
        &c(),
        &svc(&[("service.meshwork.io/global", "true")]),
        &[&s],
        false,
    );
    assert!(w.is_none());
    let r = r.expect("global");
    assert_eq!(r.backends.len(), 2);
    assert!(
        r.backends
            .iter()
            .any(|b| b.ip.to_string() == "10.1.1.6" && !b.ready)
    );
    assert_eq!(r.ports[0].target_port, 80);
    // Not global: not exported.
    assert_eq!(service_record(&c(), &svc(&[]), &[&s], false), (None, None));
    // Cilium's annotation only with compat on.
    assert!(
        service_record(
            &c(),
            &svc(&[("service.cilium.io/global", "true")]),
            &[&s],
            false
        )
        .0
        .is_none()
    );
    assert!(
        service_record(
            &c(),
            &svc(&[("service.cilium.io/global", "true")]),
            &[&s],
            true
        )
        .0
        .is_some()
    );
    // Malformed: a warning naming the service and the allowed values; not global.
    let (r, w) = service_record(
        &c(),
        &svc(&[
            ("service.meshwork.io/global", "true"),
            ("service.meshwork.io/affinity", "sideways"),
        ]),
        &[&s],
        false,
    );
    assert!(r.is_none());
    let w = w.unwrap();
    assert_eq!(w.object, "Service default/web");
    assert!(
        w.message.contains("sideways") && w.message.contains("local, remote or none"),
        "{}",
        w.message
    );
}

fn pod(name: &str, app: &str, ip: Option<&str>) -> Pod {
    Pod {
        metadata: meta(
            Some("default"),
            name,
            &[],
            &[("app", app), ("pod-template-hash", "abc")],
        ),
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn identities_are_allocated_once_per_label_set_and_collected_when_unused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let writer = Writer::new(store.clone(), c(), Leadership::always());
    let mut alloc = IdentityAllocator::new(
        writer.clone(),
        mesh_api::ClusterId::new(1).unwrap(),
        Duration::ZERO,
    );
    let l1 = pod_labels(&c(), &pod("web-1", "web", None)).unwrap();
    assert!(l1.get("pod-template-hash").is_none());
    let l2 = pod_labels(&c(), &pod("db-1", "db", None)).unwrap();
    let i1 = alloc.allocate(&l1).await.unwrap();
    assert_eq!(
        alloc
            .allocate(&pod_labels(&c(), &pod("web-2", "web", None)).unwrap())
            .await
            .unwrap(),
        i1
    );
    let i2 = alloc.allocate(&l2).await.unwrap();
    assert_ne!(i1, i2);
    assert_eq!(i1.cluster().unwrap().get(), 1);
    // Concurrent allocators of one label set agree.
    let other = IdentityAllocator::new(
        writer.clone(),
        mesh_api::ClusterId::new(1).unwrap(),
        Duration::ZERO,
    );
    let l3 = pod_labels(&c(), &pod("x", "cache", None)).unwrap();
    let (x, y) = tokio::join!(alloc.allocate(&l3), other.allocate(&l3));
    assert_eq!(x.unwrap(), y.unwrap());
    // Endpoints only for pods with an IP.
    assert!(endpoint_record(&c(), &pod("web-1", "web", None), i1).is_none());
    let e = endpoint_record(&c(), &pod("web-1", "web", Some("10.1.1.5")), i1).unwrap();
    assert_eq!(e.key(), "default/web-1");
    // Unused identities go after the grace period (zero here); used ones stay.
    let in_use = [i1.get()].into_iter().collect();
    let freed = alloc.collect_garbage(&in_use).await.unwrap();
    assert_eq!(freed.len(), 2);
    let left = writer.list(Kind::Identity).await.unwrap();
    assert_eq!(left.len(), 1);
    // A freed label set gets a fresh allocation.
    assert!(alloc.allocate(&l2).await.is_ok());
}

#[tokio::test]
async fn a_reconcile_writes_only_what_changed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let writer = Writer::new(store.clone(), c(), Leadership::always());
    let alloc = IdentityAllocator::new(
        writer.clone(),
        mesh_api::ClusterId::new(1).unwrap(),
        Duration::from_secs(60),
    );
    let pods: Vec<Arc<Pod>> = (0..20)
        .map(|i| {
            Arc::new(pod(
                &format!("web-{i}"),
                "web",
                Some(&format!("10.1.1.{}", i + 1)),
            ))
        })
        .collect();
    let mut d = desired(&local(), &alloc, false, &[], &pods, &[], &[])
        .await
        .unwrap();
    assert_eq!(d.records.len(), 20);
    apply_desired(&writer, &d).await.unwrap();
    let settled = store.revision().await.unwrap();
    // The same state again: no write at all (identities known, records equal).
    let again = desired(&local(), &alloc, false, &[], &pods, &[], &[])
        .await
        .unwrap();
    apply_desired(&writer, &again).await.unwrap();
    assert_eq!(
        store.revision().await.unwrap(),
        settled,
        "nothing changed, nothing written"
    );
    // One pod gone: exactly one delete.
    d.records
        .remove(&(Kind::Endpoint, "default/web-0".to_string()));
    apply_desired(&writer, &d).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), settled + 1);
    assert_eq!(writer.list(Kind::Endpoint).await.unwrap().len(), 19);
}

fn local() -> LocalCluster {
    LocalCluster {
        name: c(),
        id: mesh_api::ClusterId::new(1).unwrap(),
        pod_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
    }
}

fn node_with_cidr(name: &str, cidr: &str) -> Arc<Node> {
    Arc::new(Node {
        metadata: meta(None, name, &[], &[]),
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "192.0.2.1".into(),
            }]),
            ..Default::default()
        }),
    })
}

#[tokio::test]
async fn a_node_outside_the_clusters_pod_cidrs_is_refused_not_exported() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let writer = Writer::new(store.clone(), c(), Leadership::always());
    let alloc = IdentityAllocator::new(
        writer.clone(),
        mesh_api::ClusterId::new(1).unwrap(),
        Duration::from_secs(60),
    );
    let nodes = vec![
        node_with_cidr("good", "10.1.1.0/24"),
        node_with_cidr("half-the-internet", "128.0.0.0/1"),
        node_with_cidr("neighbour", "10.2.0.0/24"),
    ];
    let d = desired(&local(), &alloc, false, &nodes, &[], &[], &[])
        .await
        .unwrap();
    let exported: Vec<&String> = d.records.keys().map(|(_, k)| k).collect();
    assert_eq!(exported, vec!["good"]);
    let refused: Vec<&str> = d.refused.iter().map(|w| w.object.as_str()).collect();
    assert_eq!(refused, vec!["Node half-the-internet", "Node neighbour"]);
    assert!(
        d.refused[0].message.contains("128.0.0.0/1")
            && d.refused[0].message.contains("10.1.0.0/16"),
        "{}",
        d.refused[0].message
    );
    assert_eq!(
        d.refused[0].reference.name.as_deref(),
        Some("half-the-internet")
    );
    // A node exported before and refused now is withdrawn.
    apply_desired(
        &writer,
        &desired(&local(), &alloc, false, &nodes[..1], &[], &[], &[])
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let moved = vec![node_with_cidr("good", "128.0.0.0/1")];
    apply_desired(
        &writer,
        &desired(&local(), &alloc, false, &moved, &[], &[], &[])
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(writer.list(Kind::Node).await.unwrap().is_empty());
}
