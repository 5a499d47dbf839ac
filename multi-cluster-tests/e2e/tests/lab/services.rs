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
/// c1 (another node, another cluster), with c2's backends (any node's:
/// `externalTrafficPolicy` defaults to Cluster).
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
        let mut pods = std::collections::BTreeSet::new();
        for a in lab.ask("c1", "shop", "client", &addr, 12) {
            assert_eq!(a["cluster"].as_str(), Some("c2"), "NodePort on {node}: {a}");
            pods.insert(a["pod"].as_str().unwrap_or_default().to_string());
        }
        assert!(
            pods.contains(pod) || pods.len() > 1,
            "NodePort on {node} answered by {pods:?}"
        );
    }
    lab.kubectl("lab-c2", &["-n", "shop", "delete", "svc", "web-np"]);
}

const NODE_PORT_ONE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: np-one
  namespace: np
spec:
  type: NodePort
  selector: {app: np-one}
  ports: [{port: 8080, targetPort: 8080, nodePort: 30081, protocol: TCP}]
"#;

/// `mesh-echo ask` from the lab's outside host (in no cluster): each
/// request's answer, or None.
fn ask_from_outside(lab: &Lab, addr: &str, n: u32) -> Vec<Option<serde_json::Value>> {
    let out = lab.exec(
        &lab.outside_ns(),
        &mesh_e2e::bin("mesh-echo"),
        &["ask", addr, "-c", &n.to_string(), "--timeout-ms", "1000"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("mesh-echo JSON");
            v.get("answer").cloned()
        })
        .collect()
}

/// A node's InternalIP, as kubectl reads it.
pub(super) fn node_address(lab: &Lab, ctx: &str, node: &str) -> String {
    lab.kubectl(
        ctx,
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    )
    .trim()
    .to_string()
}

/// A NodePort whose one backend runs on c2-n1, asked from the outside
/// host: with `externalTrafficPolicy: Cluster` the node without a backend
/// (c2-n2) answers every request too, and the backend sees that node's
/// address (SNAT, so replies come back through it); with `Local` only
/// c2-n1 answers, and the backend sees the client's own address.
pub(super) fn node_port_traffic_policies_from_the_outside_host(lab: &Lab) {
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=np",
        "--name=np-one",
        "--label=app=np-one",
    ]);
    lab.apply("lab-c2", NODE_PORT_ONE);
    let (with, without) = (
        node_address(lab, "lab-c2", "c2-n1"),
        node_address(lab, "lab-c2", "c2-n2"),
    );
    let status: serde_json::Value =
        serde_json::from_str(&lab.ok(&["status", "--json"])).expect("status JSON");
    let outside = status["external"]["ip"]
        .as_str()
        .expect("external.ip")
        .to_string();
    let at = |ip: &str| format!("{ip}:30081");
    eventually("the NodePort answers on the node without a backend", || {
        ask_from_outside(lab, &at(&without), 1)[0].is_some()
    });
    let seen = |ip: &str| -> Vec<Option<(String, String)>> {
        ask_from_outside(lab, &at(ip), 6)
            .into_iter()
            .map(|a| {
                a.map(|a| {
                    (
                        a["pod"].as_str().unwrap_or_default().to_string(),
                        a["peer"].as_str().unwrap_or_default().to_string(),
                    )
                })
            })
            .collect()
    };
    let all = |who: (&str, &str)| vec![Some((who.0.to_string(), who.1.to_string())); 6];
    assert_eq!(
        seen(&without),
        all(("np/np-one", &without)),
        "Cluster: through c2-n2 every request is answered, the backend sees c2-n2"
    );
    assert_eq!(
        seen(&with),
        all(("np/np-one", &outside)),
        "Cluster: through c2-n1 (local backend) the backend sees the client"
    );
    lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "np",
            "patch",
            "svc",
            "np-one",
            "-p",
            r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
        ],
    );
    eventually("Local: the node without a backend stops answering", || {
        ask_from_outside(lab, &at(&without), 3)
            .iter()
            .all(Option::is_none)
    });
    assert_eq!(
        seen(&with),
        all(("np/np-one", &outside)),
        "Local: c2-n1 answers, and the backend sees the client's address"
    );
    lab.kubectl("lab-c2", &["-n", "np", "delete", "svc", "np-one"]);
    lab.ok(&[
        "pod",
        "del",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=np",
        "--name=np-one",
    ]);
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

fn lb_service(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: lb}}
spec:
  type: LoadBalancer
  selector: {{app: lb-one}}
  ports: [{{port: 8080, targetPort: 8080, protocol: TCP}}]
"#
    )
}

/// The LoadBalancer address LB-IPAM wrote (None while pending).
fn lb_address(lab: &Lab, name: &str) -> Option<String> {
    let ip = lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "lb",
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
    );
    let ip = ip.trim();
    (!ip.is_empty()).then(|| ip.to_string())
}

/// The outside host reaches `ip` through `node` (a static route, as a BGP
/// or L2 announcement would make).
fn route_from_outside(lab: &Lab, ip: &str, node: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.outside_ns(), "ip", "route", "replace"])
        .args([&format!("{ip}/32"), "via", node])
        .output()
        .expect("ip route");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// LB-IPAM in c2 (pool `lab`, two addresses): a LoadBalancer Service gets
/// an address of the pool, `kubectl get svc` shows it, and the outside
/// host reaches it through every node (the backend runs on one); a second
/// gets the other address; a third stays pending with a Warning Event
/// naming the pool, and gets an address once one is freed. An externalIP
/// is served the same way.
pub(super) fn load_balancer_addresses_come_from_the_pool_and_external_ips_are_served(lab: &Lab) {
    let pool = mesh_lab::plan::lb_pool(2);
    let in_pool = |name: &str| {
        lb_address(lab, name)
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| pool.contains(&ip))
    };
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=lb",
        "--name=lb-one",
        "--label=app=lb-one",
    ]);
    lab.apply("lab-c2", &lb_service("lb-a"));
    eventually("lb-a gets an address", || in_pool("lb-a"));
    let a = lb_address(lab, "lb-a").expect("address");
    let table = lab.kubectl("lab-c2", &["-n", "lb", "get", "svc", "lb-a"]);
    assert!(table.contains(&a), "kubectl get svc shows {a}: {table}");
    let nodes = [
        node_address(lab, "lab-c2", "c2-n1"),
        node_address(lab, "lab-c2", "c2-n2"),
    ];
    let served_through_every_node = |ip: &str, port: u16| {
        for node in &nodes {
            route_from_outside(lab, ip, node);
            let addr = format!("{ip}:{port}");
            eventually(&format!("{addr} through {node}"), || {
                ask_from_outside(lab, &addr, 1)[0].is_some()
            });
            for answer in ask_from_outside(lab, &addr, 3) {
                let a = answer.unwrap_or_else(|| panic!("{addr} through {node}: unanswered"));
                assert_eq!(a["pod"], "lb/lb-one", "{addr} through {node}: {a}");
            }
        }
    };
    served_through_every_node(&a, 8080);

    lab.apply("lab-c2", &lb_service("lb-b"));
    eventually("lb-b gets the other address", || in_pool("lb-b"));
    let b = lb_address(lab, "lb-b").expect("address");
    assert_ne!(a, b);
    lab.apply("lab-c2", &lb_service("lb-c"));
    eventually(
        "lb-c is refused with a Warning Event naming the pool",
        || {
            let events = lab.kubectl("lab-c2", &["-n", "lb", "get", "events", "-o", "json"]);
            events.contains("AllocationFailed")
                && events.contains("pool lab")
                && events.contains("lb-c")
        },
    );
    assert_eq!(lb_address(lab, "lb-c"), None, "lb-c stays pending");
    let table = lab.kubectl("lab-c2", &["-n", "lb", "get", "svc", "lb-c"]);
    assert!(table.contains("<pending>"), "{table}");
    assert_eq!(
        lb_address(lab, "lb-a").as_deref(),
        Some(a.as_str()),
        "nothing else changed"
    );
    assert_eq!(
        lb_address(lab, "lb-b").as_deref(),
        Some(b.as_str()),
        "nothing else changed"
    );
    lab.kubectl("lab-c2", &["-n", "lb", "delete", "svc", "lb-a"]);
    eventually("lb-c gets the freed address", || {
        lb_address(lab, "lb-c").as_deref() == Some(a.as_str())
    });

    // externalTrafficPolicy Local: a health-check node port that says on
    // which node a backend runs (200 with its count) and where none does
    // (503), asked from the outside host as a load balancer would.
    lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "lb",
            "patch",
            "svc",
            "lb-b",
            "-p",
            r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
        ],
    );
    let hc = lab.kubectl(
        "lab-c2",
        &[
            "-n",
            "lb",
            "get",
            "svc",
            "lb-b",
            "-o",
            "jsonpath={.spec.healthCheckNodePort}",
        ],
    );
    let hc = hc.trim().to_string();
    assert!(!hc.is_empty(), "a healthCheckNodePort was allocated");
    let health = |node: &str| -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{node}/{hc} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 3 cat <&3"
        );
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.outside_ns(), "bash", "-c", &script])
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("c2-n1 reports its local backend", || {
        let r = health(&nodes[0]);
        r.starts_with("HTTP/1.1 200") && r.contains("\"localEndpoints\":1")
    });
    eventually("c2-n2 reports none", || {
        let r = health(&nodes[1]);
        r.starts_with("HTTP/1.1 503") && r.contains("\"localEndpoints\":0")
    });

    // An externalIP (outside the pools), served on every node too.
    let external = "192.168.77.212";
    lab.apply(
        "lab-c2",
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: lb}}
spec:
  selector: {{app: lb-one}}
  externalIPs: ["{external}"]
  ports: [{{port: 8081, targetPort: 8080, protocol: TCP}}]
"#
        ),
    );
    served_through_every_node(external, 8081);

    for svc in ["lb-b", "lb-c", "ext"] {
        lab.kubectl("lab-c2", &["-n", "lb", "delete", "svc", svc]);
    }
    for ip in [a.as_str(), b.as_str(), external] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.outside_ns(), "ip", "route", "del"])
            .arg(format!("{ip}/32"))
            .output();
    }
    lab.ok(&[
        "pod",
        "del",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=lb",
        "--name=lb-one",
    ]);
}

/// A pod's `hostPort` is served on its node's address (mesh-cni chained
/// with the reference portmap plugin, as the chart's conflist does): the
/// outside host reaches the pod through that node, not through another,
/// and the port closes when the pod goes.
pub(super) fn a_host_port_is_served_on_the_pods_node(lab: &Lab) {
    lab.apply(
        "lab-c1",
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: hostport}
---
apiVersion: v1
kind: Pod
metadata: {name: hp, namespace: hostport, labels: {app: hp}}
spec:
  nodeName: c1-n1
  containers:
    - name: echo
      image: mesh-echo
      ports: [{containerPort: 8080, hostPort: 18080, protocol: TCP}]
"#,
    );
    let (with, without) = (
        node_address(lab, "lab-c1", "c1-n1"),
        node_address(lab, "lab-c1", "c1-n2"),
    );
    eventually("the hostPort answers on c1-n1", || {
        ask_from_outside(lab, &format!("{with}:18080"), 1)[0]
            .as_ref()
            .is_some_and(|a| a["pod"] == "hostport/hp")
    });
    assert!(
        ask_from_outside(lab, &format!("{without}:18080"), 2)
            .iter()
            .all(Option::is_none),
        "c1-n2 has no such hostPort"
    );
    lab.kubectl("lab-c1", &["-n", "hostport", "delete", "pod", "hp"]);
    eventually("the hostPort closes with the pod", || {
        ask_from_outside(lab, &format!("{with}:18080"), 1)[0].is_none()
    });
}
