use super::*;
use serde_json::json;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("service")
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).expect("slice")
}

fn web() -> Service {
    svc(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}
    }))
}

fn web_slice() -> EndpointSlice {
    slice(json!({
        "metadata": {"namespace": "default", "name": "web-abc",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.1.0.7"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.1.0.3"], "nodeName": "n1"},
            {"addresses": ["10.1.0.9"], "conditions": {"ready": false}, "nodeName": "n1"}
        ]
    }))
}

#[test]
fn cluster_ip_and_node_port_get_the_ready_backends_sorted() {
    let node = "192.0.2.1".parse().unwrap();
    let (entries, warnings) = local_entries(&[web()], &[web_slice()], "n1", &[node]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let backends: Vec<String> = entries[0]
        .backends
        .iter()
        .map(|b| format!("{}:{}", b.ip, b.port))
        .collect();
    assert_eq!(backends, ["10.1.0.3:8080", "10.1.0.7:8080"]);
    let kinds: Vec<_> = entries
        .iter()
        .map(|e| (e.frontend.ip.to_string(), e.frontend.port, e.frontend.kind))
        .collect();
    assert!(kinds.contains(&("10.96.0.10".into(), 80, FrontendKind::ClusterIp)));
    assert!(kinds.contains(&("192.0.2.1".into(), 30080, FrontendKind::NodePort)));
    assert_eq!(entries[0].backends, entries[1].backends);
}

#[test]
fn bad_port_or_protocol_skips_only_that_service_with_a_warning_naming_it() {
    let sctp = svc(json!({
        "metadata": {"namespace": "prod", "name": "sig"},
        "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 9, "protocol": "SCTP"}]}
    }));
    let zero = svc(json!({
        "metadata": {"namespace": "prod", "name": "zero"},
        "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 0}]}
    }));
    let huge = svc(json!({
        "metadata": {"namespace": "prod", "name": "huge"},
        "spec": {"clusterIP": "10.96.0.13", "ports": [{"port": 70000}]}
    }));
    let (entries, warnings) = local_entries(&[sctp, web(), zero, huge], &[web_slice()], "n1", &[]);
    assert_eq!(entries.len(), 1, "only web's ClusterIP: {entries:?}");
    let names: Vec<&str> = warnings.iter().map(|w| w.service.as_str()).collect();
    assert_eq!(names, ["prod/sig", "prod/zero", "prod/huge"]);
    assert!(warnings[0].message.contains("TCP and UDP"), "{warnings:?}");
    assert!(warnings[1].message.contains("1-65535"), "{warnings:?}");
}

#[test]
fn headless_and_external_name_services_have_no_frontend() {
    let headless = svc(json!({
        "metadata": {"namespace": "default", "name": "h"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
    }));
    let ext = svc(json!({
        "metadata": {"namespace": "default", "name": "e"},
        "spec": {"type": "ExternalName", "externalName": "example.org"}
    }));
    let (entries, warnings) = local_entries(&[headless, ext], &[], "n1", &[]);
    assert!(entries.is_empty() && warnings.is_empty());
}

#[test]
fn slices_of_other_services_namespaces_or_ports_are_ignored() {
    let mut other_ns = web_slice();
    other_ns.metadata.namespace = Some("other".into());
    let mut other_port = web_slice();
    other_port.ports.as_mut().unwrap()[0].name = Some("metrics".into());
    let (entries, _) = local_entries(&[web()], &[other_ns, other_port], "n1", &[]);
    assert_eq!(entries.len(), 1);
    assert!(entries[0].backends.is_empty());
}

#[test]
fn node_ports_carry_every_backend_with_policy_cluster_and_this_nodes_with_local() {
    for (policy, want) in [
        (Some("Local"), vec!["10.1.0.7"]),
        (Some("Cluster"), vec!["10.1.0.3", "10.1.0.7"]),
        (None, vec!["10.1.0.3", "10.1.0.7"]),
    ] {
        let mut svc = web();
        svc.spec.as_mut().unwrap().external_traffic_policy = policy.map(String::from);
        let mut sl = web_slice();
        sl.endpoints[0].node_name = Some("n1".into()); // 10.1.0.7 here
        sl.endpoints[1].node_name = Some("n2".into()); // 10.1.0.3 elsewhere
        let node = "192.0.2.1".parse().unwrap();
        let (entries, _) = local_entries(&[svc], &[sl], "n1", &[node]);
        let by_kind = |k| {
            entries
                .iter()
                .find(|e| e.frontend.kind == k)
                .map(|e| {
                    e.backends
                        .iter()
                        .map(|b| b.ip.to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap()
        };
        assert_eq!(by_kind(FrontendKind::ClusterIp), ["10.1.0.3", "10.1.0.7"]);
        assert_eq!(by_kind(FrontendKind::NodePort), want, "{policy:?}");
    }
}

#[test]
fn client_ip_session_affinity_reaches_every_frontend_with_its_timeout() {
    let node = "192.0.2.1".parse().unwrap();
    let with = |affinity: serde_json::Value| {
        let mut v = serde_json::to_value(web()).unwrap();
        for (k, x) in affinity.as_object().unwrap() {
            v["spec"][k] = x.clone();
        }
        local_entries(&[svc(v)], &[web_slice()], "n1", &[node])
    };
    let (entries, warnings) = with(json!({"sessionAffinity": "ClientIP"}));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(entries.len(), 2);
    assert!(
        entries.iter().all(|e| e.affinity_timeout == Some(10_800)),
        "{entries:?}"
    );
    let (entries, _) = with(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
    assert!(entries.iter().all(|e| e.affinity_timeout == Some(60)));
    let (entries, _) = with(json!({"sessionAffinity": "None"}));
    assert!(entries.iter().all(|e| e.affinity_timeout.is_none()));
    // Out of range: a warning naming the value, served with the default.
    let (entries, warnings) = with(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}));
    assert!(entries.iter().all(|e| e.affinity_timeout == Some(10_800)));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].message.contains("timeoutSeconds 0"),
        "{warnings:?}"
    );
}

/// (kind, address) → backend addresses of every frontend.
fn frontends(entries: &[ServiceEntry]) -> Vec<(FrontendKind, String, Vec<String>)> {
    let mut out: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.frontend.kind,
                e.frontend.ip.to_string(),
                e.backends.iter().map(|b| b.ip.to_string()).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn external_ips_and_load_balancer_addresses_follow_the_external_traffic_policy() {
    let lb = |policy: &str| {
        svc(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                     "externalIPs": ["198.51.100.7", "2001:db8::7"],
                     "externalTrafficPolicy": policy,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.77.200"}, {"hostname": "lb.example"}]}}
        }))
    };
    let mut sl = web_slice();
    sl.endpoints[1].node_name = Some("n2".into()); // 10.1.0.3 elsewhere
    let node = "192.0.2.1".parse().unwrap();
    let all = vec!["10.1.0.3".to_string(), "10.1.0.7".to_string()];
    let here = vec!["10.1.0.7".to_string()];
    for (policy, outside) in [("Cluster", &all), ("Local", &here)] {
        let (entries, warnings) = local_entries(&[lb(policy)], &[sl.clone()], "n1", &[node]);
        assert_eq!(
            frontends(&entries),
            vec![
                (FrontendKind::ClusterIp, "10.96.0.10".into(), all.clone()),
                (FrontendKind::NodePort, "192.0.2.1".into(), outside.clone()),
                (
                    FrontendKind::ExternalIp,
                    "198.51.100.7".into(),
                    outside.clone()
                ),
                (
                    FrontendKind::LoadBalancer,
                    "192.168.77.200".into(),
                    outside.clone()
                ),
            ],
            "{policy}"
        );
        assert_eq!(warnings.len(), 1, "the IPv6 external IP: {warnings:?}");
        assert!(warnings[0].message.contains("2001:db8::7"));
    }
    // A NodePort Service's stale status is not a LoadBalancer address.
    let mut np = lb("Cluster");
    np.spec.as_mut().unwrap().type_ = Some("NodePort".into());
    let (entries, _) = local_entries(&[np], &[sl], "n1", &[node]);
    assert!(
        entries
            .iter()
            .all(|e| e.frontend.kind != FrontendKind::LoadBalancer)
    );
}

#[test]
fn internal_traffic_policy_local_serves_the_cluster_ip_with_this_nodes_backends() {
    let mut svc = web();
    svc.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let mut sl = web_slice();
    sl.endpoints[1].node_name = Some("n2".into());
    let (entries, _) = local_entries(&[svc.clone()], &[sl.clone()], "n1", &[]);
    assert_eq!(
        frontends(&entries),
        vec![(
            FrontendKind::ClusterIp,
            "10.96.0.10".into(),
            vec!["10.1.0.7".into()]
        )]
    );
    // On a node with none: no backend, nothing answers (never another node's).
    let (entries, _) = local_entries(&[svc], &[sl], "n3", &[]);
    assert!(entries[0].backends.is_empty());
}
