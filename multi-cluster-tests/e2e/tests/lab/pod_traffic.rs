//! Pod to pod without NAT, and in the clear on the underlay when encryption
//! is off (the control for the encrypted lab's wire check).

use mesh_e2e::Lab;

use super::requests::pod_ip;

/// Without encryption, pod traffic crosses the underlay as it is: this is the
/// control that shows the encrypted scenario's wire check can fail.
pub(super) fn pod_traffic_crosses_clusters_in_the_clear_without_encryption(lab: &Lab) {
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=client",
        "--label=app=client",
    ]);
    let client_ip = pod_ip(lab, "lab-c1", "shop", "client");
    let web = pod_ip(lab, "lab-c2", "shop", "web-2");
    let mut answers = vec![];
    let cap = lab.capture("net 10.0.0.0/8", || {
        answers = lab.ask("c1", "shop", "client", &format!("{web}:8080"), 3)
    });
    for a in &answers {
        assert_eq!(
            (a["cluster"].as_str(), a["pod"].as_str()),
            (Some("c2"), Some("shop/web-2")),
            "{a}"
        );
        assert_eq!(
            a["peer"].as_str(),
            Some(client_ip.as_str()),
            "the backend sees the client's pod IP (no NAT)"
        );
    }
    assert!(
        cap.packets > 0 && cap.contains("cluster=c2"),
        "without encryption the greeting is visible on the underlay ({} packets)",
        cap.packets
    );
}

/// Pod to pod without NAT: on the same node, across nodes of one cluster,
/// across clusters; each backend sees the client's own address.
pub(super) fn pod_to_pod_on_the_same_node_across_nodes_and_across_clusters(lab: &Lab) {
    for (node, name) in [("c1-n1", "peer-same"), ("c1-n2", "peer-other")] {
        lab.ok(&[
            "pod",
            "add",
            "--cluster=c1",
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
            "--label=app=peer",
        ]);
    }
    let client = pod_ip(lab, "lab-c1", "shop", "client");
    for (ctx, name, cluster, node) in [
        ("lab-c1", "peer-same", "c1", "c1-n1"),
        ("lab-c1", "peer-other", "c1", "c1-n2"),
        ("lab-c2", "web-2", "c2", "c2-n2"),
    ] {
        let addr = format!("{}:8080", pod_ip(lab, ctx, "shop", name));
        for a in lab.ask("c1", "shop", "client", &addr, 2) {
            assert_eq!(
                (
                    a["cluster"].as_str(),
                    a["node"].as_str(),
                    a["pod"].as_str(),
                    a["peer"].as_str()
                ),
                (
                    Some(cluster),
                    Some(node),
                    Some(format!("shop/{name}").as_str()),
                    Some(client.as_str())
                ),
                "client (c1-n1) → {name}"
            );
        }
    }
}
