use serde_json::json;

use super::*;

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
