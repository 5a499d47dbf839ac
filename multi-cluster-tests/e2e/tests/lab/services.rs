//! Services across clusters: only global ones cross, a global Service
//! served by both clusters (with affinity), a NodePort on each node's
//! address, session affinity ClientIP.

use mesh_e2e::Lab;

use super::helpers::{SERVICES, T, annotate_web, eventually};
use super::requests::{ask_until, reaches, who_answers};

pub(super) fn only_global_services_cross_clusters(lab: &Lab) {
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

/// A global Service in c1 and c2: c1's ClusterIP is served by both
/// clusters' backends; not by c2's while c2 says shared=false; affinity
/// remote sends c1's clients to c2; affinity
/// local keeps c1's clients on c1 while c1 has a backend, and fails over to
/// c2 when it has none.
pub(super) fn a_global_service_is_served_by_both_clusters_with_affinity(lab: &Lab) {
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
pub(super) fn node_port_answers_on_each_node_address(lab: &Lab) {
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
pub(super) fn session_affinity_keeps_a_client_on_one_pod(lab: &Lab) {
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
