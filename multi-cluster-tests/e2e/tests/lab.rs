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
    // The owner of the Service learns why from an Event on it.
    eventually("a Warning Event names the malformed annotation", || {
        let events: serde_json::Value = serde_json::from_str(&lab.kubectl(
            "lab-c2",
            &["-n", "shop", "get", "events.events.k8s.io", "-o", "json"],
        ))
        .expect("events JSON");
        events["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["reason"] == "MeshworkInvalidConfig"
                    && e["type"] == "Warning"
                    && e["regarding"]["kind"] == "Service"
                    && e["regarding"]["name"] == "web"
                    && e["note"].as_str().is_some_and(|n| n.contains("yes-please"))
            })
        })
    });
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

/// c2's mesh-apiserver dies. The data plane does not depend on it: an
/// established connection from c1 to a c2 pod keeps streaming and new ones
/// succeed; c1 keeps c2's last known state (stale) and keeps serving its
/// global service with c2's backends; after the stale timeout (20 s in this
/// lab) c1 withdraws c2's state and its ClusterIP has no backend left; when
/// c2 returns, it resyncs and serves again.
fn a_lost_remote_is_kept_stale_then_withdrawn_and_resyncs(lab: &Lab) {
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
    let global = format!("{}:80", vip.trim());
    let served_by_c2 = |n| {
        who_answers(lab, &global, n)
            .iter()
            .all(|a| a.as_ref().is_some_and(|(c, _)| c == "c2"))
    };
    eventually(
        "c1's global service is served by c2 (c1 has no web pod now)",
        || served_by_c2(5),
    );
    let web2 = format!("{}:8080", pod_ip(lab, "lab-c2", "shop", "web-2"));
    let stream = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", "client"),
                &mesh_e2e::bin("mesh-echo"),
                &["stream", &web2, "--seconds", "8", "--every-ms", "500"],
            )
        });
        std::thread::sleep(Duration::from_secs(1));
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
        assert!(
            served_by_c2(10),
            "c2's backends keep serving while c2 is stale"
        );
        stream.join().expect("stream thread")
    });
    let report: serde_json::Value = serde_json::from_slice(&stream.stdout)
        .unwrap_or_else(|e| panic!("stream report: {e}: {stream:?}"));
    assert_eq!(
        report["broken"], false,
        "an established connection broke: {report}"
    );
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    lab.wait_status(
        "c1",
        "c2's state withdrawn after the stale timeout",
        T,
        |s| {
            s.remotes
                .get("c2")
                .is_some_and(|r| r.counts.services == 0 && r.counts.nodes == 0)
        },
    );
    eventually("c1's ClusterIP has no backend once c2 is withdrawn", || {
        who_answers(lab, &global, 3).iter().all(Option::is_none)
    });
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    let st = lab.wait_status("c1", "c2 back and synced", T, |s| {
        s.is_synced_with("c2") && s.remotes["c2"].stale_since.is_none()
    });
    assert_eq!(st.remotes["c2"].counts.services, 1);
    eventually("c2 serves c1's global service again", || served_by_c2(5));
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

const NODE_PORT: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web-np
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 8080, nodePort: 30080, protocol: TCP}]
"#;

/// A NodePort Service in c2 answers on each c2 node's address, from a pod of
/// c1 (another node, another cluster), with the node's local backend.
fn node_port_answers_on_each_node_address(lab: &Lab) {
    lab.apply("lab-c2", NODE_PORT);
    for (node, pod) in [("c2-n1", "shop/web-1"), ("c2-n2", "shop/web-2")] {
        let ip = lab.kubectl(
            "lab-c2",
            &[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
            ],
        );
        let addr = format!("{}:30080", ip.trim());
        eventually(&format!("{addr} ({node}) answers"), || {
            reaches(lab, "c1", "shop", "client", &addr)
        });
        for a in lab.ask("c1", "shop", "client", &addr, 3) {
            assert_eq!(
                (a["cluster"].as_str(), a["pod"].as_str()),
                (Some("c2"), Some(pod)),
                "NodePort on {node} is served by its local backend: {a}"
            );
            assert_eq!(a["node"].as_str(), Some(node), "answered on {node}: {a}");
        }
    }
    lab.kubectl("lab-c2", &["-n", "shop", "delete", "svc", "web-np"]);
}

/// `sessionAffinity: ClientIP` on c1's global Service keeps c1's client on
/// one backend pod (of either cluster); back to `None` it spreads again.
fn session_affinity_keeps_a_client_on_one_pod(lab: &Lab) {
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
    let pods = |lab: &Lab| {
        who_answers(lab, &addr, 20)
            .into_iter()
            .map(|a| {
                a.map(|(c, p)| format!("{c}/{p}"))
                    .unwrap_or_else(|| "failed".into())
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let set = |value: &str| {
        let patch = format!(r#"{{"spec":{{"sessionAffinity":"{value}"}}}}"#);
        lab.kubectl(
            "lab-c1",
            &["-n", "shop", "patch", "svc", "web", "-p", &patch],
        );
    };
    set("ClientIP");
    eventually(
        "one pod answers every request with ClientIP affinity",
        || {
            let p = pods(lab);
            p.len() == 1 && !p.contains("failed")
        },
    );
    set("None");
    eventually("several pods answer again without affinity", || {
        pods(lab).len() > 1
    });
}

/// Whether one request from pod `namespace/name` of `cluster` to `addr` is
/// answered (1 s timeout).
fn reaches(lab: &Lab, cluster: &str, namespace: &str, name: &str, addr: &str) -> bool {
    let out = lab.exec(
        &lab.pod_ns(cluster, namespace, name),
        &mesh_e2e::bin("mesh-echo"),
        &["ask", addr, "-c", "1", "--timeout-ms", "1000"],
    );
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["answer"]["cluster"].is_string())
    })
}

/// The datapath's packet counter for `reason` on node `node` (its agent's
/// `/metrics`, read inside the node's namespace).
fn datapath_packets(lab: &Lab, node: &str, reason: &str) -> u64 {
    let out = lab.exec(
        &lab.node_ns(node),
        std::path::Path::new("curl"),
        &["-sS", "--max-time", "5", "http://127.0.0.1:9962/metrics"],
    );
    assert!(out.status.success(), "metrics of {node}: {out:?}");
    let prefix = format!("meshwork_datapath_packets_total{{reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|n| n.trim().parse().expect("counter value"))
        .unwrap_or(0)
}

/// Waits (bounded by `T`) until `cond` holds, saying what it waited for.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + T;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {T:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

const DB_POLICY: &str = r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata:
  name: db-from-c2-clients
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: db}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: client, meshwork.io/cluster: c2}
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
"#;

/// A policy in c1 admits only c2's `app=client` pods to c1's db on 8080:
/// c2's client passes; another identity of c2 and the same labels in c1 are
/// dropped by the datapath, counted with their reason. Removing the policy
/// opens the db again.
fn cross_cluster_policy_admits_only_the_named_clusters_pods(lab: &Lab) {
    for (cluster, node, name, app) in [
        ("c1", "c1-n2", "db", "db"),
        ("c2", "c2-n1", "client-c2", "client"),
    ] {
        lab.ok(&[
            "pod",
            "add",
            &format!("--cluster={cluster}"),
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
            &format!("--label=app={app}"),
        ]);
    }
    let db = format!("{}:8080", pod_ip(lab, "lab-c1", "shop", "db"));
    let peers = [
        ("c2", "client-c2", true),
        ("c2", "web-1", false),
        ("c1", "client", false),
    ];
    // The control: without a policy every peer gets through.
    for (cluster, pod, _) in peers {
        eventually(
            &format!("{cluster}/{pod} reaches the db before any policy"),
            || reaches(lab, cluster, "shop", pod, &db),
        );
    }
    lab.apply("lab-c1", DB_POLICY);
    eventually("the policy is enforced (c1's client refused)", || {
        !reaches(lab, "c1", "shop", "client", &db)
    });
    let status = |name: &str| {
        lab.kubectl(
            "lab-c1",
            &[
                "-n",
                "shop",
                "get",
                "mnp",
                name,
                "-o",
                "jsonpath={.status.valid} {.status.message}",
            ],
        )
    };
    eventually("the agents mark the policy valid", || {
        status("db-from-c2-clients").trim() == "true"
    });
    // A bad policy is refused with a message saying what to change, in its
    // status; the good one keeps working.
    lab.apply(
        "lab-c1",
        &DB_POLICY.replace("db-from-c2-clients", "bad").replace(
            "- fromEndpoints:",
            "- fromEntities: [everyone]\n      fromEndpoints:",
        ),
    );
    eventually("the bad policy is marked invalid with the reason", || {
        let s = status("bad");
        s.starts_with("false ") && s.contains("unknown entity \"everyone\"")
    });
    lab.kubectl("lab-c1", &["-n", "shop", "delete", "mnp", "bad"]);
    let before = datapath_packets(lab, "c1-n2", "policy_default_deny");
    for (cluster, pod, allowed) in peers {
        for _ in 0..3 {
            assert_eq!(
                reaches(lab, cluster, "shop", pod, &db),
                allowed,
                "{cluster}/{pod} → db under the policy"
            );
        }
    }
    let after = datapath_packets(lab, "c1-n2", "policy_default_deny");
    assert!(
        after > before,
        "refused connections are counted as policy_default_deny on c1-n2 ({before} → {after})"
    );
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "delete",
            "meshnetworkpolicy",
            "db-from-c2-clients",
        ],
    );
    eventually("the db is open again once the policy is gone", || {
        reaches(lab, "c1", "shop", "client", &db)
    });
}

/// `GET <path>` on node `node`'s agent socket (its local API), as JSON.
fn agent_get(lab: &Lab, node: &str, path: &str) -> serde_json::Value {
    let cluster = node.split('-').next().expect("node c<c>-n<n>");
    let socket = lab
        .dir
        .join(cluster)
        .join("nodes")
        .join(node)
        .join("agent.sock");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(&socket)
        .arg(format!("http://agent{path}"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {path} on {node}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "GET {path} on {node}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
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
        sorted(agent_get(lab, node, "/v1/services")),
        sorted(agent_get(lab, node, "/v1/ipcache")),
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
    let deadline = std::time::Instant::now() + T;
    loop {
        let after = datapath_dump(lab, "c1-n1");
        if after == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "c1-n1's maps did not converge to what they held before the restart:\nbefore {before:?}\nafter {after:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    report
}

/// Without encryption the datapath lives in pinned maps and programs: the
/// established stream never breaks and every new connection succeeds.
fn an_agent_restarted_under_traffic_loses_no_connection(lab: &Lab) {
    let r = restart_agent_under_traffic(lab, "client", "web-2");
    assert_eq!(r["broken"], false, "the established stream broke: {r}");
    assert_eq!(r["new_failures"], 0, "new connections failed: {r}");
    assert!(r["verified_bytes"].as_u64() > Some(0), "{r}");
}

#[test]
fn control_plane_scenarios_on_one_lab() {
    let lab = Lab::up_with("e2e", 3, 2, false, &["--stale-timeout=20"]);
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
            (
                "a NodePort answers on each node's address",
                node_port_answers_on_each_node_address,
            ),
            (
                "session affinity ClientIP keeps a client on one pod",
                session_affinity_keeps_a_client_on_one_pod,
            ),
            (
                "cross-cluster policy admits only the named cluster's pods",
                cross_cluster_policy_admits_only_the_named_clusters_pods,
            ),
            (
                "an agent restarted under traffic loses no connection",
                an_agent_restarted_under_traffic_loses_no_connection,
            ),
            ("refusals change nothing", refusals_change_nothing),
            (
                "a lost remote is kept stale, then withdrawn, and resyncs",
                a_lost_remote_is_kept_stale_then_withdrawn_and_resyncs,
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

/// With encryption the WireGuard device lives in the agent's process: a
/// killed agent takes it down. The restarted agent comes back with the same
/// key, its peers handshake again, the established stream recovers (TCP
/// retransmits) and nothing crosses the underlay in the clear meanwhile.
fn an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers(lab: &Lab) {
    let key = |lab: &Lab| agent_get(lab, "c1-n1", "/v1/status")["encryption"]["public_key"].clone();
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
                "an encrypted agent restart keeps its key and the stream recovers",
                an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers,
            ),
        ],
    );
}
