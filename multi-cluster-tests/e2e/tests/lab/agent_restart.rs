//! A node-agent killed and started again under traffic: no connection is
//! lost, with or without encryption (the WireGuard device runs in its own
//! process, which the restarted agent attaches to).

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
    // What the maps hold once they are settled: the agent's mesh feed is
    // connected (after an earlier scenario restarted the mesh-apiserver it
    // may still be backing off, holding a state that stops changing without
    // being complete), and two looks 2 s apart agree.
    eventually("c1-n1's mesh feed is connected and synced", || {
        let feed = &agent_get(lab, "c1", "c1-n1", "/v1/status")["mesh_feed"];
        feed["connected"] == true && feed["synced"] == true
    });
    let mut before = datapath_dump(lab, "c1-n1");
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(2));
        let again = datapath_dump(lab, "c1-n1");
        if again == before {
            break;
        }
        before = again;
    }
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

/// With encryption the WireGuard device lives in its own process: the
/// killed agent leaves it running, the restarted one attaches to it (same
/// pid, same key, counters continued), and the stream and every new
/// connection keep going, with nothing in clear on the underlay.
pub(super) fn an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers(lab: &Lab) {
    let device = |lab: &Lab| agent_get(lab, "c1", "c1-n1", "/v1/status")["encryption"].clone();
    let before = device(lab);
    assert!(
        before["public_key"].is_string(),
        "c1-n1 has a WireGuard key: {before}"
    );
    assert!(
        before["device_pid"].is_u64(),
        "the device process is reported: {before}"
    );
    let mut report = serde_json::Value::Null;
    let plain = lab.capture("net 10.0.0.0/8", || {
        report = restart_agent_under_traffic(lab, "a", "b");
    });
    let after = device(lab);
    eprintln!(
        "encrypted stream across a SIGKILLed agent: longest stall {} ms (goal <= 50 ms; an agent-embedded device stalled 631-883 ms)",
        report["longest_stall_ms"]
    );
    assert_eq!(
        report["broken"], false,
        "the established stream broke: {report}"
    );
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    assert_eq!(
        plain.packets, 0,
        "pod addresses appeared on the underlay during the restart"
    );
    assert_eq!(
        after["device_pid"], before["device_pid"],
        "the device process survived the agent"
    );
    assert_eq!(
        after["public_key"], before["public_key"],
        "the key persisted across the restart"
    );
    wg_show_reads_every_peer_with_a_handshake(lab);
}
