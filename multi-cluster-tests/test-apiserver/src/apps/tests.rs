use serde_json::json;

use super::*;
use crate::intstr::int_or_percent;

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
