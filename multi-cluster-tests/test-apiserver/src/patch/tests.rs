use serde_json::json;

use super::*;

#[test]
fn strategic_merge_merges_containers_by_name_and_deletes_nulls() {
    let mut pod = json!({
        "metadata": { "labels": { "a": "1", "b": "2" } },
        "spec": { "containers": [ { "name": "c1", "image": "x:1" }, { "name": "c2", "image": "y:1" } ] }
    });
    let patch = json!({
        "metadata": { "labels": { "b": null, "c": "3" } },
        "spec": { "containers": [ { "name": "c2", "image": "y:2" }, { "name": "c3", "image": "z" } ] }
    });
    strategic_merge(&mut pod, &patch, true);
    assert_eq!(pod["metadata"]["labels"], json!({ "a": "1", "c": "3" }));
    let images: Vec<_> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(images, ["x:1", "y:2", "z"]);
}

#[test]
fn strategic_merge_delete_directive_and_replace() {
    let mut svc = json!({ "spec": { "ports": [ { "port": 80 }, { "port": 443 } ], "selector": { "a": "b" } } });
    strategic_merge(
        &mut svc,
        &json!({ "spec": { "ports": [ { "port": 80, "$patch": "delete" } ], "selector": { "$patch": "replace", "x": "y" } } }),
        true,
    );
    assert_eq!(svc["spec"]["ports"], json!([ { "port": 443 } ]));
    assert_eq!(svc["spec"]["selector"], json!({ "x": "y" }));
}

#[test]
fn apply_removes_fields_dropped_by_the_same_manager() {
    let mut live = json!({ "data": { "a": "1", "b": "2", "other": "kept" } });
    let prev = json!({ "data": { "a": "1", "b": "2" } });
    let new = json!({ "data": { "a": "10" } });
    server_side_apply(&mut live, &new, Some(&prev));
    assert_eq!(live, json!({ "data": { "a": "10", "other": "kept" } }));
}
