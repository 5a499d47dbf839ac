use serde_json::json;

use super::*;

fn node(name: &str, pods: usize) -> NodeInfo {
    NodeInfo::of(
        &json!({"metadata": {"name": name, "labels": {"zone": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        pods,
    )
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn the_node_with_the_fewest_pods_wins_ties_by_name() {
    let p = pod(json!({}));
    for (nodes, want) in [
        (vec![node("n1", 2), node("n2", 1)], "n2"),
        (vec![node("n2", 1), node("n1", 1)], "n1"),
        (vec![node("n1", 0)], "n1"),
    ] {
        assert_eq!(pick(&p, &nodes).unwrap(), want, "{nodes:?}");
    }
}

#[test]
fn a_batch_spreads_over_the_nodes() {
    let pods: Vec<Value> = (0..5).map(|_| pod(json!({}))).collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let mut nodes = vec![node("n1", 1), node("n2", 0)];
    let got: Vec<String> = assign(&refs, &mut nodes)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, ["n2", "n1", "n2", "n1", "n2"]);
    assert_eq!((nodes[0].pods, nodes[1].pods), (3, 3));
}

#[test]
fn nodes_that_cannot_take_the_pod_are_skipped_with_the_reason() {
    let mut not_ready = node("n1", 0);
    not_ready.ready = false;
    let mut cordoned = node("n2", 0);
    cordoned.cordoned = true;
    let mut tainted = node("n3", 0);
    tainted.taints = vec![("dedicated".into(), "db".into(), "NoSchedule".into())];
    let nodes = vec![not_ready, cordoned, tainted.clone(), node("n4", 9)];
    assert_eq!(pick(&pod(json!({})), &nodes).unwrap(), "n4");
    let none = pick(&pod(json!({"nodeSelector": {"zone": "b"}})), &nodes).unwrap_err();
    assert_eq!(
        none,
        // Each node counts under the first check it fails, as kube-scheduler's filters.
        "0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 node(s) were not ready, 1 node(s) were unschedulable."
    );
    assert_eq!(
        pick(&pod(json!({})), &[tainted.clone()]).unwrap_err(),
        "0/1 nodes are available: 1 node(s) had untolerated taint."
    );
    let tolerant = pod(
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
    );
    assert_eq!(pick(&tolerant, &[tainted.clone()]).unwrap(), "n3");
    let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
    assert_eq!(pick(&everything, &[tainted.clone()]).unwrap(), "n3");
    let wrong_value = pod(json!({"tolerations": [{"key": "dedicated", "value": "web"}]}));
    assert!(pick(&wrong_value, &[tainted]).is_err());
    assert_eq!(
        pick(&pod(json!({})), &[]).unwrap_err(),
        "no nodes available to schedule pods"
    );
}

#[test]
fn only_unbound_active_pods_of_the_default_scheduler_are_scheduled() {
    assert!(unbound(&pod(json!({}))));
    assert!(unbound(&pod(json!({"nodeName": ""}))));
    assert!(!unbound(&pod(json!({"nodeName": "n1"}))));
    assert!(!unbound(&pod(json!({"schedulerName": "other"}))));
    let mut gone = pod(json!({}));
    gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(!unbound(&gone));
}
