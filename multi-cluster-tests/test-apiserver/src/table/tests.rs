use super::*;

#[test]
fn human_ages_match_kubectl() {
    for (secs, want) in [
        (5, "5s"),
        (119, "119s"),
        (185, "3m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ] {
        assert_eq!(human_age(secs), want, "{secs}");
    }
}

#[test]
fn pod_and_service_rows() {
    let reg = crate::registry::Registry::new();
    let pods = reg.get("", "v1", "pods").unwrap();
    let pod = json!({
        "metadata": { "name": "p", "creationTimestamp": "2020-01-01T00:00:00Z" },
        "spec": { "nodeName": "n1", "containers": [ {}, {} ] },
        "status": { "phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [ { "ready": true, "restartCount": 2 }, { "ready": false, "restartCount": 1 } ] }
    });
    let t = table(pods, &[pod], "7", IncludeObject::Metadata, true);
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "p",
            "1/2",
            "Running",
            "3",
            age(&t["rows"][0]["object"]),
            "10.0.0.1",
            "n1"
        ])
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 7);
    let svcs = reg.get("", "v1", "services").unwrap();
    let svc = json!({ "metadata": { "name": "s" }, "spec": { "type": "NodePort", "clusterIP": "10.96.0.2", "ports": [ { "port": 80, "nodePort": 30001, "protocol": "TCP" } ], "selector": { "app": "web" } } });
    let t = table(svcs, &[svc], "7", IncludeObject::None, false);
    assert_eq!(t["rows"][0]["cells"][4], "80:30001/TCP");
    assert_eq!(t["rows"][0]["cells"][6], "app=web");
    assert!(t["rows"][0].get("object").is_none());
    assert!(t["columnDefinitions"].as_array().unwrap().is_empty());
}
