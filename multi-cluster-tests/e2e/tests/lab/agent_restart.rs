//! A node-agent killed and started again under traffic: without encryption
//! no connection is lost; with encryption it keeps its key and the stream
//! recovers.

use std::time::Duration;

use mesh_e2e::Lab;
use mesh_testbed::Wait;

use super::encryption::wg_show_reads_every_peer_with_a_handshake;
use super::helpers::{T, eventually};
use super::node_agent::agent_get;
use super::requests::{pod_ip, reaches};

/// The cluster of node `c<c>-n<n>`.
fn cluster_of(node: &str) -> &str {
    node.split('-').next().expect("node c<c>-n<n>")
}

/// What the datapath of `node` holds: services and ipcache, as its agent
/// dumps them from the maps.
fn datapath_dump(lab: &Lab, node: &str) -> (Vec<String>, Vec<String>) {
    let sorted = |v: serde_json::Value| {
        let mut items: Vec<String> = v
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|e| e.to_string())
            .collect();
        items.sort();
        items
    };
    (
        sorted(agent_get(lab, cluster_of(node), node, "/v1/services")),
        sorted(agent_get(lab, cluster_of(node), node, "/v1/ipcache")),
    )
}

/// Kills c1-n1's node-agent (SIGKILL) and starts it again while pod
/// shop/`client` on that node keeps a TCP stream to c2's shop/`server` busy
/// and opens a new connection every 200 ms. Returns the stream's report; checks that
/// the maps converge to what they held before.
fn restart_agent_under_traffic(lab: &Lab, client: &str, server: &str) -> serde_json::Value {
    let target = format!("{}:8080", pod_ip(lab, "lab-c2", "shop", server));
    eventually(&format!("c1's {client} reaches c2's {server}"), || {
        reaches(lab, "c1", "shop", client, &target)
    });
    let before = datapath_dump(lab, "c1-n1");
    let stream = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", client),
                &mesh_e2e::bin("mesh-echo"),
                &["stream", &target, "--seconds", "12", "--every-ms", "200"],
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        lab.ok(&["kill", "c1-n1/node-agent"]);
        std::thread::sleep(Duration::from_millis(500));
        lab.ok(&["restart", "c1-n1/node-agent"]);
        stream.join().expect("stream thread")
    });
    let report: serde_json::Value = serde_json::from_slice(&stream.stdout).unwrap_or_else(|e| {
        panic!(
            "stream report: {e}: {}{}",
            String::from_utf8_lossy(&stream.stdout),
            String::from_utf8_lossy(&stream.stderr)
        )
    });
    eprintln!("stream across the agent restart: {report}");
    Wait::new("c1-n1's maps converging to what they held before the restart")
        .timeout(T)
        .interval(Duration::from_millis(500))
        .until_ok(|| {
            let after = datapath_dump(lab, "c1-n1");
            if after == before {
                Ok(())
            } else {
                Err(format!("before {before:?}\nafter {after:?}"))
            }
        });
    report
}

/// Without encryption the datapath lives in pinned maps and programs: the
/// established stream never breaks and every new connection succeeds.
pub(super) fn an_agent_restarted_under_traffic_loses_no_connection(lab: &Lab) {
    let r = restart_agent_under_traffic(lab, "client", "web-2");
    assert_eq!(r["broken"], false, "the established stream broke: {r}");
    assert_eq!(r["new_failures"], 0, "new connections failed: {r}");
    assert!(r["verified_bytes"].as_u64() > Some(0), "{r}");
}

/// With encryption the WireGuard device lives in the agent's process: a
/// killed agent takes it down. The restarted agent comes back with the same
/// key, its peers handshake again, the established stream recovers (TCP
/// retransmits) and nothing crosses the underlay in the clear meanwhile.
pub(super) fn an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers(lab: &Lab) {
    let key =
        |lab: &Lab| agent_get(lab, "c1", "c1-n1", "/v1/status")["encryption"]["public_key"].clone();
    let before = key(lab);
    assert!(before.is_string(), "c1-n1 has a WireGuard key: {before}");
    let mut report = serde_json::Value::Null;
    let plain = lab.capture("net 10.0.0.0/8", || {
        report = restart_agent_under_traffic(lab, "a", "b");
    });
    assert_eq!(
        report["broken"], false,
        "the established stream broke: {report}"
    );
    assert!(
        report["longest_stall_ms"].as_u64() < Some(10_000),
        "the stream recovered within 10 s: {report}"
    );
    assert_eq!(
        plain.packets, 0,
        "pod addresses appeared on the underlay during the restart"
    );
    assert_eq!(key(lab), before, "the key persisted across the restart");
    wg_show_reads_every_peer_with_a_handshake(lab);
}
