//! The end-to-end scenarios of the control plane, against one lab of three
//! clusters: connect, status, idempotence, global services crossing (and
//! only global ones), refusals that change nothing, a remote cluster lost
//! and back, a third cluster joining, disconnect and reconnect.
//!
//! Each scenario asserts on what the clusters report through the same
//! commands a person uses (meshctl, kubectl, mesh-lab), never on logs.

use std::time::Duration;

use mesh_e2e::{Lab, run_scenarios};

const T: Duration = Duration::from_secs(45);

fn secret(lab: &Lab, ctx: &str) -> String {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", lab.kubeconfig())
        .args([
            &format!("--context={ctx}"),
            "-n",
            "meshwork-system",
            "get",
            "secret",
            "meshwork-clustermesh",
            "-o",
            "jsonpath={.data}",
        ])
        .output()
        .unwrap();
    // A missing Secret reads as empty: "nothing configured" either way.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn connect(lab: &Lab, a: &str, b: &str) -> serde_json::Value {
    lab.meshctl_json(&[
        "connect",
        "--context",
        &format!("lab-{a}"),
        "--destination-context",
        &format!("lab-{b}"),
        "--timeout",
        "60s",
    ])
}

fn connect_and_status(lab: &Lab) {
    let r = connect(lab, "c1", "c2");
    assert_eq!(r["synced"], true, "{r}");
    assert_eq!(r["written"].as_array().unwrap().len(), 2, "{r}");
    for (me, other) in [("c1", "c2"), ("c2", "c1")] {
        let st = lab.wait_status(me, "the other's 2 nodes", T, |s| {
            s.remotes.get(other).is_some_and(|r| r.counts.nodes == 2)
        });
        let r = &st.remotes[other];
        assert!(
            r.connected && r.synced && r.stale_since.is_none() && r.refused.is_none(),
            "{me}: {r:?}"
        );
    }
}

fn connecting_again_changes_nothing(lab: &Lab) {
    let before = (secret(lab, "lab-c1"), secret(lab, "lab-c2"));
    let r = connect(lab, "c1", "c2");
    assert_eq!(r["written"], serde_json::json!([]), "{r}");
    assert_eq!(r["unchanged"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        (secret(lab, "lab-c1"), secret(lab, "lab-c2")),
        before,
        "a repeated connect rewrote a Secret"
    );
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    service.meshwork.io/global: "true"
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata:
  name: internal
  namespace: shop
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

fn only_global_services_cross_clusters(lab: &Lab) {
    for (node, name) in [("c2-n1", "web-1"), ("c2-n2", "web-2")] {
        lab.ok(&[
            "pod",
            "add",
            "--cluster=c2",
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
            "--label=app=web",
        ]);
    }
    lab.apply("lab-c2", SERVICES);
    let st = lab.wait_status("c1", "c2's global service and its pods", T, |s| {
        s.remotes
            .get("c2")
            .is_some_and(|r| r.counts.services == 1 && r.counts.endpoints >= 2)
    });
    assert_eq!(
        st.remotes["c2"].counts.services, 1,
        "the non-global Service must not leave c2"
    );
    // Removing the annotation withdraws the service from c1.
    lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "shop",
            "annotate",
            "service",
            "web",
            "service.meshwork.io/global-",
        ],
    );
    lab.wait_status("c1", "c2's service withdrawn", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.counts.services == 0)
    });
    // A malformed annotation is a warning, the service is not global, nothing else breaks.
    lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "shop",
            "annotate",
            "service",
            "web",
            "service.meshwork.io/global=yes-please",
            "--overwrite",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let st = lab.wait_status("c1", "c2 still synced", T, |s| s.is_synced_with("c2"));
    assert_eq!(
        st.remotes["c2"].counts.services, 0,
        "a malformed global annotation must not export the service"
    );
    lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "shop",
            "annotate",
            "service",
            "web",
            "service.meshwork.io/global=true",
            "--overwrite",
        ],
    );
    lab.wait_status("c1", "c2's service back", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.counts.services == 1)
    });
}

fn pod_ip(lab: &Lab, ctx: &str, namespace: &str, name: &str) -> String {
    lab.kubectl(
        ctx,
        &[
            "-n",
            namespace,
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.podIP}",
        ],
    )
}

/// Without encryption, pod traffic crosses the underlay as it is: this is the
/// control that shows the encrypted scenario's wire check can fail.
fn pod_traffic_crosses_clusters_in_the_clear_without_encryption(lab: &Lab) {
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

/// Who answered each of `n` requests to `addr` from pod shop/client in c1:
/// the answering cluster and pod, or None for a failed request.
fn who_answers(lab: &Lab, addr: &str, n: u32) -> Vec<Option<(String, String)>> {
    let out = lab.exec(
        &lab.pod_ns("c1", "shop", "client"),
        &mesh_e2e::bin("mesh-echo"),
        &["ask", addr, "-c", &n.to_string(), "--timeout-ms", "1000"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("mesh-echo JSON");
            let a = &v["answer"];
            Some((
                a["cluster"].as_str()?.to_string(),
                a["pod"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Asks `addr` 30 times until `done` holds for the answers counted by
/// cluster (bounded by `T`), and prints that count.
fn ask_until(
    lab: &Lab,
    addr: &str,
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, usize>) -> bool,
) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (mut counts, mut pods) = (
            std::collections::BTreeMap::new(),
            std::collections::BTreeMap::new(),
        );
        for a in who_answers(lab, addr, 30) {
            let (cluster, pod) = a.unwrap_or_else(|| ("failed".into(), "-".into()));
            *counts.entry(cluster).or_insert(0) += 1;
            *pods.entry(pod).or_insert(0) += 1;
        }
        if done(&counts) {
            eprintln!("{what}: answers by cluster {counts:?}, by pod {pods:?}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {counts:?} after {T:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A global Service in c1 and c2: c1's ClusterIP is served by both
/// clusters' backends; not by c2's while c2 says shared=false; affinity
/// local keeps c1's clients on c1 while c1 has a backend, and fails over to
/// c2 when it has none.
fn a_global_service_is_served_by_both_clusters_with_affinity(lab: &Lab) {
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1",
        "--label=app=web",
    ]);
    lab.apply("lab-c1", SERVICES.split("---").next().unwrap());
    let vip = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let addr = format!("{}:80", vip.trim());
    // Only answers, from both clusters (a failure is counted as "failed").
    ask_until(lab, &addr, "affinity none", |c| {
        c.keys().map(String::as_str).eq(["c1", "c2"])
    });

    // c2 keeps its backends to itself: c1's clients get c1's only.
    let c2_shared = |value: &str| {
        lab.kubectl(
            "lab-c2",
            &[
                "-n",
                "shop",
                "annotate",
                "service",
                "web",
                value,
                "--overwrite",
            ],
        )
    };
    c2_shared("service.meshwork.io/shared=false");
    ask_until(lab, &addr, "c2 shared=false", |c| c.get("c1") == Some(&30));
    c2_shared("service.meshwork.io/shared-");

    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "annotate",
            "service",
            "web",
            "service.meshwork.io/affinity=local",
            "--overwrite",
        ],
    );
    ask_until(lab, &addr, "affinity local", |c| c.get("c1") == Some(&30));

    lab.ok(&[
        "pod",
        "del",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1",
    ]);
    ask_until(lab, &addr, "affinity local, no c1 backend", |c| {
        c.get("c2") == Some(&30)
    });
    // c2 still exports only its own global service.
    let st = lab.wait_status("c1", "c2 synced", T, |s| s.is_synced_with("c2"));
    assert_eq!(st.remotes["c2"].counts.services, 1);
}

fn set_c3_config(lab: &Lab, key: &str, value: &str) {
    let patch = serde_json::json!({"data": {key: value}}).to_string();
    lab.kubectl(
        "lab-c3",
        &[
            "-n",
            "meshwork-system",
            "patch",
            "configmap",
            "mesh-apiserver-config",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

fn refusals_change_nothing(lab: &Lab) {
    let before = (secret(lab, "lab-c1"), secret(lab, "lab-c3"));
    for (key, value, original, want) in [
        ("cluster-id", "1", "3", "cluster id 1"),
        ("cluster-name", "c1", "c3", "names must be unique"),
        ("pod-cidrs", "10.1.128.0/17", "10.3.0.0/16", "overlaps"),
    ] {
        set_c3_config(lab, key, value);
        let out = lab.meshctl(&[
            "connect",
            "--context",
            "lab-c1",
            "--destination-context",
            "lab-c3",
            "--timeout",
            "20s",
        ]);
        set_c3_config(lab, key, original);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && err.contains("nothing was changed"),
            "{key}={value}: {err}"
        );
    }
    // A mesh-apiserver that is not running: once its published status is
    // stale (meshctl can know no sooner), connect refuses.
    lab.ok(&["kill", "c3/mesh-apiserver"]);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    lab.wait_status("c3", "its status to go stale", T, |s| {
        now().saturating_sub(s.updated_at) > 10
    });
    let out = lab.meshctl(&[
        "connect",
        "--context",
        "lab-c1",
        "--destination-context",
        "lab-c3",
        "--timeout",
        "20s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not running"),
        "{err}"
    );
    assert!(
        err.contains("c3") && err.contains("nothing was changed"),
        "{err}"
    );
    lab.ok(&["restart", "c3/mesh-apiserver"]);
    lab.wait_status("c3", "c3's mesh-apiserver back", T, |s| s.cluster == "c3");
    assert_eq!(
        (secret(lab, "lab-c1"), secret(lab, "lab-c3")),
        before,
        "a refused connect changed a Secret"
    );
}

fn a_lost_remote_is_kept_stale_and_resyncs(lab: &Lab) {
    lab.ok(&["kill", "c2/mesh-apiserver"]);
    let st = lab.wait_status("c1", "c2 marked stale", T, |s| {
        s.remotes
            .get("c2")
            .is_some_and(|r| !r.connected && r.stale_since.is_some())
    });
    let r = &st.remotes["c2"];
    assert_eq!(
        (r.counts.nodes, r.counts.services),
        (2, 1),
        "c2's last known state must be kept while it is unreachable: {r:?}"
    );
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    let st = lab.wait_status("c1", "c2 back and synced", T, |s| {
        s.is_synced_with("c2") && s.remotes["c2"].stale_since.is_none()
    });
    assert_eq!(st.remotes["c2"].counts.services, 1);
}

fn a_third_cluster_joins(lab: &Lab) {
    for other in ["c1", "c2"] {
        assert_eq!(connect(lab, "c3", other)["synced"], true);
    }
    let st = lab.wait_status("c3", "c1 and c2 synced", T, |s| {
        s.is_synced_with("c1") && s.is_synced_with("c2")
    });
    assert_eq!(
        st.remotes["c2"].counts.services, 1,
        "c3 sees c2's global service"
    );
    for other in ["c1", "c2"] {
        lab.wait_status(other, "c3 synced", T, |s| s.is_synced_with("c3"));
    }
}

fn disconnect_withdraws_and_reconnect_works(lab: &Lab) {
    let r = lab.meshctl(&[
        "disconnect",
        "--context",
        "lab-c1",
        "--destination-context",
        "lab-c2",
        "--timeout",
        "60s",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let st = lab.status("c1");
    assert!(
        !st.remotes.contains_key("c2") && st.is_synced_with("c3"),
        "c1 withdrew c2 only: {:?}",
        st.remotes.keys()
    );
    assert!(!lab.status("c2").remotes.contains_key("c1"));
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.wait_status("c1", "c2 back", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.counts.services == 1)
    });
}

#[test]
fn control_plane_scenarios_on_one_lab() {
    let lab = Lab::up("e2e", 3, 2, false);
    run_scenarios(
        &lab,
        &[
            ("connect and status", connect_and_status),
            (
                "connecting again changes nothing",
                connecting_again_changes_nothing,
            ),
            (
                "only global services cross clusters",
                only_global_services_cross_clusters,
            ),
            (
                "pod traffic crosses clusters in the clear without encryption",
                pod_traffic_crosses_clusters_in_the_clear_without_encryption,
            ),
            (
                "a global service is served by both clusters, with affinity",
                a_global_service_is_served_by_both_clusters_with_affinity,
            ),
            ("refusals change nothing", refusals_change_nothing),
            (
                "a lost remote is kept stale and resyncs",
                a_lost_remote_is_kept_stale_and_resyncs,
            ),
            ("a third cluster joins", a_third_cluster_joins),
            (
                "disconnect withdraws and reconnect works",
                disconnect_withdraws_and_reconnect_works,
            ),
        ],
    );
}

fn encrypted_pod_traffic_is_only_wireguard_on_the_wire(lab: &Lab) {
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=a",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=c",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n2",
        "--namespace=shop",
        "--name=b",
    ]);
    let (b, c) = (
        pod_ip(lab, "lab-c2", "shop", "b"),
        pod_ip(lab, "lab-c1", "shop", "c"),
    );
    // Peers come from the mesh feed: allow the first handshake and route.
    let deadline = std::time::Instant::now() + T;
    while lab
        .exec(
            &lab.pod_ns("c1", "shop", "a"),
            &mesh_e2e::bin("mesh-echo"),
            &["ask", &format!("{b}:8080"), "--timeout-ms", "1000"],
        )
        .status
        .code()
        != Some(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pod a never reached pod b across clusters"
        );
    }
    let mut answers = vec![];
    let plain = lab.capture("net 10.0.0.0/8", || {
        answers = lab.ask("c1", "shop", "a", &format!("{b}:8080"), 3);
        answers.extend(lab.ask("c1", "shop", "a", &format!("{c}:8080"), 3));
    });
    let clusters: Vec<&str> = answers
        .iter()
        .map(|a| a["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(
        clusters,
        ["c2", "c2", "c2", "c1", "c1", "c1"],
        "cross-cluster and cross-node answers"
    );
    assert_eq!(
        plain.packets, 0,
        "pod addresses appeared on the underlay: traffic left unencrypted"
    );
    let wire = lab.capture("udp port 51871", || {
        lab.ask("c1", "shop", "a", &format!("{b}:8080"), 3);
    });
    assert!(wire.packets > 0, "no WireGuard packets on the underlay");
    assert!(
        !wire.contains("cluster=c2"),
        "the greeting is readable inside the WireGuard packets"
    );
}

fn wg_show_reads_every_peer_with_a_handshake(lab: &Lab) {
    let out = lab.exec(
        &lab.node_ns("c1-n1"),
        std::path::Path::new("/usr/bin/wg"),
        &["show", &lab.wg_interface(1, 1), "dump"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wg show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        peers.len(),
        3,
        "c1-n1 peers with the 3 other nodes of both clusters:\n{text}"
    );
    // dump columns: public-key preshared endpoint allowed-ips latest-handshake rx tx keepalive
    let with_handshake = peers
        .iter()
        .filter(|p| p.split('\t').nth(4).is_some_and(|h| h != "0"))
        .count();
    assert!(
        with_handshake >= 2,
        "handshakes with the nodes pod a talked to:\n{text}"
    );
}

#[test]
fn encrypted_datapath_scenarios_on_one_lab() {
    let lab = Lab::up("enc", 2, 2, true);
    run_scenarios(
        &lab,
        &[
            (
                "encrypted pod traffic is only WireGuard on the wire",
                encrypted_pod_traffic_is_only_wireguard_on_the_wire,
            ),
            (
                "wg show reads every peer with a handshake",
                wg_show_reads_every_peer_with_a_handshake,
            ),
            (
                "strict mode drops what would leave unencrypted",
                strict_mode_drops_what_would_leave_unencrypted,
            ),
            (
                "encryption toggles off and on at runtime",
                encryption_toggles_off_and_on_at_runtime,
            ),
            (
                "WireGuard key rotation under traffic",
                wireguard_key_rotation_under_traffic,
            ),
        ],
    );
}

/// `GET <path>` on node `node`'s agent API (its unix socket in the lab's
/// state dir), as JSON.
fn agent_get(lab: &Lab, cluster: &str, node: &str, path: &str) -> serde_json::Value {
    agent_request(lab, cluster, node, "GET", path)
}

/// `<method> <path>` on node `node`'s agent API, as JSON.
fn agent_request(
    lab: &Lab,
    cluster: &str,
    node: &str,
    method: &str,
    path: &str,
) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let sock = lab
        .dir
        .join(cluster)
        .join("nodes")
        .join(node)
        .join("agent.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("agent socket {}: {e}", sock.display()));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: agent\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{node} {path}: {e}: {text}"))
}

/// Waits until `check` holds for node `node`'s agent status.
fn wait_agent(
    lab: &Lab,
    cluster: &str,
    node: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = agent_get(lab, cluster, node, "/v1/status");
        if check(&st) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node}: {what} not within {T:?}; status: {st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `kubectl patch` of one key of cluster `c`'s meshwork-config (the lab's
/// kubelet part carries it to the agents' config dir).
fn set_meshwork_config(lab: &Lab, c: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"data": {key: value}}).to_string();
    lab.kubectl(
        &format!("lab-{c}"),
        &[
            "-n",
            "meshwork-system",
            "patch",
            "configmap",
            "meshwork-config",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

/// A counter of node `node`'s `/metrics` (read inside its namespace).
fn agent_metric(lab: &Lab, cluster: &str, node: &str, series: &str) -> u64 {
    let addr = agent_get(lab, cluster, node, "/v1/status")["metrics_address"]
        .as_str()
        .expect("metrics address")
        .to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port}; printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = lab.exec(
        &lab.node_ns(node),
        std::path::Path::new("/bin/bash"),
        &["-c", &script],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// One request from pod `from` (c1) to `to:8080`, 1 s timeout: whether it
/// was answered.
fn answered(lab: &Lab, from: &str, to: &str) -> bool {
    lab.exec(
        &lab.pod_ns("c1", "shop", from),
        &mesh_e2e::bin("mesh-echo"),
        &["ask", &format!("{to}:8080"), "--timeout-ms", "1000"],
    )
    .status
    .success()
}

fn wait_answered(lab: &Lab, from: &str, to: &str, what: &str) {
    let deadline = std::time::Instant::now() + T;
    while !answered(lab, from, to) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no answer within {T:?}"
        );
    }
}

/// Strict mode on in c1 (ConfigMap edit, applied at runtime); c2-n2's key
/// annotation removed, so c1's nodes lose their peer for it and fall back
/// to a native route: the datapath drops the pod's requests to c2-n2's pod
/// (counted as encryption_required), nothing with a pod address reaches
/// the underlay. The key back: answered again through the tunnel.
fn strict_mode_drops_what_would_leave_unencrypted(lab: &Lab) {
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
fn encryption_toggles_off_and_on_at_runtime(lab: &Lab) {
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
fn wireguard_key_rotation_under_traffic(lab: &Lab) {
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
    assert_eq!(rotated["previous_public_key"], old.as_str(), "{rotated}");
    let new = rotated["public_key"].as_str().expect("new key").to_string();
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
