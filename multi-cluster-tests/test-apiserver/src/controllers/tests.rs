use serde_json::json;

use super::*;

fn alloc() -> ServiceAllocator {
    ServiceAllocator::new("10.96.0.0/29".parse().unwrap())
}

fn svc(uid: &str, spec: Value) -> Value {
    json!({ "metadata": { "name": uid, "uid": uid }, "spec": spec })
}

#[test]
fn cluster_ips_are_unique_in_range_and_immutable() {
    let a = alloc();
    let mut existing = Vec::new();
    let mut ips = Vec::new();
    // /29: hosts .1-.6, .1 reserved: five allocations, then full.
    for i in 0..5 {
        let mut s = svc(&format!("s{i}"), json!({ "ports": [ { "port": 80 } ] }));
        a.allocate(&mut s, None, &existing).unwrap();
        ips.push(s["spec"]["clusterIP"].as_str().unwrap().to_string());
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        existing.push(s);
    }
    assert_eq!(
        ips,
        [
            "10.96.0.2",
            "10.96.0.3",
            "10.96.0.4",
            "10.96.0.5",
            "10.96.0.6"
        ]
    );
    let mut full = svc("full", json!({}));
    let causes = a.allocate(&mut full, None, &existing).unwrap_err();
    assert!(causes[0].message.contains("range is full"));

    let mut taken = svc("t", json!({ "clusterIP": "10.96.0.2" }));
    assert!(
        a.allocate(&mut taken, None, &existing).unwrap_err()[0]
            .message
            .contains("already allocated")
    );
    let mut outside = svc("o", json!({ "clusterIP": "10.1.0.1" }));
    assert!(
        a.allocate(&mut outside, None, &[] as &[Value]).unwrap_err()[0]
            .message
            .contains("not in the valid range")
    );

    let old = existing[0].clone();
    let mut changed = old.clone();
    changed["spec"]["clusterIP"] = json!("10.96.0.6");
    assert!(
        a.allocate(&mut changed, Some(&old), &existing).unwrap_err()[0]
            .message
            .contains("may not change")
    );
    let mut headless = svc("h", json!({ "clusterIP": "None" }));
    a.allocate(&mut headless, None, &existing).unwrap();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
}

#[test]
fn node_ports_are_allocated_and_kept_on_update() {
    let a = ServiceAllocator::new("10.96.0.0/24".parse().unwrap());
    let mut s1 = svc(
        "a",
        json!({ "type": "NodePort", "ports": [ { "port": 80 }, { "port": 443 } ] }),
    );
    a.allocate(&mut s1, None, &[] as &[Value]).unwrap();
    let p1 = s1["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let p2 = s1["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&p1) && p1 != p2);
    let mut s2 = svc(
        "b",
        json!({ "type": "NodePort", "ports": [ { "port": 80, "nodePort": p1 } ] }),
    );
    let e = a
        .allocate(&mut s2, None, std::slice::from_ref(&s1))
        .unwrap_err();
    assert_eq!(e[0].field, "spec.ports[0].nodePort");
    let mut upd = s1.clone();
    upd["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    a.allocate(&mut upd, Some(&s1), std::slice::from_ref(&s1))
        .unwrap();
    assert_eq!(
        upd["spec"]["ports"][0]["nodePort"].as_u64(),
        Some(p1),
        "kept on update"
    );
    let mut bad = svc("c", json!({ "type": "Sideways" }));
    assert_eq!(
        a.allocate(&mut bad, None, &[] as &[Value]).unwrap_err()[0].field,
        "spec.type"
    );
}

fn pod(name: &str, ip: Option<&str>, ready: bool, port: u64) -> Value {
    let mut p = json!({
        "metadata": { "name": name, "namespace": "ns", "uid": name, "labels": { "app": "web" } },
        "spec": { "nodeName": "n1", "containers": [ { "name": "c", "ports": [ { "name": "http", "containerPort": port } ] } ] },
        "status": { "phase": "Running", "conditions": [ { "type": "Ready", "status": if ready { "True" } else { "False" } } ] }
    });
    if let Some(ip) = ip {
        p["status"]["podIP"] = json!(ip);
    }
    p
}

#[test]
fn slices_group_pods_by_resolved_named_port() {
    let service = json!({
        "metadata": { "name": "web", "uid": "svc" },
        "spec": { "selector": { "app": "web" }, "ports": [ { "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" } ] }
    });
    let mut terminating = pod("d", Some("10.0.0.4"), true, 8080);
    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let mut other_app = pod("e", Some("10.0.0.5"), true, 8080);
    other_app["metadata"]["labels"]["app"] = json!("db");
    let pods = [
        pod("a", Some("10.0.0.1"), true, 8080),
        pod("b", Some("10.0.0.2"), false, 9090),
        pod("c", None, true, 8080),
        terminating,
        other_app,
    ];
    let slices = desired_slices(&service, &pods);
    assert_eq!(slices.len(), 2, "two distinct resolved port sets");
    let by_port = |p: u64| slices.iter().find(|s| s["ports"][0]["port"] == p).unwrap();
    let s8080 = by_port(8080);
    let addrs: Vec<&str> = s8080["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        ["10.0.0.1", "10.0.0.4"],
        "no IP: skipped; other labels: skipped"
    );
    assert_eq!(
        s8080["endpoints"][1]["conditions"],
        json!({ "ready": false, "serving": true, "terminating": true })
    );
    assert_eq!(by_port(9090)["endpoints"][0]["conditions"]["ready"], false);
    assert_eq!(s8080["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
    assert_eq!(s8080["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(s8080["metadata"]["ownerReferences"][0]["uid"], "svc");

    let many: Vec<Value> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i}"),
                Some(&format!("10.1.{}.{}", i / 200, i % 200)),
                true,
                8080,
            )
        })
        .collect();
    let chunks = desired_slices(&service, &many);
    let sizes: Vec<usize> = chunks
        .iter()
        .map(|s| s["endpoints"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);

    let no_selector =
        json!({ "metadata": { "name": "x" }, "spec": { "ports": [ { "port": 80 } ] } });
    assert!(
        desired_slices(&no_selector, &many).is_empty(),
        "selector-less services are left to their owners"
    );
}
