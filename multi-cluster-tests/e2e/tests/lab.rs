//! The end-to-end scenarios of the control plane, against one lab of three
//! clusters: connect, status, idempotence, global services crossing (and
//! only global ones), a Deployment backing one ([`deployments`]), refusals
//! that change nothing, a remote cluster lost and back, a third cluster
//! joining, disconnect and reconnect.
//!
//! Each scenario asserts on what the clusters report through the same
//! commands a person uses (meshctl, kubectl, mesh-lab), never on logs.

use std::time::Duration;

use mesh_e2e::{Lab, run_scenarios};

#[path = "lab/deployments.rs"]
mod deployments;
#[path = "lab/trust_boundary.rs"]
mod trust_boundary;

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
    // status also reports this cluster's node-agents and encryption mode.
    let (st, code) =
        meshctl_typed::<meshctl::report::StatusReport>(lab, &["status", "--context", "lab-c1"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        (
            st.agents.nodes,
            st.agents.ready,
            st.agents.encryption.as_str()
        ),
        (2, 2, "off"),
        "{st:#?}"
    );
    assert!(st.agents.unreachable.is_empty(), "{st:#?}");
    let table = String::from_utf8_lossy(&lab.meshctl(&["status", "--context", "lab-c1"]).stdout)
        .to_string();
    assert!(
        table.contains("2/2 ready") && table.contains("encryption"),
        "{table}"
    );
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

/// `kubectl annotate --overwrite service shop/web <annotation>` in `ctx`
/// (`key=value` sets, `key-` removes).
fn annotate_web(lab: &Lab, ctx: &str, annotation: &str) {
    lab.kubectl(
        ctx,
        &[
            "-n",
            "shop",
            "annotate",
            "--overwrite",
            "service",
            "web",
            annotation,
        ],
    );
}

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
    annotate_web(lab, "lab-c2", "service.meshwork.io/global-");
    lab.wait_status("c1", "c2's service withdrawn", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.counts.services == 0)
    });
    // A malformed annotation is a warning, the service is not global, nothing else breaks.
    annotate_web(lab, "lab-c2", "service.meshwork.io/global=yes-please");
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
    annotate_web(lab, "lab-c2", "service.meshwork.io/global=true");
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
/// remote sends c1's clients to c2; affinity
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
    annotate_web(lab, "lab-c2", "service.meshwork.io/shared=false");
    ask_until(lab, &addr, "c2 shared=false", |c| c.get("c1") == Some(&30));
    annotate_web(lab, "lab-c2", "service.meshwork.io/shared-");

    annotate_web(lab, "lab-c1", "service.meshwork.io/affinity=local");
    ask_until(lab, &addr, "affinity local", |c| c.get("c1") == Some(&30));
    // Remote: c1's clients go to c2 while c2 has ready backends.
    annotate_web(lab, "lab-c1", "service.meshwork.io/affinity=remote");
    ask_until(lab, &addr, "affinity remote", |c| c.get("c2") == Some(&30));
    annotate_web(lab, "lab-c1", "service.meshwork.io/affinity=local");
    ask_until(lab, &addr, "affinity local again", |c| {
        c.get("c1") == Some(&30)
    });

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

/// Pod to pod without NAT: on the same node, across nodes of one cluster,
/// across clusters; each backend sees the client's own address.
fn pod_to_pod_on_the_same_node_across_nodes_and_across_clusters(lab: &Lab) {
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
    // explain names the policy on both ends of the story.
    use meshctl::report::{ExplainReport, HopStatus};
    let ingress = |ex: &ExplainReport| {
        ex.backends
            .iter()
            .flat_map(|b| b.hops.iter())
            .find(|h| h.step == "ingress policy")
            .cloned()
            .unwrap_or_else(|| panic!("no ingress policy hop: {ex:#?}"))
    };
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/db:8080",
        ],
    );
    assert_eq!((code, ex.ok), (Some(3), false), "{ex:#?}");
    let hop = ingress(&ex);
    assert_eq!(hop.status, HopStatus::Fail, "{hop:#?}");
    assert!(
        hop.detail
            .contains("selected by MeshNetworkPolicy shop/db-from-c2-clients"),
        "{hop:#?}"
    );
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c2",
            "--destination-context",
            "lab-c1",
            "shop/client-c2",
            "shop/db:8080",
        ],
    );
    assert_eq!((code, ex.ok), (Some(0), true), "{ex:#?}");
    let hop = ingress(&ex);
    assert!(
        hop.detail
            .contains("rule MeshNetworkPolicy shop/db-from-c2-clients ingress[0]"),
        "{hop:#?}"
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

/// Calls c2's mesh-apiserver (its gRPC port, from its control namespace)
/// with the client certificate `cert`/`key`: curl's exit status and stderr.
fn call_c2_apiserver_with(
    lab: &Lab,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (bool, String) {
    let ns = format!("mw{}-c2-ctl", lab.name);
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["curl", "-sS", "-k", "--max-time", "5", "--http2"])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("https://192.168.77.40:32379/")
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The refusals c2's mesh-apiserver reports on its status endpoint.
fn c2_refused_peers(lab: &Lab) -> String {
    let ns = format!("mw{}-c2-ctl", lab.name);
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:9963/status",
        ])
        .output()
        .expect("run curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "c2 mesh-apiserver /status: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["refused_peers"].to_string()
}

/// `meshctl ca rotate --context lab-c2 --context lab-c1` while c1's client keeps a stream to
/// c2's web-2 busy and opens a new connection every 200 ms: the stream never
/// breaks, no new connection fails (the lab's stale timeout is 20 s, so a
/// remote refused during the rotation would have its backends withdrawn),
/// every cluster reports c2 connected and synced, and again after c2's
/// mesh-apiserver restarts (every client then handshakes with the new
/// certificates). A certificate from c2's old CA is accepted before and
/// refused after.
fn ca_rotation_under_cross_cluster_traffic(lab: &Lab) {
    let target = format!("{}:8080", pod_ip(lab, "lab-c2", "shop", "web-2"));
    eventually("c1's client reaches c2's web-2", || {
        reaches(lab, "c1", "shop", "client", &target)
    });
    // The node-agents' certificate as c2's old CA issued it.
    let keep = lab.dir.join("c2-old-ca-client");
    std::fs::create_dir_all(&keep).unwrap();
    let projected = lab.dir.join("c2/tls/meshwork-node-agent-tls");
    let (old_cert, old_key) = (keep.join("old.crt"), keep.join("old.key"));
    std::fs::copy(projected.join("tls.crt"), &old_cert).unwrap();
    std::fs::copy(projected.join("tls.key"), &old_key).unwrap();
    let (ok_before, before) = call_c2_apiserver_with(lab, &old_cert, &old_key);
    eprintln!("old-CA certificate before the rotation: curl ok={ok_before} {before}");
    assert!(
        !before.contains("alert"),
        "the old certificate must be accepted before the rotation: {before}"
    );
    let stream_seconds = 80;
    let (rotation, stream, took) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", "client"),
                &mesh_e2e::bin("mesh-echo"),
                &[
                    "stream",
                    &target,
                    "--seconds",
                    &stream_seconds.to_string(),
                    "--every-ms",
                    "200",
                ],
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let t = std::time::Instant::now();
        let rotation = lab.meshctl_json(&[
            "ca",
            "rotate",
            "--context",
            "lab-c2",
            "--context",
            "lab-c1",
            "--reload-wait",
            "8s",
            "--timeout",
            "60s",
        ]);
        let took = t.elapsed();
        (rotation, stream.join().expect("stream thread"), took)
    });
    eprintln!("ca rotate: {rotation} in {took:?}");
    assert!(
        took < Duration::from_secs(stream_seconds - 4),
        "the rotation ({took:?}) outlasted the traffic ({stream_seconds} s)"
    );
    for (i, (me, others)) in [("c2", ["c1", "c3"]), ("c1", ["c2", "c3"])]
        .iter()
        .enumerate()
    {
        let c = &rotation["clusters"][i];
        assert_eq!(c["cluster"], *me, "{rotation}");
        assert_ne!(c["old_ca"], c["new_ca"], "{rotation}");
        let importers: Vec<&str> = c["importers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert!(
            others.iter().all(|o| importers.contains(o)),
            "{others:?} import {me}: {rotation}"
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&stream.stdout).unwrap_or_else(|e| {
        panic!(
            "stream report: {e}: {}{}",
            String::from_utf8_lossy(&stream.stdout),
            String::from_utf8_lossy(&stream.stderr)
        )
    });
    eprintln!("stream across the CA rotation: {report}");
    assert_eq!(
        report["broken"], false,
        "the established stream broke: {report}"
    );
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    assert!(report["verified_bytes"].as_u64() > Some(0), "{report}");
    // The rotation is finished: no phase left on the CA Secrets.
    for ctx in ["lab-c1", "lab-c2"] {
        let phase = lab.kubectl(
            ctx,
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                "jsonpath={.metadata.annotations}",
            ],
        );
        assert!(!phase.contains("ca-rotation"), "{ctx}: {phase}");
    }
    // Every client handshakes again, with the new certificates only: the
    // streams are seen broken before c2's mesh-apiserver comes back.
    let feed = |node: &str| agent_get(lab, "c2", node, "/v1/status")["mesh_feed"].clone();
    let connects: Vec<u64> = ["c2-n1", "c2-n2"]
        .iter()
        .map(|n| feed(n)["connects"].as_u64().expect("mesh_feed.connects"))
        .collect();
    lab.ok(&["kill", "c2/mesh-apiserver"]);
    for other in ["c1", "c3"] {
        lab.wait_status(other, "c2 seen disconnected", T, |s| {
            s.remotes.get("c2").is_some_and(|r| !r.connected)
        });
    }
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    for other in ["c1", "c3"] {
        lab.wait_status(other, "c2 connected and synced again", T, |s| {
            s.is_synced_with("c2")
        });
    }
    lab.wait_status("c2", "c1 and c3 synced again, after the restart", T, |s| {
        s.updated_at > restarted && s.is_synced_with("c1") && s.is_synced_with("c3")
    });
    for (node, before) in ["c2-n1", "c2-n2"].iter().zip(connects) {
        eventually(
            &format!("{node}'s node-agent reconnects with its new certificate"),
            || {
                let f = feed(node);
                f["connected"] == true
                    && f["synced"] == true
                    && f["connects"].as_u64().is_some_and(|c| c > before)
            },
        );
    }
    // The old CA's certificate is refused at the handshake, and said so.
    // (How curl words it depends on timing: an "unknown ca" alert, or the
    // connection already closed. The server's own record, fresh since its
    // restart above, is the proof of why.)
    let (ok, after) = call_c2_apiserver_with(lab, &old_cert, &old_key);
    eprintln!("old-CA certificate after the rotation: curl ok={ok} {after}");
    assert!(!ok, "old-CA certificate not refused: {after}");
    let refused = c2_refused_peers(lab);
    assert!(
        refused.contains("wrong-ca"),
        "c2 names the refusal: {refused}"
    );
}

/// `meshctl ca rotate --context lab-c3` killed once step 1 is recorded
/// resumes where it stopped when run again: the same new CA, the remaining
/// steps, and c1 and c2 still synced with c3 afterwards.
fn an_interrupted_ca_rotation_resumes(lab: &Lab) {
    let phase = || {
        lab.kubectl(
            "lab-c3",
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                "jsonpath={.metadata.annotations.meshwork\\.io/ca-rotation}",
            ],
        )
    };
    let mut child = std::process::Command::new(mesh_e2e::bin("meshctl"))
        .env("KUBECONFIG", lab.kubeconfig())
        .args(["ca", "rotate", "--context", "lab-c3", "--reload-wait", "8s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run meshctl");
    let deadline = std::time::Instant::now() + T;
    while phase() != "trust-both" {
        assert!(
            std::time::Instant::now() < deadline,
            "step 1 never recorded: phase {:?}",
            phase()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().expect("kill meshctl");
    let _ = child.wait();
    assert_eq!(phase(), "trust-both", "interrupted in step 2");
    let ca_key = |key: &str| {
        lab.kubectl(
            "lab-c3",
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                &format!("jsonpath={{.data.{key}}}"),
            ],
        )
    };
    let kept = ca_key("new-ca\\.crt");
    assert!(!kept.is_empty(), "the new CA is kept in the Secret");
    let r = lab.meshctl_json(&[
        "ca",
        "rotate",
        "--context",
        "lab-c3",
        "--reload-wait",
        "8s",
        "--timeout",
        "60s",
    ]);
    eprintln!("resumed rotation: {r}");
    let c = &r["clusters"][0];
    assert_eq!(c["resumed_from"], "trust-both", "{r}");
    let steps: Vec<&str> = c["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["reissue certificates", "drop the old CA"], "{r}");
    assert_eq!(phase(), "", "the rotation finished");
    assert_eq!(
        ca_key("ca\\.crt"),
        kept,
        "the resumed rotation finished with the CA the interrupted one made"
    );
    assert_eq!(ca_key("new-ca\\.crt"), "", "the kept new CA is removed");
    for other in ["c1", "c2"] {
        lab.wait_status(other, "c3 synced after the rotation", T, |s| {
            s.is_synced_with("c3")
        });
    }
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
                "a Deployment scales and rolls, and the global service follows",
                deployments::a_deployment_scales_and_rolls_and_the_global_service_follows,
            ),
            (
                "pod to pod on the same node, across nodes and across clusters",
                pod_to_pod_on_the_same_node_across_nodes_and_across_clusters,
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
                "a Node outside its cluster's pod CIDRs is not exported",
                trust_boundary::a_node_outside_its_clusters_pod_cidrs_is_not_exported,
            ),
            (
                "a remote removed from the config receives nothing more",
                trust_boundary::a_remote_removed_from_the_config_receives_nothing_more,
            ),
            (
                "disconnect withdraws and reconnect works",
                disconnect_withdraws_and_reconnect_works,
            ),
            (
                "CA rotation under cross-cluster traffic",
                ca_rotation_under_cross_cluster_traffic,
            ),
            (
                "an interrupted CA rotation resumes",
                an_interrupted_ca_rotation_resumes,
            ),
            (
                "meshctl services, observe and explain show the cross-cluster path",
                meshctl_services_observe_and_explain_show_the_cross_cluster_path,
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
    eventually("pod a reaches pod b across clusters", || {
        reaches(lab, "c1", "shop", "a", &format!("{b}:8080"))
    });
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

fn status_reports_wireguard_on_every_agent(lab: &Lab) {
    for c in ["c1", "c2"] {
        let (st, _) = meshctl_typed::<meshctl::report::StatusReport>(
            lab,
            &["status", "--context", &format!("lab-{c}")],
        );
        assert_eq!(
            (st.agents.ready, st.agents.encryption.as_str()),
            (2, "wireguard"),
            "{c}: {st:#?}"
        );
    }
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

#[test]
fn encrypted_datapath_scenarios_on_one_lab() {
    let lab = Lab::up("enc", 2, 2, true);
    // The scenarios that need only kube contexts, as kind-mesh.sh runs them
    // against real clusters (tests/contexts.rs).
    run_scenarios(
        &lab.contexts(&["lab-c1", "lab-c2"]),
        &mesh_e2e::portable::scenarios(),
    );
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
                "meshctl status reports WireGuard on every agent",
                status_reports_wireguard_on_every_agent,
            ),
            (
                "an encrypted agent restart keeps its key and the stream recovers",
                an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers,
            ),
            (
                "meshctl encryption status and explain see the WireGuard peers",
                meshctl_encryption_status_and_explain_see_the_wireguard_peers,
            ),
            (
                "meshctl encryption rotate-key: peers follow, traffic resumes",
                meshctl_rotate_key_peers_follow_and_traffic_resumes,
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

/// `meshctl <args> -o json`, parsed into `T`; returns it with the exit code.
fn meshctl_typed<T: serde::de::DeserializeOwned>(lab: &Lab, args: &[&str]) -> (T, Option<i32>) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = lab.meshctl(&all);
    let v: T = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "meshctl {args:?} -o json does not parse ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code())
}

/// Polls `meshctl <args> -o json` until `done` holds (bounded by `T`).
fn meshctl_until<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    lab: &Lab,
    args: &[&str],
    what: &str,
    done: impl Fn(&T, Option<i32>) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (v, code) = meshctl_typed::<T>(lab, args);
        if done(&v, code) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not reached within {T:?}; last (exit {code:?}): {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A global service with backends in c1 and c2: `meshctl services` shows
/// both clusters' backends; requests from c1 to it appear in `meshctl
/// observe` with their verdict and cluster; `meshctl explain` passes every
/// hop (WireGuard is off in this lab: skipped, said so) and names what is
/// wrong for a service without backends; every new command's --help runs.
fn meshctl_services_observe_and_explain_show_the_cross_cluster_path(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus, ObserveReport, ServicesReport, Verdict};
    for cmd in [
        &["observe", "--help"][..],
        &["services", "--help"],
        &["explain", "--help"],
        &["encryption", "status", "--help"],
    ] {
        let out = lab.meshctl(cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Examples:"),
            "meshctl {cmd:?}: {text}"
        );
    }
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1b",
        "--label=app=web",
    ]);
    annotate_web(lab, "lab-c1", "service.meshwork.io/affinity-");
    let services: ServicesReport = meshctl_until(
        lab,
        &["services", "--context", "lab-c1"],
        "shop/web with backends in c1 and c2",
        |r: &ServicesReport, code| {
            code == Some(0)
                && r.services.iter().any(|s| {
                    s.name == "web"
                        && s.backends_by_cluster.get("c1") == Some(&1)
                        && s.backends_by_cluster.get("c2") == Some(&2)
                })
        },
    );
    let web = services.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(
        (
            services.cluster.as_str(),
            web.namespace.as_str(),
            web.affinity.as_str(),
            web.shared
        ),
        ("c1", "shop", "none", true)
    );
    assert!(
        services.services.iter().all(|s| s.name != "internal"),
        "a non-global Service is listed: {services:#?}"
    );
    assert!(services.datapath_node.is_some() && services.unreachable.is_empty());

    // Traffic from c1 to the global service, answered by both clusters.
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
    ask_until(
        lab,
        &format!("{}:80", vip.trim()),
        "meshctl: both clusters",
        |c| c.keys().map(String::as_str).eq(["c1", "c2"]),
    );
    let observed: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c1",
            "--pod",
            "shop/client",
            "--cluster",
            "c2",
            "--last",
            "50",
        ],
        "a forwarded flow from shop/client to c2",
        |r: &ObserveReport, code| {
            code == Some(0)
                && r.flows.iter().any(|f| {
                    f.verdict == Verdict::Forwarded
                        && f.destination.cluster.as_deref() == Some("c2")
                })
        },
    );
    let f = observed
        .flows
        .iter()
        .find(|f| f.verdict == Verdict::Forwarded && f.destination.cluster.as_deref() == Some("c2"))
        .unwrap();
    assert_eq!(
        (
            f.source.namespace.as_deref(),
            f.source.pod.as_deref(),
            f.source.cluster.as_deref(),
            f.cluster.as_str(),
            f.destination.port
        ),
        (Some("shop"), Some("client"), Some("c1"), "c1", 8080),
        "{f:#?}"
    );
    assert!(f.node.starts_with("c1-"), "{f:#?}");
    // The far end saw it too, with the backend pod named.
    let far: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c2",
            "--pod-namespace",
            "shop",
            "--cluster",
            "c1",
            "--last",
            "50",
        ],
        "c2's agents saw c1's client",
        |r: &ObserveReport, _| {
            r.flows.iter().any(|f| {
                f.source.cluster.as_deref() == Some("c1")
                    && f.destination
                        .pod
                        .as_deref()
                        .is_some_and(|p| p.starts_with("web-"))
            })
        },
    );
    assert!(far.unreachable.is_empty(), "{far:#?}");
    meshctl_observe_follow_streams_new_flows(lab, &format!("{}:80", vip.trim()));

    // explain: every hop of the working path passes.
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/web:80",
        ],
    );
    assert_eq!(code, Some(0), "{ex:#?}");
    assert!(ex.ok, "{ex:#?}");
    let steps: Vec<&str> = ex.hops.iter().map(|h| h.step.as_str()).collect();
    assert_eq!(steps, ["source", "agent", "identity", "service"], "{ex:#?}");
    // Every hop of a working path is ✔ (the identity too: the agent
    // resolved the pod's labels from the mesh feed).
    for h in &ex.hops {
        assert_eq!(h.status, HopStatus::Pass, "{h:#?}");
    }
    assert_eq!(ex.backends.len(), 3, "{ex:#?}");
    for b in &ex.backends {
        assert!(b.ok, "{b:#?}");
        let want: &[&str] = if b.cluster.as_deref() == Some("c2") {
            &[
                "remote cluster",
                "route",
                "egress policy",
                "wireguard",
                "destination",
                "ingress policy",
            ]
        } else {
            &[
                "route",
                "egress policy",
                "wireguard",
                "destination",
                "ingress policy",
            ]
        };
        assert_eq!(
            b.hops.iter().map(|h| h.step.as_str()).collect::<Vec<_>>(),
            want,
            "{b:#?}"
        );
        for h in &b.hops {
            let expected = if h.step == "wireguard" {
                HopStatus::Skip
            } else {
                HopStatus::Pass
            };
            assert_eq!(h.status, expected, "{h:#?}");
        }
        assert!(
            b.pod.as_deref().is_some_and(|p| p.starts_with("shop/web-")),
            "{b:#?}"
        );
    }
    assert_eq!(
        ex.backends
            .iter()
            .filter(|b| b.cluster.as_deref() == Some("c2"))
            .count(),
        2
    );
    assert!(
        !ex.flows.is_empty(),
        "explain shows the last flows: {ex:#?}"
    );
    // The table a person reads: one ✔ line per hop, the verdict last.
    let out = lab.meshctl(&[
        "explain",
        "--context",
        "lab-c1",
        "shop/client",
        "shop/web:80",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("✔ shop/client can reach shop/web:80")),
        "{text}"
    );

    // A destination that does not exist: exit 3, the ✘ hop says why.
    let (bad, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/nowhere:80",
        ],
    );
    assert_eq!(code, Some(3), "{bad:#?}");
    assert!(
        !bad.ok && bad.summary.contains("neither a Service nor a Pod"),
        "{bad:#?}"
    );

    meshctl_explain_and_observe_name_a_service_without_backends(lab);
    meshctl_explain_names_a_stale_remote_cluster(lab);
    lab.ok(&[
        "pod",
        "del",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1b",
    ]);
}

/// In the encrypted lab: `meshctl encryption status` shows every node's key
/// published and its peers; the peer no pod has talked to yet has no
/// handshake, which is named and makes the command exit 3. `meshctl explain`
/// across clusters passes the WireGuard hop with its last handshake.
fn meshctl_encryption_status_and_explain_see_the_wireguard_peers(lab: &Lab) {
    use meshctl::report::{EncryptionStatusReport, ExplainReport, HopStatus};
    let (st, code) = meshctl_typed::<EncryptionStatusReport>(
        lab,
        &["encryption", "status", "--context", "lab-c1"],
    );
    assert_eq!(
        st.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        ["c1-n1", "c1-n2"],
        "{st:#?}"
    );
    for n in &st.nodes {
        let dev = n.device.as_ref().expect("encryption on");
        assert_eq!(n.mode, "wireguard");
        assert!(dev.key_published && dev.public_key.is_some(), "{n:#?}");
        assert_eq!(
            dev.peers.len(),
            3,
            "every other node of both clusters: {n:#?}"
        );
    }
    let n1 = st.nodes[0].device.as_ref().unwrap();
    assert!(
        n1.peers
            .iter()
            .filter(|p| p.last_handshake_seconds_ago.is_some())
            .count()
            >= 2,
        "pod a talked to c1-n2 and c2-n2: {n1:#?}"
    );
    let silent = st
        .nodes
        .iter()
        .flat_map(|n| n.device.iter().flat_map(|d| d.peers.iter()))
        .filter(|p| p.last_handshake_seconds_ago.is_none())
        .count();
    if silent > 0 {
        assert_eq!(
            code,
            Some(3),
            "a peer without handshake must fail the check: {st:#?}"
        );
        assert_eq!(st.problems.len(), silent, "{st:#?}");
        assert!(
            st.problems
                .iter()
                .all(|p| p.contains("never completed a handshake")),
            "{st:#?}"
        );
    } else {
        assert_eq!(code, Some(0), "{st:#?}");
    }

    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "--destination-context",
            "lab-c2",
            "shop/a",
            "shop/b:8080",
        ],
    );
    assert_eq!(code, Some(0), "{ex:#?}");
    assert!(ex.ok, "{ex:#?}");
    let b = &ex.backends[0];
    assert_eq!(
        (b.cluster.as_deref(), b.pod.as_deref(), b.node.as_deref()),
        (Some("c2"), Some("shop/b"), Some("c2-n2"))
    );
    let wg = b.hops.iter().find(|h| h.step == "wireguard").unwrap();
    assert!(
        wg.status == HopStatus::Pass && wg.detail.contains("last handshake"),
        "{wg:#?}"
    );
    let route = b.hops.iter().find(|h| h.step == "route").unwrap();
    assert!(
        route.status == HopStatus::Pass
            && route
                .detail
                .contains(&format!("dev {}", lab.wg_interface(1, 1))),
        "pod traffic to c2 goes through the WireGuard device: {route:#?}"
    );
}

/// `meshctl encryption rotate-key --node c1-n1`: the node gets a new key,
/// publishes it on its Node, the other cluster's node peers with the new
/// key, and pod traffic across clusters resumes (bounded wait).
fn meshctl_rotate_key_peers_follow_and_traffic_resumes(lab: &Lab) {
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

/// Kills a child process when dropped (also when the scenario panics).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `meshctl observe --follow -o json` prints one flow per line as requests
/// happen.
fn meshctl_observe_follow_streams_new_flows(lab: &Lab, addr: &str) {
    use std::io::BufRead as _;
    let mut child = KillOnDrop(
        std::process::Command::new(mesh_e2e::bin("meshctl"))
            .env("KUBECONFIG", lab.kubeconfig())
            .args([
                "observe",
                "--context",
                "lab-c1",
                "--pod",
                "shop/client",
                "--follow",
                "--last",
                "0",
                "-o",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("meshctl observe --follow"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let flow: meshctl::report::FlowRecord = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a followed line is not a flow ({e}): {line}"));
            if tx.send(flow).is_err() {
                return;
            }
        }
    });
    // The follower needs a moment to open its streams.
    std::thread::sleep(Duration::from_millis(500));
    who_answers(lab, addr, 3);
    let flow = rx
        .recv_timeout(T)
        .expect("meshctl observe --follow printed no flow for new requests");
    assert_eq!(
        (flow.source.namespace.as_deref(), flow.source.pod.as_deref()),
        (Some("shop"), Some("client")),
        "{flow:#?}"
    );
}

/// A Service whose selector matches no pod: `meshctl explain` stops at the
/// service hop with "no backends" (exit 3), and the request the client
/// makes anyway shows in `meshctl observe --verdict dropped` with the
/// datapath's reason.
fn meshctl_explain_and_observe_name_a_service_without_backends(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus, ObserveReport, Verdict};
    lab.apply(
        "lab-c1",
        r#"
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
    );
    let ex: ExplainReport = meshctl_until(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/empty",
        ],
        "explain names the missing backends",
        |r: &ExplainReport, code| {
            code == Some(3)
                && r.hops.iter().any(|h| {
                    h.step == "service"
                        && h.status == HopStatus::Fail
                        && h.detail.contains("no backends")
                })
        },
    );
    assert!(!ex.ok && ex.summary.contains("no backends"), "{ex:#?}");
    let vip = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "empty",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let vip = vip.trim().to_string();
    let answers = who_answers(lab, &format!("{vip}:80"), 2);
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    let dropped: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c1",
            "--pod",
            "shop/client",
            "--verdict",
            "dropped",
            "--last",
            "50",
        ],
        "the dropped request to the empty service",
        |r: &ObserveReport, _| {
            r.flows
                .iter()
                .any(|f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(vip.as_str()))
        },
    );
    let f = dropped
        .flows
        .iter()
        .find(|f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(vip.as_str()))
        .unwrap();
    assert_eq!(
        (f.verdict, f.drop_reason.as_deref(), f.destination.port),
        (Verdict::Dropped, Some("no_service_backend"), 80),
        "{f:#?}"
    );
    lab.kubectl("lab-c1", &["-n", "shop", "delete", "service", "empty"]);
}

/// c2's mesh-apiserver is lost: `meshctl explain` still passes through c1's
/// backend, and marks c2's backends ✘ at the remote-cluster hop, saying
/// the cluster is stale; after the restart everything passes again.
fn meshctl_explain_names_a_stale_remote_cluster(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus};
    lab.ok(&["kill", "c2/mesh-apiserver"]);
    lab.wait_status("c1", "c2 marked stale", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.stale_since.is_some())
    });
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/web:80",
        ],
    );
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    lab.wait_status("c1", "c2 back and synced", T, |s| {
        s.is_synced_with("c2") && s.remotes["c2"].stale_since.is_none()
    });
    assert_eq!(code, Some(0), "c1's own backend still works: {ex:#?}");
    let c2: Vec<_> = ex
        .backends
        .iter()
        .filter(|b| b.cluster.as_deref() == Some("c2"))
        .collect();
    assert_eq!(c2.len(), 2, "stale backends are kept: {ex:#?}");
    for b in c2 {
        let h = &b.hops[0];
        assert!(
            !b.ok
                && h.step == "remote cluster"
                && h.status == HopStatus::Fail
                && h.detail.contains("stale"),
            "{b:#?}"
        );
    }
    assert!(
        ex.summary.contains("1 of 3") && ex.summary.contains("others fail"),
        "{}",
        ex.summary
    );
}
