use serde_json::json;

use super::*;

fn pod(labels: serde_json::Value) -> serde_json::Value {
    json!({ "metadata": { "name": "p", "namespace": "ns", "labels": labels }, "spec": { "nodeName": "n1" } })
}

#[test]
fn label_selector_operators() {
    let obj = pod(json!({ "app": "web", "tier": "front" }));
    let cases = [
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("app in (db, web)", true),
        ("app notin (web)", false),
        ("missing notin (web)", true),
        ("tier", true),
        ("!tier", false),
        ("!missing", true),
        ("app=web,tier in (front,back),!gone", true),
        ("app=web,tier=back", false),
    ];
    for (sel, want) in cases {
        let s = LabelSelector::parse(sel).unwrap();
        assert_eq!(s.matches(&obj), want, "{sel}");
    }
}

#[test]
fn label_selector_rejects_garbage() {
    assert!(LabelSelector::parse("app in web").is_err());
    assert!(LabelSelector::parse("a b c").is_err());
}

#[test]
fn field_selector_paths() {
    let obj = pod(json!({}));
    for (sel, want) in [
        ("metadata.name=p", true),
        ("metadata.namespace=ns,spec.nodeName=n1", true),
        ("spec.nodeName!=n1", false),
        ("spec.nodeName=", false),
        ("status.phase=", true),
    ] {
        let s = FieldSelector::parse(sel).unwrap();
        assert_eq!(s.matches(&obj), want, "{sel}");
    }
    assert!(FieldSelector::parse("nonsense").is_err());
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
