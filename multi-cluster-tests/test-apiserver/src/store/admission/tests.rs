use serde_json::{Value, json};

use super::check_update;
use crate::store::fixtures::{deployments, minimal, normalize};

#[test]
fn invalid_workloads_are_refused_with_the_field_at_fault() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 8] = [
        (|d| d["spec"]["replicas"] = json!(-1), "spec.replicas"),
        (
            |d| {
                d["spec"].as_object_mut().unwrap().remove("selector");
            },
            "spec.selector",
        ),
        (|d| d["spec"]["selector"] = json!({}), "spec.selector"),
        (
            |d| d["spec"]["template"]["metadata"]["labels"] = json!({"app": "db"}),
            "spec.template.metadata.labels",
        ),
        (
            |d| d["spec"]["template"]["spec"]["containers"] = json!([]),
            "spec.template.spec.containers",
        ),
        (
            |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(""),
            "spec.template.spec.containers[0].image",
        ),
        (
            |d| d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}}),
            "spec.strategy.rollingUpdate",
        ),
        (
            |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
            "spec.strategy.rollingUpdate.maxUnavailable",
        ),
    ];
    for (edit, field) in cases {
        let mut d = minimal();
        edit(&mut d);
        let e = normalize(&deployments(), &mut d).unwrap_err();
        assert_eq!(e.code, 422, "{field}: {}", e.message);
        assert_eq!(
            e.details.as_ref().unwrap()["causes"][0]["field"],
            json!(field),
            "{}",
            e.message
        );
    }
}

#[test]
fn the_selector_cannot_change() {
    let rt = deployments();
    let old = minimal();
    let mut new = minimal();
    new["spec"]["replicas"] = json!(4);
    assert!(check_update(&rt, &old, &new).is_ok());
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "x"}});
    let e = check_update(&rt, &old, &new).unwrap_err();
    assert!(e.message.contains("field is immutable"), "{}", e.message);
}
