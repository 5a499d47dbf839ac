use serde_json::json;

use super::*;

/// An Event as kube-rs' `Recorder` (and the mesh-apiserver) creates it.
fn recorder_event() -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": "web.17f3a", "namespace": "shop" },
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "action": "Export",
        "reason": "MeshworkInvalidConfig",
        "note": "service.meshwork.io/global: \"yes-please\" is not true or false",
        "type": "Warning",
        "reportingController": "mesh-apiserver",
        "reportingInstance": "mesh-apiserver-0",
        "regarding": { "apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "shop", "uid": "u-1" },
        "series": { "count": 2, "lastObservedTime": "2026-01-02T03:05:00.000000Z" },
    })
}

/// An Event as the kubelet (client-go's legacy recorder) creates it.
fn kubelet_event() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": "web-1.17f3b", "namespace": "shop" },
        "involvedObject": { "apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "shop", "fieldPath": "spec.containers{c}" },
        "reason": "Pulled",
        "message": "Container image \"echo:1\" already present on machine",
        "source": { "component": "kubelet", "host": "n1" },
        "firstTimestamp": "2026-01-02T03:04:05Z",
        "lastTimestamp": "2026-01-02T03:06:05Z",
        "count": 3,
        "type": "Normal",
    })
}

#[test]
fn events_v1_to_core_renames_and_writes_go_zero_values() {
    let core = events_v1_to_core(&recorder_event());
    assert_eq!(
        core,
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": "web.17f3a", "namespace": "shop" },
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "action": "Export",
            "reason": "MeshworkInvalidConfig",
            "message": "service.meshwork.io/global: \"yes-please\" is not true or false",
            "type": "Warning",
            "reportingComponent": "mesh-apiserver",
            "reportingInstance": "mesh-apiserver-0",
            "involvedObject": { "apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "shop", "uid": "u-1" },
            "series": { "count": 2, "lastObservedTime": "2026-01-02T03:05:00.000000Z" },
            // Not set through events.k8s.io: the zero values core/v1 writes.
            "source": {},
            "firstTimestamp": null,
            "lastTimestamp": null,
        })
    );
}

#[test]
fn core_to_events_v1_renames_and_writes_go_zero_values() {
    let ev = core_to_events_v1(&kubelet_event());
    assert_eq!(
        ev,
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": { "name": "web-1.17f3b", "namespace": "shop" },
            "regarding": { "apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "shop", "fieldPath": "spec.containers{c}" },
            "reason": "Pulled",
            "note": "Container image \"echo:1\" already present on machine",
            "deprecatedSource": { "component": "kubelet", "host": "n1" },
            "deprecatedFirstTimestamp": "2026-01-02T03:04:05Z",
            "deprecatedLastTimestamp": "2026-01-02T03:06:05Z",
            "deprecatedCount": 3,
            "type": "Normal",
            // eventTime has no omitempty in events.k8s.io/v1.
            "eventTime": null,
        })
    );
}

#[test]
fn both_directions_round_trip() {
    let ev = core_to_events_v1(&events_v1_to_core(&recorder_event()));
    let mut want = recorder_event();
    want["deprecatedSource"] = json!({});
    want["deprecatedFirstTimestamp"] = Value::Null;
    want["deprecatedLastTimestamp"] = Value::Null;
    assert_eq!(ev, want);
    let core = events_v1_to_core(&core_to_events_v1(&kubelet_event()));
    let mut want = kubelet_event();
    want["eventTime"] = Value::Null;
    want["reportingComponent"] = json!("");
    want["reportingInstance"] = json!("");
    assert_eq!(core, want);
}

#[test]
fn fields_of_the_other_schema_are_not_carried_over() {
    // `message` is not a field of events.k8s.io/v1: kube-apiserver drops it
    // when decoding, so it does not become the core message.
    let mut ev = recorder_event();
    ev["message"] = json!("stray");
    ev["involvedObject"] = json!({ "name": "other" });
    let core = events_v1_to_core(&ev);
    assert_eq!(core["message"], recorder_event()["note"]);
    assert_eq!(core["involvedObject"]["name"], "web");
    assert!(core.get("note").is_none() && core.get("regarding").is_none());
}

#[test]
fn omitempty_fields_with_zero_values_are_left_out() {
    let core = json!({
        "metadata": { "name": "e" },
        "count": 0,
        "message": "",
        "reportingComponent": "",
        "series": null,
    });
    let ev = core_to_events_v1(&core);
    for gone in ["deprecatedCount", "note", "reportingController", "series"] {
        assert!(ev.get(gone).is_none(), "{gone} in {ev}");
    }
    // ...but core/v1's reportingComponent has no omitempty.
    assert_eq!(events_v1_to_core(&ev)["reportingComponent"], "");
}

#[test]
fn core_source_field_selector_is_the_component() {
    let core = crate::registry::Registry::new()
        .get("", "v1", "events")
        .cloned()
        .unwrap();
    let events = crate::registry::Registry::new()
        .get("events.k8s.io", "v1", "events")
        .cloned()
        .unwrap();
    let sel = FieldSelector::parse("source=kubelet,involvedObject.kind=Pod").unwrap();
    assert!(core_field_selector(&core, sel.clone()).matches(&kubelet_event()));
    assert!(
        !sel.matches(&kubelet_event()),
        "the plain path is an object"
    );
    assert_eq!(core_field_selector(&events, sel.clone()), sel);
}
