use serde_json::json;

use super::*;
use crate::registry::Registry;

fn deployments() -> ResourceType {
    Registry::new()
        .get("apps", "v1", "deployments")
        .cloned()
        .unwrap()
}

fn minimal() -> Value {
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "img"}]}},
        },
    })
}

#[test]
fn percentages_round_up_for_surge_and_down_for_unavailable() {
    for (v, total, up, want) in [
        (json!("25%"), 1, true, Ok(1)),
        (json!("25%"), 1, false, Ok(0)),
        (json!("25%"), 5, true, Ok(2)),
        (json!("25%"), 5, false, Ok(1)),
        (json!("100%"), 3, false, Ok(3)),
        (json!(2), 10, true, Ok(2)),
        (json!("0%"), 10, true, Ok(0)),
    ] {
        assert_eq!(int_or_percent(&v, total, up), want, "{v} of {total}");
    }
    for bad in [json!("25"), json!("x%"), json!(-1), json!(true)] {
        assert!(int_or_percent(&bad, 4, true).is_err(), "{bad}");
    }
}

#[test]
fn surge_and_unavailable_never_both_zero() {
    let mut d = minimal();
    for (replicas, surge, unavailable, want) in [
        (4, json!("25%"), json!("25%"), (1, 1)),
        (1, json!("25%"), json!("25%"), (1, 0)),
        (3, json!(0), json!(0), (0, 1)),
        (3, json!(5), json!(5), (5, 3)),
    ] {
        d["spec"]["replicas"] = json!(replicas);
        d["spec"]["strategy"] =
            json!({"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}});
        assert_eq!(surge_and_unavailable(&d), want, "{d}");
    }
}

#[test]
fn defaults_are_filled_as_the_real_server_fills_them() {
    let mut d = minimal();
    normalize(&deployments(), &mut d).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["containers"][0]["resources"], json!({}));
    // Defaulting twice changes nothing (no rollout from a re-apply).
    let again = d.clone();
    normalize(&deployments(), &mut d).unwrap();
    assert_eq!(d, again);
    // Recreate gets no rollingUpdate.
    let mut r = minimal();
    r["spec"]["strategy"] = json!({"type": "Recreate"});
    normalize(&deployments(), &mut r).unwrap();
    assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
}

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

#[test]
fn selectors_match_and_format_like_kube() {
    let sel = json!({"matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                             {"key": "canary", "operator": "DoesNotExist"}]});
    assert_eq!(format_selector(&sel), "app=web,tier in (a,b),!canary");
    let s = label_selector(&sel).unwrap();
    let pod = |labels: Value| json!({"metadata": {"labels": labels}});
    assert!(s.matches(&pod(json!({"app": "web", "tier": "a"}))));
    assert!(!s.matches(&pod(json!({"app": "web", "tier": "c"}))));
    assert!(!s.matches(&pod(json!({"app": "web", "tier": "a", "canary": "1"}))));
    assert!(
        label_selector(&json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}))
            .unwrap_err()
            .contains("Unsupported value")
    );
}

#[test]
fn scale_shows_spec_status_and_selector() {
    let mut d = minimal();
    d["metadata"]["resourceVersion"] = json!("7");
    d["spec"]["replicas"] = json!(3);
    d["status"] = json!({"replicas": 2});
    assert_eq!(
        scale_of(&d),
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "resourceVersion": "7"},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}})
    );
}
