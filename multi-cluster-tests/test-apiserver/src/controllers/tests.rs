use serde_json::json;

use super::*;

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
