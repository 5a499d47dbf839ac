//! Encryption changed at runtime: strict mode, encryption off and on again,
//! and key rotation (through the agent API and through meshctl) under
//! traffic.

use std::time::Duration;

use mesh_e2e::Lab;

use super::helpers::{connect, eventually, meshctl_typed, meshctl_until, set_meshwork_config};
use super::node_agent::{agent_get, agent_metric, agent_request, wait_agent};
use super::requests::{answered, pod_ip, reaches, wait_answered};

/// Strict mode on in c1 (ConfigMap edit, applied at runtime); c2-n2's key
/// annotation removed, so c1's nodes lose their peer for it and fall back
/// to a native route: the datapath drops the pod's requests to c2-n2's pod
/// (counted as encryption_required), nothing with a pod address reaches
/// the underlay. The key back: answered again through the tunnel.
pub(super) fn strict_mode_drops_what_would_leave_unencrypted(lab: &Lab) {
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=strict-a",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n2",
        "--namespace=shop",
        "--name=strict-b",
    ]);
    let b = pod_ip(lab, "lab-c2", "shop", "strict-b");
    wait_answered(
        lab,
        "strict-a",
        &b,
        "strict-a → strict-b before strict mode",
    );
    set_meshwork_config(lab, "c1", "encryption-strict-mode", "true");
    wait_agent(lab, "c1", "c1-n1", "strict mode on", |s| {
        s["routing"]["strict_mode"] == true
    });
    let key = lab.kubectl(
        "lab-c2",
        &[
            "get",
            "node",
            "c2-n2",
            "-o",
            "jsonpath={.metadata.annotations.network\\.meshwork\\.io/wg-pub-key}",
        ],
    );
    assert!(!key.is_empty(), "c2-n2 has no published key");
    lab.kubectl(
        "lab-c2",
        &[
            "annotate",
            "node",
            "c2-n2",
            "network.meshwork.io/wg-pub-key-",
        ],
    );
    wait_agent(lab, "c1", "c1-n1", "peer for c2-n2 removed", |s| {
        s["encryption"]["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && !p.iter().any(|p| p["public_key"] == key.as_str()))
    });
    let before = agent_metric(
        lab,
        "c1",
        "c1-n1",
        "meshwork_datapath_packets_total{reason=\"encryption_required\"}",
    );
    let mut ok = true;
    let plain = lab.capture("net 10.0.0.0/8", || ok = answered(lab, "strict-a", &b));
    assert!(
        !ok,
        "strict mode let a request to a node without a peer through"
    );
    assert_eq!(
        plain.packets, 0,
        "pod addresses on the underlay: traffic left unencrypted"
    );
    let after = agent_metric(
        lab,
        "c1",
        "c1-n1",
        "meshwork_datapath_packets_total{reason=\"encryption_required\"}",
    );
    assert!(after > before, "drops not counted: {before} → {after}");
    lab.kubectl(
        "lab-c2",
        &[
            "annotate",
            "node",
            "c2-n2",
            &format!("network.meshwork.io/wg-pub-key={key}"),
        ],
    );
    wait_answered(
        lab,
        "strict-a",
        &b,
        "strict-a → strict-b with the peer back",
    );
    set_meshwork_config(lab, "c1", "encryption-strict-mode", "false");
    wait_agent(lab, "c1", "c1-n1", "strict mode off", |s| {
        s["routing"]["strict_mode"] == false
    });
}

/// encryption off in both clusters' ConfigMaps: every agent removes its
/// device and withdraws its key, pods talk in clear (the greeting is
/// readable on the underlay); on again: same keys, only WireGuard.
pub(super) fn encryption_toggles_off_and_on_at_runtime(lab: &Lab) {
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=toggle-a",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=shop",
        "--name=toggle-b",
    ]);
    let b = pod_ip(lab, "lab-c2", "shop", "toggle-b");
    wait_answered(lab, "toggle-a", &b, "toggle-a → toggle-b encrypted");
    let nodes = [
        ("c1", "c1-n1"),
        ("c1", "c1-n2"),
        ("c2", "c2-n1"),
        ("c2", "c2-n2"),
    ];
    let keys: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(c, n)| agent_get(lab, c, n, "/v1/status")["encryption"]["public_key"].clone())
        .collect();
    for c in ["c1", "c2"] {
        set_meshwork_config(lab, c, "enable-encryption", "false");
    }
    for (c, n) in nodes {
        wait_agent(lab, c, n, "encryption off, native routes", |s| {
            s["encryption"].is_null()
                && s["routing"]["routes"].as_array().is_some_and(|r| {
                    r.len() == 3 && r.iter().all(|r| r["next_hop"].get("via").is_some())
                })
        });
    }
    wait_answered(lab, "toggle-a", &b, "toggle-a → toggle-b in clear");
    let mut answers = vec![];
    let clear = lab.capture("net 10.0.0.0/8", || {
        answers = lab.ask("c1", "shop", "toggle-a", &format!("{b}:8080"), 3)
    });
    assert!(answers.iter().all(|a| a["cluster"] == "c2"), "{answers:?}");
    assert!(
        clear.packets > 0 && clear.contains("cluster=c2"),
        "encryption off: the greeting crosses the underlay in clear ({} packets)",
        clear.packets
    );
    for c in ["c1", "c2"] {
        set_meshwork_config(lab, c, "enable-encryption", "true");
    }
    for ((c, n), key) in nodes.iter().zip(&keys) {
        wait_agent(lab, c, n, "encryption on again with 3 peers", |s| {
            s["encryption"]["public_key"] == *key
                && s["encryption"]["peers"]
                    .as_array()
                    .is_some_and(|p| p.len() == 3)
        });
    }
    wait_answered(lab, "toggle-a", &b, "toggle-a → toggle-b encrypted again");
    let mut answers = vec![];
    let plain = lab.capture("net 10.0.0.0/8", || {
        answers = lab.ask("c1", "shop", "toggle-a", &format!("{b}:8080"), 3)
    });
    assert_eq!(answers.len(), 3);
    assert_eq!(
        plain.packets, 0,
        "pod addresses on the underlay after encryption came back"
    );
    let wire = lab.capture("udp port 51871", || {
        lab.ask("c1", "shop", "toggle-a", &format!("{b}:8080"), 3);
    });
    assert!(wire.packets > 0 && !wire.contains("cluster=c2"));
}

/// The longest the stream may stall while a key rotates: the new key
/// reaches the other cluster's nodes through the Node annotation, both
/// mesh-apiservers and their agents, then the next handshake attempt
/// (WireGuard retries every 5 s) and TCP's retransmission catch up.
const ROTATION_STALL_BOUND_MS: u64 = 8_000;

/// c1-n1's key rotated through its agent API (`POST
/// /v1/encryption/rotate-key`) while pod rot-a streams to rot-b in c2: the
/// connection survives (never stalls longer than the bound), the other
/// cluster's nodes peer with the new key only, and no pod address appears
/// on the underlay meanwhile.
pub(super) fn wireguard_key_rotation_under_traffic(lab: &Lab) {
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=rot-a",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=shop",
        "--name=rot-b",
    ]);
    let b = pod_ip(lab, "lab-c2", "shop", "rot-b");
    wait_answered(lab, "rot-a", &b, "rot-a → rot-b before the rotation");
    let old = agent_get(lab, "c1", "c1-n1", "/v1/status")["encryption"]["public_key"]
        .as_str()
        .expect("c1-n1 has a key")
        .to_string();
    let mut rotated = serde_json::Value::Null;
    let mut report = serde_json::Value::Null;
    let plain = lab.capture("net 10.0.0.0/8", || {
        let stream = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.pod_ns("c1", "shop", "rot-a")])
            .arg(mesh_e2e::bin("mesh-echo"))
            .args([
                "stream",
                &format!("{b}:8080"),
                "--seconds",
                "20",
                "--every-ms",
                "500",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mesh-echo stream");
        std::thread::sleep(Duration::from_secs(4));
        rotated = agent_request(lab, "c1", "c1-n1", "POST", "/v1/encryption/rotate-key");
        let out = stream.wait_with_output().expect("stream report");
        report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stream report: {e}: {:?}", out));
    });
    eprintln!("key rotation under traffic: {report}");
    assert_eq!(rotated["old_public_key"], old.as_str(), "{rotated}");
    let new = rotated["new_public_key"]
        .as_str()
        .expect("new key")
        .to_string();
    assert_ne!(new, old);
    assert_eq!(report["broken"], false, "the stream broke: {report}");
    let stall = report["longest_stall_ms"].as_u64().unwrap();
    assert!(
        stall <= ROTATION_STALL_BOUND_MS,
        "the stream stalled {stall} ms (bound {ROTATION_STALL_BOUND_MS} ms): {report}"
    );
    assert!(report["verified_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        plain.packets, 0,
        "pod addresses on the underlay during the rotation"
    );
    for (c, n) in [("c2", "c2-n1"), ("c2", "c2-n2"), ("c1", "c1-n2")] {
        wait_agent(lab, c, n, "peer with c1-n1's new key only", |s| {
            let keys: Vec<&str> = s["encryption"]["peers"]
                .as_array()
                .map(|p| p.iter().filter_map(|p| p["public_key"].as_str()).collect())
                .unwrap_or_default();
            keys.contains(&new.as_str()) && !keys.contains(&old.as_str())
        });
    }
    wait_agent(lab, "c1", "c1-n1", "new key published", |s| {
        s["encryption"]["public_key"] == new.as_str() && s["encryption"]["key_published"] == true
    });
}

/// `meshctl encryption rotate-key --node c1-n1`: the node gets a new key,
/// publishes it on its Node, the other cluster's node peers with the new
/// key, and pod traffic across clusters resumes (bounded wait).
pub(super) fn meshctl_rotate_key_peers_follow_and_traffic_resumes(lab: &Lab) {
    use meshctl::report::{EncryptionStatusReport, RotateKeyReport};
    let (r, code) = meshctl_typed::<RotateKeyReport>(
        lab,
        &[
            "encryption",
            "rotate-key",
            "--context",
            "lab-c1",
            "--node",
            "c1-n1",
        ],
    );
    assert_eq!(code, Some(0), "{r:#?}");
    assert_eq!(r.rotated.len(), 1, "{r:#?}");
    let k = &r.rotated[0];
    assert_eq!(k.node, "c1-n1");
    assert_ne!(k.old_public_key, k.new_public_key);
    let published = lab.kubectl(
        "lab-c1",
        &[
            "get",
            "node",
            "c1-n1",
            "-o",
            r"jsonpath={.metadata.annotations.network\.meshwork\.io/wg-pub-key}",
        ],
    );
    assert_eq!(published.trim(), k.new_public_key);
    // Pod a (c1-n1) reaches pod b (c2-n2) again: c2-n2 follows the new key.
    let b = pod_ip(lab, "lab-c2", "shop", "b");
    eventually("pod a reaches pod b after the key rotation", || {
        reaches(lab, "c1", "shop", "a", &format!("{b}:8080"))
    });
    let st: EncryptionStatusReport = meshctl_until(
        lab,
        &["encryption", "status", "--context", "lab-c2"],
        "c2-n2 peers with c1-n1's new key, with a handshake",
        |r: &EncryptionStatusReport, _| {
            r.nodes.iter().any(|n| {
                n.node == "c2-n2"
                    && n.device.as_ref().is_some_and(|d| {
                        d.peers.iter().any(|p| {
                            p.public_key == k.new_public_key
                                && p.last_handshake_seconds_ago.is_some()
                        })
                    })
            })
        },
    );
    assert!(
        st.nodes
            .iter()
            .flat_map(|n| n.device.iter().flat_map(|d| d.peers.iter()))
            .all(|p| p.public_key != k.old_public_key),
        "the old key is gone from every peer table: {st:#?}"
    );
}
