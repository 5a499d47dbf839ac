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

#[test]
fn event_rows_are_the_same_through_both_apis() {
    let reg = crate::registry::Registry::new();
    let core = reg.get("", "v1", "events").unwrap();
    let events = reg.get("events.k8s.io", "v1", "events").unwrap();
    // As kube-rs' Recorder writes it: eventTime and a series, no legacy times.
    let recorded = json!({
        "metadata": { "name": "web.1" },
        "eventTime": "2020-01-01T00:00:00.000001Z",
        "series": { "count": 4, "lastObservedTime": "2020-01-02T00:00:00.000001Z" },
        "reason": "MeshworkInvalidConfig", "type": "Warning", "note": " bad annotation\n",
        "regarding": { "kind": "Service", "name": "web" },
        "reportingController": "mesh-apiserver", "reportingInstance": "m-0",
    });
    let through_events = table(
        events,
        std::slice::from_ref(&recorded),
        "1",
        IncludeObject::None,
        true,
    );
    let stored = crate::store::events::events_v1_to_core(&recorded);
    let through_core = table(core, &[stored], "1", IncludeObject::None, true);
    assert_eq!(through_events, through_core);
    let cells = &through_core["rows"][0]["cells"];
    let first = since(Some("2020-01-01T00:00:00.000001Z"));
    let last = since(Some("2020-01-02T00:00:00.000001Z"));
    assert_eq!(
        cells,
        &json!([
            last,
            "Warning",
            "MeshworkInvalidConfig",
            "service/web",
            "",
            "mesh-apiserver, m-0",
            "bad annotation",
            first,
            4,
            "web.1"
        ])
    );
    assert_eq!(through_core["columnDefinitions"][0]["name"], "Last Seen");

    // A legacy singleton: its own times, count 1 when unset, source first.
    let legacy = json!({
        "metadata": { "name": "p.2" },
        "involvedObject": { "kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}" },
        "firstTimestamp": "2020-01-01T00:00:00Z", "lastTimestamp": null,
        "source": { "component": "kubelet", "host": "n1" }, "reportingComponent": "",
    });
    let cells = &table(core, &[legacy], "1", IncludeObject::None, true)["rows"][0]["cells"];
    let first = since(Some("2020-01-01T00:00:00Z"));
    assert_eq!(cells[0], json!(first), "last seen falls back to first seen");
    assert_eq!(cells[4], "spec.containers{c}");
    assert_eq!(cells[5], "kubelet, n1");
    assert_eq!(cells[8], 1);
    assert_eq!(since(None), "<unknown>");
}
