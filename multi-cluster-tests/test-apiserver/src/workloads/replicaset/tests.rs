use serde_json::json;

use super::*;

fn rs(replicas: i64, min_ready: i64) -> Value {
    json!({
        "metadata": {"name": "web-abc", "namespace": "shop", "uid": "rs-uid", "generation": 2},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    })
}

/// A pod: node ("" unscheduled), phase, ready since (unix seconds; None: not ready), created at.
fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Value {
    let ts = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut p = json!({
        "metadata": {"name": name, "creationTimestamp": ts(created),
            "labels": {"app": "web", "pod-template-hash": "abc"}},
        "spec": {"nodeName": node},
        "status": {"phase": phase},
    });
    if let Some(t) = ready_at {
        p["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": ts(t)}]);
    }
    p
}

const NOW: i64 = 1_000_000;

#[test]
fn creates_the_missing_and_deletes_the_surplus() {
    let running = |n: &str| pod(n, "n1", "Running", Some(NOW - 100), NOW - 200);
    let mut gone = running("gone");
    gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let finished = pod("done", "n1", "Succeeded", None, NOW - 300);
    for (want, pods, create, deleted) in [
        (3, vec![], 3, 0),
        (3, vec![running("a")], 2, 0),
        (1, vec![running("a"), running("b")], 0, 1),
        (0, vec![running("a"), running("b")], 0, 2),
        // Terminating and finished pods do not count.
        (2, vec![running("a"), gone.clone(), finished.clone()], 1, 0),
        (2, vec![running("a"), running("b")], 0, 0),
    ] {
        let refs: Vec<&Value> = pods.iter().collect();
        let p = plan(&rs(want, 0), &refs, NOW);
        assert_eq!((p.create, p.delete.len()), (create, deleted), "want {want}");
    }
}

#[test]
fn a_replicaset_being_deleted_creates_nothing() {
    let mut r = rs(3, 0);
    r["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let p = plan(&r, &[], NOW);
    assert_eq!((p.create, p.delete.len()), (0, 0));
}

#[test]
fn surplus_goes_unscheduled_then_pending_then_not_ready_then_newest() {
    let pods = [
        pod("ready-old", "n1", "Running", Some(NOW - 500), NOW - 900),
        pod("ready-new", "n1", "Running", Some(NOW - 10), NOW - 800),
        pod("not-ready", "n1", "Running", None, NOW - 700),
        pod("pending", "n1", "Pending", None, NOW - 600),
        pod("unscheduled", "", "Pending", None, NOW - 500),
    ];
    let mut refs: Vec<&Value> = pods.iter().collect();
    refs.reverse();
    deletion_order(&mut refs);
    let names: Vec<&str> = refs.iter().map(|p| name(p)).collect();
    assert_eq!(
        names,
        [
            "unscheduled",
            "pending",
            "not-ready",
            "ready-new",
            "ready-old"
        ]
    );
    let p = plan(&rs(3, 0), &pods.iter().collect::<Vec<_>>(), NOW);
    assert_eq!(p.delete, ["unscheduled", "pending"]);
}

#[test]
fn status_counts_ready_and_available_after_min_ready_seconds() {
    let pods = [
        pod("a", "n1", "Running", Some(NOW - 100), NOW - 200),
        pod("b", "n1", "Running", Some(NOW - 3), NOW - 200),
        pod("c", "n1", "Running", None, NOW - 200),
    ];
    let refs: Vec<&Value> = pods.iter().collect();
    for (min_ready, available, requeue) in [(0, 2, None), (10, 1, Some(7)), (200, 0, Some(100))] {
        let p = plan(&rs(3, min_ready), &refs, NOW);
        let st = p.status.expect("status changes");
        assert_eq!(
            (
                st["replicas"].as_i64(),
                st["readyReplicas"].as_i64(),
                st["availableReplicas"].as_i64().unwrap_or(0),
                st["observedGeneration"].as_i64()
            ),
            (Some(3), Some(2), available, Some(2)),
            "minReadySeconds {min_ready}"
        );
        assert_eq!(p.requeue, requeue.map(Duration::from_secs));
    }
    // The same status again is not written again.
    let mut r = rs(3, 0);
    r["status"] = plan(&r, &refs, NOW).status.unwrap();
    assert_eq!(plan(&r, &refs, NOW).status, None);
}

#[test]
fn a_new_pod_is_the_template_controlled_by_the_replicaset() {
    let p = new_pod(&rs(1, 0));
    assert_eq!(p["metadata"]["generateName"], "web-abc-");
    assert_eq!(p["metadata"]["namespace"], "shop");
    assert_eq!(p["metadata"]["labels"]["pod-template-hash"], "abc");
    assert_eq!(
        p["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-uid",
            "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(p["spec"]["containers"][0]["image"], "i");
}
