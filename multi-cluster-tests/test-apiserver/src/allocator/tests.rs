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

#[test]
fn a_local_load_balancer_gets_a_health_check_node_port_kept_on_update() {
    let a = ServiceAllocator::new("10.96.0.0/24".parse().unwrap());
    let mut s = svc(
        "lb",
        json!({ "type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [ { "port": 80 } ] }),
    );
    a.allocate(&mut s, None, &[] as &[Value]).unwrap();
    let np = s["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let hc = s["spec"]["healthCheckNodePort"]
        .as_u64()
        .expect("allocated");
    assert!((30000..=32767).contains(&hc) && hc != np);
    let mut upd = s.clone();
    upd["spec"]
        .as_object_mut()
        .unwrap()
        .remove("healthCheckNodePort");
    a.allocate(&mut upd, Some(&s), std::slice::from_ref(&s))
        .unwrap();
    assert_eq!(
        upd["spec"]["healthCheckNodePort"].as_u64(),
        Some(hc),
        "kept"
    );
    // Another Service cannot take it as a node port.
    let mut other = svc(
        "np",
        json!({ "type": "NodePort", "ports": [ { "port": 80, "nodePort": hc } ] }),
    );
    assert!(
        a.allocate(&mut other, None, std::slice::from_ref(&s))
            .is_err()
    );
    // Back to Cluster: the port goes.
    let mut cluster = s.clone();
    cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    a.allocate(&mut cluster, Some(&s), std::slice::from_ref(&s))
        .unwrap();
    assert!(cluster["spec"].get("healthCheckNodePort").is_none());
}
