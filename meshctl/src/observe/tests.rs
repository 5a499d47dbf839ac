use super::*;
use mesh_agent_api::flows::FlowPeer;

fn flow(node: &str, ms: u64, verdict: Verdict, reason: Option<&str>) -> FlowRecord {
    FlowRecord {
        time_unix_ms: ms,
        kernel_ns: ms * 1_000_000,
        node: node.into(),
        cluster: "c1".into(),
        verdict,
        drop_reason: reason.map(Into::into),
        observation: "from-pod".into(),
        protocol: "tcp".into(),
        source: FlowPeer {
            ip: Some("10.1.1.5".parse().unwrap()),
            port: 40000,
            identity: 65792,
            namespace: Some("shop".into()),
            pod: Some("client".into()),
            cluster: Some("c1".into()),
            node: Some(node.into()),
        },
        destination: FlowPeer {
            ip: Some("10.2.1.9".parse().unwrap()),
            port: 8080,
            identity: 131328,
            cluster: Some("c2".into()),
            ..FlowPeer::default()
        },
        service_id: None,
        rule_id: None,
    }
}

#[test]
fn merge_orders_by_time_across_agents_and_keeps_the_newest() {
    let flows = vec![
        flow("n2", 30, Verdict::Forwarded, None),
        flow("n1", 10, Verdict::Forwarded, None),
        flow("n1", 20, Verdict::Forwarded, None),
    ];
    let merged = merge(flows.clone(), None);
    assert_eq!(
        merged.iter().map(|f| f.time_unix_ms).collect::<Vec<_>>(),
        [10, 20, 30]
    );
    let last = merge(flows, Some(2));
    assert_eq!(
        last.iter().map(|f| f.time_unix_ms).collect::<Vec<_>>(),
        [20, 30]
    );
}

#[test]
fn rows_name_pods_clusters_and_drop_reasons() {
    let r = row(&flow(
        "c1-n1",
        3_723_004,
        Verdict::Dropped,
        Some("policy_default_deny"),
    ));
    assert_eq!(
        r,
        [
            "01:02:03.004",
            "c1-n1",
            "shop/client:40000 (c1)",
            "10.2.1.9:8080 (c2)",
            "tcp",
            "DROPPED policy_default_deny",
            "from-pod",
            "65792 → 131328",
        ]
    );
    let ok = row(&flow("c1-n1", 0, Verdict::Forwarded, None));
    assert_eq!(ok[5], "FORWARDED");
}

#[test]
fn the_filter_carries_every_flag_and_since_is_relative_to_now() {
    let args = ObserveArgs {
        context: "lab-c1".into(),
        pod_namespace: Some("shop".into()),
        pod: Some("shop/client".into()),
        identity: Some(7),
        verdict: Some(Verdict::Dropped),
        cluster: Some("c2".into()),
        since: Some(Duration::from_secs(60)),
        last: 5,
        follow: false,
    };
    let f = args.filter();
    let now = mesh_agent_api::flows::unix_ms(std::time::SystemTime::now());
    let since = f.since.unwrap();
    assert!(
        since <= now - 60_000 && since > now - 70_000,
        "{since} vs {now}"
    );
    assert_eq!(
        (
            f.namespace.as_deref(),
            f.pod.as_deref(),
            f.identity,
            f.verdict,
            f.cluster.as_deref(),
            f.last
        ),
        (
            Some("shop"),
            Some("shop/client"),
            Some(7),
            Some(Verdict::Dropped),
            Some("c2"),
            Some(5)
        )
    );
}

#[test]
fn partial_is_an_error_only_when_no_agent_answered() {
    let node = |n: &str| {
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some(n.into());
        Agent::of(&node)
    };
    let agents = vec![node("a"), node("b")];
    let problem = |n: &str| AgentProblem {
        node: n.into(),
        problem: "down".into(),
    };
    assert_eq!(partial(&agents, &[]).unwrap(), Outcome::Ok);
    assert_eq!(partial(&agents, &[problem("a")]).unwrap(), Outcome::Partial);
    assert!(partial(&agents, &[problem("a"), problem("b")]).is_err());
}

#[test]
fn unnamed_peers_are_named_from_pods_and_named_ones_are_kept() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "shop", "name": "web-2"},
        "status": {"podIP": "10.2.1.9"}
    }))
    .unwrap();
    let impostor: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "other", "name": "x"},
        "status": {"podIP": "10.1.1.5"}
    }))
    .unwrap();
    let mut flows = vec![flow("n1", 1, Verdict::Forwarded, None)];
    name_peers(&mut flows, &[pod, impostor]);
    assert_eq!(flows[0].destination.display_name(), "shop/web-2");
    assert_eq!(flows[0].source.display_name(), "shop/client");
}
