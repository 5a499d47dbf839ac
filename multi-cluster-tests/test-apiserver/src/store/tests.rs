use serde_json::json;

use super::*;
use crate::allocator::ServiceAllocator;

fn store(history: usize) -> Arc<Store> {
    Store::new(StoreConfig {
        history,
        services: ServiceAllocator::new("10.96.0.0/24".parse().unwrap()),
    })
}

fn rt(s: &Store, group: &str, plural: &str) -> ResourceType {
    s.registry().get(group, "v1", plural).cloned().unwrap()
}

fn cm(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name } })
}

#[test]
fn create_fills_server_fields_and_generate_name() {
    let s = store(100);
    let cms = rt(&s, "", "configmaps");
    let obj = s
        .create(&cms, "default", json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "generateName": "cfg-" } }))
        .unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let rv1: u64 = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let other = s.create(&cms, "default", cm("b")).unwrap();
    let rv2: u64 = other["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rv2, rv1 + 1, "one global counter");
    assert_eq!(s.revision(), rv2);
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let s = store(100);
    let cms = rt(&s, "", "configmaps");
    let mut obj = cm("held");
    obj["metadata"]["finalizers"] = json!(["meshwork.io/test"]);
    s.create(&cms, "default", obj).unwrap();
    let marked = s.delete(&cms, "default", "held", None).unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert!(
        s.get(&cms, "default", "held").is_ok(),
        "still there while finalized"
    );
    let mut cur = s.get(&cms, "default", "held").unwrap();
    cur["metadata"]["finalizers"] = json!([]);
    let mut events = s.subscribe();
    s.update(&cms, "default", "held", cur, false).unwrap();
    assert_eq!(s.get(&cms, "default", "held").unwrap_err().code, 404);
    assert_eq!(events.try_recv().unwrap().kind, EventType::Deleted);
}

#[test]
fn namespace_deletion_removes_content_and_waits_for_finalizers() {
    let s = store(100);
    let nss = rt(&s, "", "namespaces");
    let cms = rt(&s, "", "configmaps");
    s.create(
        &nss,
        "",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "x" } }),
    )
    .unwrap();
    s.create(&cms, "x", cm("plain")).unwrap();
    let mut held = cm("held");
    held["metadata"]["finalizers"] = json!(["f"]);
    s.create(&cms, "x", held).unwrap();
    let ns = s.delete(&nss, "", "x", None).unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert_eq!(s.get(&cms, "x", "plain").unwrap_err().code, 404);
    assert!(s.get(&cms, "x", "held").unwrap()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(s.create(&cms, "x", cm("new")).unwrap_err().code, 403);
    let mut cur = s.get(&cms, "x", "held").unwrap();
    cur["metadata"]["finalizers"] = json!([]);
    s.update(&cms, "x", "held", cur, false).unwrap();
    assert_eq!(
        s.get(&nss, "", "x").unwrap_err().code,
        404,
        "namespace goes with its last object"
    );
}

#[test]
fn watch_from_before_the_history_is_gone_and_within_it_replays() {
    let s = store(3);
    let cms = rt(&s, "", "configmaps");
    let start = s.revision();
    for i in 0..5 {
        s.create(&cms, "default", cm(&format!("c{i}"))).unwrap();
    }
    let err = s.watch(&cms, Some(&start.to_string()), false).unwrap_err();
    assert_eq!((err.code, err.reason), (410, "Gone"));
    let recent = (s.revision() - 2).to_string();
    let w = s.watch(&cms, Some(&recent), false).unwrap();
    assert_eq!(w.backlog.len(), 2);
    assert!(w.initial.is_empty());
    let w = s.watch(&cms, None, false).unwrap();
    assert_eq!(
        w.initial.len(),
        5,
        "no resourceVersion: current state as ADDED"
    );
    assert_eq!(s.watch(&cms, Some("abc"), false).unwrap_err().code, 400);
}

#[test]
fn continue_token_pages_and_expires() {
    let s = store(2);
    let cms = rt(&s, "", "configmaps");
    for i in 0..3 {
        s.create(&cms, "default", cm(&format!("c{i}"))).unwrap();
    }
    let opts = ListOptions {
        limit: 2,
        ..Default::default()
    };
    let page = s.list(&cms, Some("default"), &opts).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let next = ListOptions {
        limit: 2,
        continue_token: Some(token.clone()),
        ..Default::default()
    };
    let rest = s.list(&cms, Some("default"), &next).unwrap();
    assert_eq!(rest["items"][0]["metadata"]["name"], "c2");
    assert!(rest["metadata"].get("continue").is_none());
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );
    for i in 3..6 {
        s.create(&cms, "default", cm(&format!("c{i}"))).unwrap();
    }
    let err = s.list(&cms, Some("default"), &next).unwrap_err();
    assert_eq!((err.code, err.reason), (410, "Expired"));
}

#[test]
fn status_subresource_separates_spec_and_status() {
    let s = store(100);
    let pods = rt(&s, "", "pods");
    let p = s
        .create(&pods, "default", json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": { "containers": [] }, "status": { "phase": "Running", "podIP": "10.0.0.1" } }))
        .unwrap();
    assert_eq!(
        p["status"]["phase"], "Pending",
        "status in a create is the kubelet's to set"
    );
    assert!(p["status"].get("podIP").is_none());
    let mut upd = p.clone();
    upd["status"]["phase"] = json!("Running");
    upd["spec"]["nodeName"] = json!("n1");
    let out = s.update(&pods, "default", "p", upd.clone(), false).unwrap();
    assert_eq!(
        out["status"]["phase"], "Pending",
        "status ignored on the main resource"
    );
    assert_eq!(out["spec"]["nodeName"], "n1");
    assert_eq!(out["metadata"]["generation"], 2);
    upd["metadata"]["resourceVersion"] = out["metadata"]["resourceVersion"].clone();
    upd["spec"]["nodeName"] = json!("n2");
    let out = s.update(&pods, "default", "p", upd, true).unwrap();
    assert_eq!(out["status"]["phase"], "Running");
    assert_eq!(out["spec"]["nodeName"], "n1", "spec ignored on /status");
}

#[test]
fn watch_filter_turns_selector_changes_into_added_and_deleted() {
    let s = store(100);
    let cms = rt(&s, "", "configmaps");
    let mut a = cm("a");
    a["metadata"]["labels"] = json!({ "app": "web" });
    let created = s.create(&cms, "default", a).unwrap();
    let mut events = s.subscribe();
    let mut changed = created.clone();
    changed["metadata"]["labels"] = json!({ "app": "db" });
    s.update(&cms, "default", "a", changed, false).unwrap();
    let ev = events.try_recv().unwrap();
    let web = LabelSelector::parse("app=web").unwrap();
    let db = LabelSelector::parse("app=db").unwrap();
    let none = FieldSelector::default();
    assert_eq!(
        Store::filter_event(&ev, &cms, None, &web, &none).unwrap().0,
        EventType::Deleted
    );
    assert_eq!(
        Store::filter_event(&ev, &cms, None, &db, &none).unwrap().0,
        EventType::Added
    );
    assert!(Store::filter_event(&ev, &cms, Some("other"), &db, &none).is_none());
}

#[test]
fn secret_string_data_is_stored_as_base64_data() {
    let s = store(100);
    let secrets = rt(&s, "", "secrets");
    let created = s
        .create(
            &secrets,
            "default",
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "x" },
            "data": { "a": "YQ==" }, "stringData": { "b": "hunter2" } }),
        )
        .unwrap();
    assert_eq!(created["data"], json!({ "a": "YQ==", "b": "aHVudGVyMg==" }));
    assert!(created.get("stringData").is_none());
    assert_eq!(created["type"], "Opaque");
    let patched = s
        .patch(
            &secrets,
            "default",
            "x",
            "application/merge-patch+json",
            br#"{"stringData":{"a":"new"}}"#,
            false,
            None,
        )
        .unwrap();
    assert_eq!(patched["data"]["a"], "bmV3");
    let err = s
        .patch(
            &secrets,
            "default",
            "x",
            "application/merge-patch+json",
            br#"{"stringData":{"a":1}}"#,
            false,
            None,
        )
        .unwrap_err();
    assert_eq!(err.code, 422);
}

#[test]
fn namespaces_carry_their_name_label() {
    let s = store(100);
    let nss = rt(&s, "", "namespaces");
    let ns = s
        .create(&nss, "", json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "team-a", "labels": { "x": "y" } } }))
        .unwrap();
    assert_eq!(
        ns["metadata"]["labels"],
        json!({ "x": "y", "kubernetes.io/metadata.name": "team-a" })
    );
    let sel = LabelSelector::parse("kubernetes.io/metadata.name=default").unwrap();
    let listed = s
        .list(
            &nss,
            None,
            &ListOptions {
                labels: sel,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[test]
fn a_body_without_api_version_and_kind_gets_the_urls() {
    let s = store(100);
    let cms = rt(&s, "", "configmaps");
    let obj = s
        .create(
            &cms,
            "default",
            json!({ "metadata": { "name": "bare" }, "data": { "a": "b" } }),
        )
        .unwrap();
    assert_eq!(
        (obj["apiVersion"].as_str(), obj["kind"].as_str()),
        (Some("v1"), Some("ConfigMap"))
    );
    // Each defaults on its own, as kube-apiserver's decoder does.
    let only_kind = s
        .update(
            &cms,
            "default",
            "bare",
            json!({ "kind": "ConfigMap", "metadata": { "name": "bare" }, "data": { "a": "c" } }),
            false,
        )
        .unwrap();
    assert_eq!(only_kind["data"]["a"], "c");
    // A body that contradicts the URL is refused, kind first.
    let e = s
        .create(
            &cms,
            "default",
            json!({ "kind": "Secret", "metadata": { "name": "x" } }),
        )
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message
            .starts_with("Secret in version \"v1\" cannot be handled as a ConfigMap"),
        "{}",
        e.message
    );
    let e = s
        .create(
            &cms,
            "default",
            json!({ "apiVersion": "apps/v1", "metadata": { "name": "x" } }),
        )
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "the API version in the data (apps/v1) does not match the expected API version (v1)"
        )
    );
}

#[test]
fn core_and_events_k8s_io_events_are_one_store() {
    let s = store(100);
    let core = rt(&s, "", "events");
    let events = rt(&s, "events.k8s.io", "events");
    let written = s
        .create(&events, "default", json!({
            "metadata": { "name": "web.1" },
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "MeshworkInvalidConfig", "note": "bad", "type": "Warning",
            "regarding": { "kind": "Service", "name": "web", "namespace": "default", "uid": "u1" },
            "reportingController": "mesh-apiserver", "reportingInstance": "m", "action": "Export",
        }))
        .unwrap();
    assert_eq!(written["apiVersion"], "events.k8s.io/v1");
    assert_eq!(written["note"], "bad");
    let read = s.get(&core, "default", "web.1").unwrap();
    assert_eq!(read["apiVersion"], "v1");
    assert_eq!(
        (
            read["message"].as_str(),
            read["involvedObject"]["name"].as_str()
        ),
        (Some("bad"), Some("web"))
    );
    assert_eq!(
        read["metadata"]["resourceVersion"],
        written["metadata"]["resourceVersion"]
    );
    // kubectl describe's selector on the core list; the events.k8s.io spelling on its list.
    let describe = ListOptions {
        fields: FieldSelector::parse("involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Service,involvedObject.uid=u1").unwrap(),
        ..Default::default()
    };
    assert_eq!(
        s.list(&core, Some("default"), &describe).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let regarding = ListOptions {
        fields: FieldSelector::parse("regarding.name=web,reportingController=mesh-apiserver")
            .unwrap(),
        ..Default::default()
    };
    let listed = s.list(&events, Some("default"), &regarding).unwrap();
    assert_eq!(listed["items"][0]["note"], "bad");
    assert_eq!(listed["kind"], "EventList");
    assert_eq!(listed["apiVersion"], "events.k8s.io/v1");

    // A write through core is seen through events.k8s.io, watches included.
    let mut live = s
        .watch(&events, Some(&s.revision().to_string()), false)
        .unwrap();
    let mut patch_body = read.clone();
    patch_body["message"] = json!("worse");
    s.update(&core, "default", "web.1", patch_body, false)
        .unwrap();
    let ev = live.live.try_recv().unwrap();
    let (kind, obj) = Store::filter_event(
        &ev,
        &events,
        Some("default"),
        &LabelSelector::default(),
        &FieldSelector::default(),
    )
    .unwrap();
    assert_eq!(
        (kind, obj["note"].as_str()),
        (EventType::Modified, Some("worse"))
    );
    assert_eq!(obj["regarding"]["uid"], "u1");
    // A merge patch in the events.k8s.io schema.
    let out = s
        .patch(
            &events,
            "default",
            "web.1",
            "application/merge-patch+json",
            br#"{"series":{"count":2,"lastObservedTime":"2026-01-01T00:01:00.000000Z"}}"#,
            false,
            None,
        )
        .unwrap();
    assert_eq!(out["series"]["count"], 2);
    assert_eq!(
        s.get(&core, "default", "web.1").unwrap()["series"]["count"],
        2
    );
    s.delete(&core, "default", "web.1", None).unwrap();
    assert_eq!(s.get(&events, "default", "web.1").unwrap_err().code, 404);
}
