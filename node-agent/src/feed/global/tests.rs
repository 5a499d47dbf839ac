use super::*;
use crate::datapath::Frontend;
use crate::feed::service_entries::local_entries;
use mesh_api::records::{ServiceMeshOptions, ServicePort};
use serde_json::json;

fn cluster(n: &str) -> ClusterName {
    ClusterName::new(n).expect("cluster name")
}

/// Service shop/web in c1 (ClusterIP 10.96.0.10:80 → 8080, NodePort 30080)
/// with the given annotations and one ready local pod 10.1.0.5.
fn local_web(annotations: serde_json::Value) -> (Vec<Service>, Vec<ServiceEntry>) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "web", "annotations": annotations},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                            "targetPort": 8080, "nodePort": 30080}]}
    }))
    .expect("service");
    let slice = serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "web-1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "nodeName": "c1-n1"}]
    }))
    .expect("slice");
    let node = "192.0.2.1".parse().expect("ip");
    let (entries, warnings) = local_entries(std::slice::from_ref(&svc), &[slice], "c1-n1", &[node]);
    assert!(warnings.is_empty(), "{warnings:?}");
    (vec![svc], entries)
}

/// Cluster `c`'s record of shop/web: backends `ips` (ready unless listed
/// in `not_ready`) on port "http" = `port`.
fn remote(c: &str, ips: &[&str], port: u16, opts: ServiceMeshOptions) -> ServiceRecord {
    ServiceRecord {
        cluster: cluster(c),
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec!["10.97.0.10".parse().expect("ip")],
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: 8080,
        }],
        backends: ips
            .iter()
            .map(|ip| Backend {
                ip: ip.parse().expect("ip"),
                ports: vec![NamedPort {
                    name: "http".into(),
                    port,
                    protocol: Protocol::Tcp,
                }],
                ready: true,
                node: None,
                zone: None,
            })
            .collect(),
        options: opts,
    }
}

fn global() -> ServiceMeshOptions {
    ServiceMeshOptions {
        global: true,
        ..ServiceMeshOptions::default()
    }
}

/// ClusterIP backends after the merge, as "ip:port".
fn merged(
    annotations: serde_json::Value,
    records: &[ServiceRecord],
    stale: &[&str],
) -> (Vec<String>, Vec<Warning>, Vec<ServiceEntry>) {
    let (services, local) = local_web(annotations);
    let me = cluster("c1");
    let stale: BTreeSet<ClusterName> = stale.iter().map(|c| cluster(c)).collect();
    let inputs = GlobalInputs {
        cluster: &me,
        compat_cilium: true,
        records,
        stale: &stale,
    };
    let (entries, warnings) = merge_entries(&services, local, &inputs);
    let cip = entries
        .iter()
        .find(|e| e.frontend.kind == FrontendKind::ClusterIp)
        .expect("ClusterIP entry");
    let addrs = cip
        .backends
        .iter()
        .map(|b| format!("{}:{}", b.ip, b.port))
        .collect();
    (addrs, warnings, entries)
}

#[test]
fn table_of_global_service_merges() {
    let c2 = remote("c2", &["10.2.0.7", "10.2.0.8"], 8080, global());
    let c3_unshared = remote(
        "c3",
        &["10.3.0.9"],
        8080,
        ServiceMeshOptions {
            shared: false,
            ..global()
        },
    );
    // c1's own record (the mesh feed carries the local cluster too) must
    // not be counted as remote.
    let c1_own = remote("c1", &["10.1.0.99"], 8080, global());
    let g = "service.meshwork.io/global";
    let a = "service.meshwork.io/affinity";
    type Case<'a> = (
        &'a str,
        serde_json::Value,
        Vec<ServiceRecord>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "not global: local only",
            json!({}),
            vec![c2.clone()],
            &[],
            &["10.1.0.5:8080"],
        ),
        (
            "global, affinity none: all clusters",
            json!({g: "true"}),
            vec![c1_own.clone(), c2.clone()],
            &[],
            &["10.1.0.5:8080", "10.2.0.7:8080", "10.2.0.8:8080"],
        ),
        (
            "affinity local with local ready backends: local only",
            json!({g: "true", a: "local"}),
            vec![c2.clone()],
            &[],
            &["10.1.0.5:8080"],
        ),
        (
            "affinity remote: remote only",
            json!({g: "true", a: "remote"}),
            vec![c2.clone()],
            &[],
            &["10.2.0.7:8080", "10.2.0.8:8080"],
        ),
        (
            "remote cluster with shared=false: its backends unused",
            json!({g: "true"}),
            vec![c2.clone(), c3_unshared.clone()],
            &[],
            &["10.1.0.5:8080", "10.2.0.7:8080", "10.2.0.8:8080"],
        ),
        (
            "remote cluster removed: its backends gone",
            json!({g: "true"}),
            vec![],
            &[],
            &["10.1.0.5:8080"],
        ),
        (
            "remote cluster stale: its last known backends kept",
            json!({g: "true"}),
            vec![c2.clone()],
            &["c2"],
            &["10.1.0.5:8080", "10.2.0.7:8080", "10.2.0.8:8080"],
        ),
        (
            "Cilium's annotation names with compat on",
            json!({"service.cilium.io/global": "true", "service.cilium.io/affinity": "remote"}),
            vec![c2.clone()],
            &[],
            &["10.2.0.7:8080", "10.2.0.8:8080"],
        ),
        (
            "malformed affinity: not global",
            json!({g: "true", a: "sideways"}),
            vec![c2.clone()],
            &[],
            &["10.1.0.5:8080"],
        ),
    ];
    for (what, annotations, records, stale, want) in cases {
        let (got, _, _) = merged(annotations, &records, stale);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn affinity_local_fails_over_to_remote_when_no_local_backend_is_ready() {
    let (services, mut local) = local_web(json!({
        "service.meshwork.io/global": "true", "service.meshwork.io/affinity": "local"}));
    for e in &mut local {
        e.backends.clear();
    }
    let me = cluster("c1");
    let stale = BTreeSet::new();
    let records = [remote("c2", &["10.2.0.7"], 8080, global())];
    let inputs = GlobalInputs {
        cluster: &me,
        compat_cilium: false,
        records: &records,
        stale: &stale,
    };
    let (entries, warnings) = merge_entries(&services, local, &inputs);
    assert!(warnings.is_empty(), "{warnings:?}");
    for e in entries
        .iter()
        .filter(|e| e.frontend.kind == FrontendKind::ClusterIp)
    {
        assert_eq!(
            e.backends,
            [BackendAddr {
                ip: "10.2.0.7".parse().expect("ip"),
                port: 8080
            }],
            "{:?}",
            e.frontend
        );
    }
}

#[test]
fn malformed_annotation_warns_naming_the_service_and_allowed_values() {
    let (got, warnings, _) = merged(
        json!({"service.meshwork.io/global": "true", "service.meshwork.io/affinity": "sideways"}),
        &[remote("c2", &["10.2.0.7"], 8080, global())],
        &[],
    );
    assert_eq!(got, ["10.1.0.5:8080"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].service, "shop/web");
    let m = &warnings[0].message;
    for part in [
        "service.meshwork.io/affinity",
        "sideways",
        "local, remote or none",
        "not global",
    ] {
        assert!(m.contains(part), "{part:?} missing in {m:?}");
    }
}

#[test]
fn remote_backends_take_their_named_port_else_the_numeric_target_port() {
    // c2 resolves "http" to 9090 in its EndpointSlice; c3's backend has no
    // port list, so the Service's targetPort 8080 applies; c4's has neither.
    let c2 = remote("c2", &["10.2.0.7"], 9090, global());
    let mut c3 = remote("c3", &["10.3.0.7"], 0, global());
    c3.backends[0].ports.clear();
    let mut c4 = remote("c4", &["10.4.0.7"], 0, global());
    c4.backends[0].ports.clear();
    c4.ports[0].target_port = 0;
    let (got, warnings, _) = merged(
        json!({"service.meshwork.io/global": "true"}),
        &[c2, c3, c4],
        &[],
    );
    assert_eq!(got, ["10.1.0.5:8080", "10.2.0.7:9090", "10.3.0.7:8080"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("10.4.0.7") && warnings[0].message.contains("c4"),
        "{warnings:?}"
    );
}

#[test]
fn node_ports_never_take_remote_backends() {
    let records = [remote("c2", &["10.2.0.7"], 8080, global())];
    let (_, _, entries) = merged(json!({"service.meshwork.io/global": "true"}), &records, &[]);
    let np = entries
        .iter()
        .find(|e| e.frontend.kind == FrontendKind::NodePort)
        .expect("NodePort entry");
    assert_eq!(np.backends.len(), 1, "node-local only (no SNAT): {np:?}");

    let (mut services, local) = local_web(json!({"service.meshwork.io/global": "true"}));
    services[0]
        .spec
        .as_mut()
        .expect("spec")
        .external_traffic_policy = Some("Local".into());
    let me = cluster("c1");
    let stale = BTreeSet::new();
    let inputs = GlobalInputs {
        cluster: &me,
        compat_cilium: false,
        records: &records,
        stale: &stale,
    };
    let (entries, _) = merge_entries(&services, local, &inputs);
    let np = entries
        .iter()
        .find(|e| e.frontend.kind == FrontendKind::NodePort)
        .expect("NodePort entry");
    assert_eq!(np.backends.len(), 1, "node-local only: {np:?}");
    let cip = entries
        .iter()
        .find(|e| e.frontend.kind == FrontendKind::ClusterIp)
        .expect("ClusterIP entry");
    assert_eq!(cip.backends.len(), 2, "{cip:?}");
}

#[test]
fn other_services_and_namespaces_are_untouched() {
    let mut other_ns = remote("c2", &["10.2.0.7"], 8080, global());
    other_ns.namespace = "prod".into();
    let mut other_name = remote("c2", &["10.2.0.8"], 8080, global());
    other_name.name = "api".into();
    let (got, _, entries) = merged(
        json!({"service.meshwork.io/global": "true"}),
        &[other_ns, other_name],
        &[],
    );
    assert_eq!(got, ["10.1.0.5:8080"]);
    assert!(entries.iter().all(|e| e.frontend
        != Frontend {
            ip: "10.97.0.10".parse().expect("ip"),
            port: 80,
            protocol: Protocol::Tcp,
            kind: FrontendKind::ClusterIp
        }));
}
