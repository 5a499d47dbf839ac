//! Workloads the way users write them, end to end: a Deployment made with
//! `kubectl create deployment` backs the global service shop/api. Scaled
//! 3 → 5 → 1 in c1, at each step its pods (spread over c1's nodes by the
//! scheduler, run by the lab's kubelets through the real mesh-cni) appear
//! and go, the EndpointSlice follows, every node-agent's datapath balances
//! c1's ClusterIP to exactly those pods, c2 sees as many c1 backends and its
//! ClusterIP reaches them from a c2 pod. A template change then rolls the
//! pods to a new ReplicaSet with at least one Ready backend at every moment
//! (every EndpointSlice version kubectl's watch saw), and deleting the
//! Deployment takes its ReplicaSets, pods, namespaces and backends along.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::helpers::{T, meshctl_typed};
use super::node_agent::agent_get;
use mesh_e2e::Lab;
use mesh_testbed::Wait;

const API: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  annotations:
    service.meshwork.io/global: "true"
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

/// The ClusterIP of shop/api in `cluster`.
fn vip(lab: &Lab, cluster: &str) -> String {
    lab.kubectl(
        &format!("lab-{cluster}"),
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "api",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )
    .trim()
    .to_string()
}

fn json(lab: &Lab, ctx: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&lab.kubectl(ctx, &all)).expect("kubectl -o json")
}

/// Polls `f` until it returns Some (bounded by `T`), saying what it waited for.
fn wait_for<R>(what: &str, f: impl FnMut() -> Option<R>, last: impl Fn() -> String) -> R {
    Wait::new(what)
        .timeout(T)
        .interval(Duration::from_millis(300))
        .until_some_or(f, last)
}

/// The Deployment's pods in c1 once there are `n`, all Running and Ready
/// with an address: their `ip:8080`s, names and nodes.
fn ready_pods(lab: &Lab, n: usize) -> (BTreeSet<String>, BTreeSet<String>, Vec<String>) {
    let list = || {
        json(
            lab,
            "lab-c1",
            &["-n", "shop", "get", "pods", "-l", "app=api"],
        )
    };
    wait_for(
        &format!("{n} Ready pods of deployment shop/api"),
        || {
            let items = list()["items"].as_array().cloned().unwrap_or_default();
            let ready: Vec<&Value> = items
                .iter()
                .filter(|p| {
                    p["status"]["podIP"].is_string()
                        && p["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .collect();
            (items.len() == n && ready.len() == n).then(|| {
                (
                    ready
                        .iter()
                        .map(|p| format!("{}:8080", p["status"]["podIP"].as_str().unwrap()))
                        .collect(),
                    ready
                        .iter()
                        .map(|p| format!("shop/{}", p["metadata"]["name"].as_str().unwrap()))
                        .collect(),
                    ready
                        .iter()
                        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
                        .collect(),
                )
            })
        },
        || list().to_string(),
    )
}

/// The `ip:port`s of the ready endpoints of shop/api's EndpointSlices in c1.
fn slice_endpoints(lab: &Lab) -> BTreeSet<String> {
    let slices = json(
        lab,
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=api",
        ],
    );
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .map(|e| format!("{}:8080", e["addresses"][0].as_str().unwrap()))
        .collect()
}

/// The backends node `node`'s datapath balances `vip:80` to.
fn datapath_backends(lab: &Lab, node: &str, vip: &str) -> BTreeSet<String> {
    let cluster = node.split('-').next().unwrap();
    agent_get(lab, cluster, node, "/v1/services")
        .as_array()
        .expect("a list of services")
        .iter()
        .filter(|s| s["frontend"]["ip"] == vip && s["frontend"]["port"] == 80)
        .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| format!("{}:{}", b["ip"].as_str().unwrap(), b["port"]))
        .collect()
}

/// How many backends per cluster `meshctl services` shows for shop/api.
fn meshctl_backends(lab: &Lab, cluster: &str) -> std::collections::BTreeMap<String, usize> {
    let (r, _) = meshctl_typed::<meshctl::report::ServicesReport>(
        lab,
        &["services", "--context", &format!("lab-{cluster}")],
    );
    r.services
        .iter()
        .find(|s| s.namespace == "shop" && s.name == "api")
        .map(|s| s.backends_by_cluster.clone())
        .unwrap_or_default()
}

/// Asks `vip:80` from pod shop/api-client in c2 until rounds of 20 are all
/// answered by c1 pods of `expected`, and every one of them has answered.
fn c2_reaches_exactly(lab: &Lab, vip: &str, expected: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    let deadline = Instant::now() + T;
    while &seen != expected {
        assert!(
            Instant::now() < deadline,
            "c2's shop/api {vip}: answered by {seen:?}, want {expected:?}; last round: {last}"
        );
        let out = lab.exec(
            &lab.pod_ns("c2", "shop", "api-client"),
            &mesh_e2e::bin("mesh-echo"),
            &[
                "ask",
                &format!("{vip}:80"),
                "-c",
                "20",
                "--timeout-ms",
                "1000",
            ],
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let answers: Vec<Option<(String, String)>> = last
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("mesh-echo JSON");
                Some((
                    v["answer"]["cluster"].as_str()?.to_string(),
                    v["answer"]["pod"].as_str()?.to_string(),
                ))
            })
            .collect();
        let clean = answers.len() == 20
            && answers.iter().all(|a| {
                a.as_ref()
                    .is_some_and(|(c, p)| c == "c1" && expected.contains(p))
            });
        if clean {
            seen.extend(answers.into_iter().flatten().map(|(_, p)| p));
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Everything that must follow the Deployment at `n` replicas.
fn check_follows(lab: &Lab, n: usize, vips: &(String, String)) {
    let (addrs, names, nodes) = ready_pods(lab, n);
    let on_node = |node: &str| nodes.iter().filter(|n| n.as_str() == node).count();
    let (a, b) = (on_node("c1-n1"), on_node("c1-n2"));
    assert!(
        a.abs_diff(b) <= 1,
        "the scheduler spreads {n} pods over c1's nodes: {a} on c1-n1, {b} on c1-n2"
    );
    wait_for(
        &format!("shop/api's EndpointSlice holds the {n} pods"),
        || (slice_endpoints(lab) == addrs).then_some(()),
        || format!("{:?}, want {addrs:?}", slice_endpoints(lab)),
    );
    for node in ["c1-n1", "c1-n2"] {
        wait_for(
            &format!("{node}'s datapath balances c1's ClusterIP to the {n} pods"),
            || (datapath_backends(lab, node, &vips.0) == addrs).then_some(()),
            || {
                format!(
                    "{:?}, want {addrs:?}",
                    datapath_backends(lab, node, &vips.0)
                )
            },
        );
    }
    for node in ["c2-n1", "c2-n2"] {
        wait_for(
            &format!("{node}'s datapath balances c2's ClusterIP to c1's {n} pods"),
            || (datapath_backends(lab, node, &vips.1) == addrs).then_some(()),
            || {
                format!(
                    "{:?}, want {addrs:?}",
                    datapath_backends(lab, node, &vips.1)
                )
            },
        );
    }
    wait_for(
        &format!("meshctl services in c2 shows {n} backends in c1"),
        || (meshctl_backends(lab, "c2").get("c1") == Some(&n)).then_some(()),
        || format!("{:?}", meshctl_backends(lab, "c2")),
    );
    c2_reaches_exactly(lab, &vips.1, &names);
    eprintln!("shop/api at {n}: pods {names:?} on {nodes:?}; c2 reaches each");
}

/// The least ready endpoints of shop/api in any EndpointSlice version a
/// `kubectl get --watch` saw (deleted slices count as none).
fn least_ready_in(watch: &str) -> (usize, usize) {
    let mut least = usize::MAX;
    let mut versions = 0;
    for ev in serde_json::Deserializer::from_str(watch).into_iter::<Value>() {
        let ev = ev.expect("kubectl watch output is JSON");
        let ready = if ev["type"] == "DELETED" {
            0
        } else {
            ev["object"]["endpoints"].as_array().map_or(0, |es| {
                es.iter()
                    .filter(|e| e["conditions"]["ready"] == true)
                    .count()
            })
        };
        least = least.min(ready);
        versions += 1;
    }
    (least, versions)
}

pub(super) fn a_deployment_scales_and_rolls_and_the_global_service_follows(lab: &Lab) {
    lab.apply("lab-c1", API);
    lab.apply("lab-c2", API);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=shop",
        "--name=api-client",
        "--label=app=api-client",
    ]);
    let vips = (vip(lab, "c1"), vip(lab, "c2"));
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "create",
            "deployment",
            "api",
            "--image=mesh-echo",
            "--replicas=3",
            "--port=8080",
        ],
    );
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "rollout",
            "status",
            "deployment/api",
            "--timeout=60s",
        ],
    );
    let d = json(lab, "lab-c1", &["-n", "shop", "get", "deployment", "api"]);
    for f in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
    ] {
        assert_eq!(d["status"][f], 3, "{f}: {}", d["status"]);
    }
    check_follows(lab, 3, &vips);
    let first_rs = json(
        lab,
        "lab-c1",
        &["-n", "shop", "get", "replicasets", "-l", "app=api"],
    )["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a ReplicaSet")
        .to_string();
    for n in [5, 1] {
        let before: BTreeSet<String> = ready_pods(lab, if n == 5 { 3 } else { 5 }).1;
        lab.kubectl(
            "lab-c1",
            &[
                "-n",
                "shop",
                "scale",
                "deployment",
                "api",
                &format!("--replicas={n}"),
            ],
        );
        check_follows(lab, n, &vips);
        // Scaled-down pods are gone from their nodes too.
        let now = ready_pods(lab, n).1;
        for gone in before.difference(&now) {
            let name = gone.strip_prefix("shop/").unwrap();
            let ns = lab.pod_ns("c1", "shop", name);
            assert!(
                !std::path::Path::new("/var/run/netns").join(&ns).exists(),
                "{gone} was scaled away but its network namespace {ns} remains"
            );
        }
    }

    // A template change at 1 replica: a naive controller would leave the
    // service with no Ready backend; kubectl's watch records every version.
    let mut watch = std::process::Command::new("kubectl")
        .env("KUBECONFIG", lab.kubeconfig())
        .args([
            "--context=lab-c1",
            "-n",
            "shop",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=api",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get --watch");
    std::thread::sleep(Duration::from_secs(1));
    let old_pod = ready_pods(lab, 1).1;
    lab.kubectl(
        "lab-c1",
        &["-n", "shop", "set", "env", "deployment/api", "COLOR=blue"],
    );
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "rollout",
            "status",
            "deployment/api",
            "--timeout=60s",
        ],
    );
    let new_pod = ready_pods(lab, 1).1;
    wait_for(
        "the EndpointSlice holds only the new pod",
        || (slice_endpoints(lab) == ready_pods(lab, 1).0).then_some(()),
        || format!("{:?}", slice_endpoints(lab)),
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("kubectl watch output");
    let (least, versions) = least_ready_in(&String::from_utf8_lossy(&out.stdout));
    assert!(
        versions >= 3,
        "the watch saw the rollout ({versions} versions)"
    );
    assert!(
        least >= 1,
        "shop/api had no Ready backend at one moment of the rollout ({versions} EndpointSlice versions)"
    );
    assert_ne!(old_pod, new_pod, "the pod was replaced");
    let sets = json(
        lab,
        "lab-c1",
        &["-n", "shop", "get", "replicasets", "-l", "app=api"],
    );
    let sizes: Vec<(String, i64)> = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"].as_str().unwrap().to_string(),
                rs["spec"]["replicas"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(
        sizes.contains(&(first_rs.clone(), 0)),
        "the old ReplicaSet is emptied: {sizes:?}"
    );
    eprintln!(
        "rollout {old_pod:?} → {new_pod:?}: least Ready endpoints {least} over {versions} versions; ReplicaSets {sizes:?}"
    );
    check_follows(lab, 1, &vips);

    // Deleting the Deployment takes everything it made along.
    lab.kubectl("lab-c1", &["-n", "shop", "delete", "deployment", "api"]);
    let last = new_pod
        .iter()
        .next()
        .unwrap()
        .strip_prefix("shop/")
        .unwrap()
        .to_string();
    wait_for(
        "the ReplicaSets, pods and the pod's namespace collected",
        || {
            let rs = json(
                lab,
                "lab-c1",
                &["-n", "shop", "get", "replicasets", "-l", "app=api"],
            );
            let pods = json(
                lab,
                "lab-c1",
                &["-n", "shop", "get", "pods", "-l", "app=api"],
            );
            let netns =
                std::path::Path::new("/var/run/netns").join(lab.pod_ns("c1", "shop", &last));
            (rs["items"].as_array().is_some_and(Vec::is_empty)
                && pods["items"].as_array().is_some_and(Vec::is_empty)
                && !netns.exists())
            .then_some(())
        },
        String::new,
    );
    for (node, vip) in [("c1-n1", &vips.0), ("c2-n1", &vips.1)] {
        wait_for(
            &format!("{node}'s datapath has no backend left for shop/api"),
            || datapath_backends(lab, node, vip).is_empty().then_some(()),
            || format!("{:?}", datapath_backends(lab, node, vip)),
        );
    }
    lab.ok(&[
        "pod",
        "del",
        "--cluster=c2",
        "--node=c2-n1",
        "--namespace=shop",
        "--name=api-client",
    ]);
    for ctx in ["lab-c1", "lab-c2"] {
        lab.kubectl(ctx, &["-n", "shop", "delete", "service", "api"]);
    }
}
