//! Egress: pod traffic leaving the cluster network is masqueraded to its
//! node's address in eBPF; traffic to pods (any cluster) and nodes keeps
//! the pod's own address.

use std::time::{Duration, Instant};

use mesh_e2e::Lab;

use super::node_agent::agent_get;
use super::requests::pod_ip;
use super::services::node_address;

const NODE: &str = "c1-n2";

/// A pod reaches the lab's outside host (in no cluster) and the echo
/// server there sees the pod's node; a pod in another cluster sees the pod
/// itself; the agent reports masquerade active with that address.
pub(super) fn a_pod_reaches_the_outside_host_as_its_node_and_other_clusters_pods_as_itself(
    lab: &Lab,
) {
    let pods = [("c1", NODE, "egress"), ("c2", "c2-n1", "egress-peer")];
    for (cluster, node, name) in pods {
        lab.ok(&[
            "pod",
            "add",
            &format!("--cluster={cluster}"),
            &format!("--node={node}"),
            "--namespace=egress",
            &format!("--name={name}"),
            &format!("--label=app={name}"),
        ]);
    }
    let me = pod_ip(lab, "lab-c1", "egress", "egress");
    let node_ip = node_address(lab, "lab-c1", NODE);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = agent_get(lab, "c1", NODE, "/v1/status")["routing"]["masquerade"].clone();
        if m["active"] == true {
            assert_eq!(m["node_ip"], node_ip.as_str(), "{m}");
            assert!(m["exempt"].as_array().is_some_and(|e| !e.is_empty()), "{m}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "masquerade not active on {NODE}: {m}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let status: serde_json::Value =
        serde_json::from_str(&lab.ok(&["status", "--json"])).expect("status JSON");
    let outside = format!(
        "{}:{}",
        status["external"]["ip"].as_str().expect("external.ip"),
        status["external"]["echo_port"]
    );
    for a in lab.ask("c1", "egress", "egress", &outside, 3) {
        assert_eq!(
            (a["pod"].as_str(), a["peer"].as_str()),
            (Some("outside/echo"), Some(node_ip.as_str())),
            "the outside host sees the pod's node"
        );
    }
    let peer = format!("{}:8080", pod_ip(lab, "lab-c2", "egress", "egress-peer"));
    for a in lab.ask("c1", "egress", "egress", &peer, 2) {
        assert_eq!(
            (a["cluster"].as_str(), a["peer"].as_str()),
            (Some("c2"), Some(me.as_str())),
            "a pod in another cluster sees the pod itself"
        );
    }
    for (cluster, node, name) in pods {
        lab.ok(&[
            "pod",
            "del",
            &format!("--cluster={cluster}"),
            &format!("--node={node}"),
            "--namespace=egress",
            &format!("--name={name}"),
        ]);
    }
}
