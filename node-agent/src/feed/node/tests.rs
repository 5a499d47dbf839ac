use super::*;

#[test]
fn own_node_reads_cidrs_internal_ips_and_key() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "annotations": {"network.meshwork.io/wg-pub-key": "k"}},
        "spec": {"podCIDR": "10.1.1.0/24"},
        "status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "192.168.0.1"}
        ]}
    }))
    .unwrap();
    let own = own_node(&node);
    assert_eq!(own.pod_cidrs, vec!["10.1.1.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(
        own.internal_ips,
        vec!["192.168.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(own.wireguard_key.as_deref(), Some("k"));
}

#[test]
fn pod_cidrs_list_wins_and_garbage_is_skipped() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.1.1.0/24", "podCIDRs": ["10.1.1.0/24", "nonsense"]},
    }))
    .unwrap();
    let own = own_node(&node);
    assert_eq!(own.pod_cidrs, vec!["10.1.1.0/24".parse::<IpNet>().unwrap()]);
    assert!(own.internal_ips.is_empty());
}

#[test]
fn key_patch_touches_only_the_annotation() {
    let key: WireGuardKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        .parse()
        .unwrap();
    assert_eq!(
        key_patch(&key),
        serde_json::json!({"metadata": {"annotations": {
            "network.meshwork.io/wg-pub-key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        }}})
    );
}

#[test]
fn agent_api_annotation_is_an_absolute_unix_url_and_patches_only_itself() {
    assert_eq!(
        agent_api_value(std::path::Path::new("/var/run/meshwork/agent.sock")),
        "unix:///var/run/meshwork/agent.sock"
    );
    let rel = agent_api_value(std::path::Path::new("run/agent.sock"));
    assert!(
        rel.starts_with("unix:///") && rel.ends_with("/run/agent.sock"),
        "{rel}"
    );
    assert_eq!(
        annotations_patch(&[(AGENT_API_ANNOTATION, "unix:///a.sock".into())]),
        serde_json::json!({"metadata": {"annotations": {
            "network.meshwork.io/agent-api": "unix:///a.sock"
        }}})
    );
}
