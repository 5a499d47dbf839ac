//! Workloads the way users write them, with the stock kubectl 1.32 against
//! the `mesh-test-apiserver` binary: `kubectl create deployment` (its
//! protobuf body), `scale` (the `/scale` subresource), `set env` (a rolling
//! replacement that waits for new pods to be Ready), `rollout status|undo|
//! history`, and `delete` in the background, the foreground and orphaning.
//!
//! The test plays the kubelet: it marks pods Running and Ready when it
//! chooses, so it can hold a rollout back and see the old pods stay.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::binary::ServerProcess;
use common::kubectl::Kubectl;
use mesh_testbed::Wait;

struct Cluster {
    server: ServerProcess,
    kubectl: Kubectl,
}

impl Cluster {
    /// The server binary and two Ready Nodes, n1 and n2.
    fn start() -> Cluster {
        let server = ServerProcess::start(&[]);
        let c = Cluster {
            kubectl: server.kubectl(),
            server,
        };
        for n in ["n1", "n2"] {
            c.apply(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"
            ));
            c.ok(&[
                "patch",
                "node",
                n,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
            ]);
        }
        c
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl.output(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.kubectl.ok(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        self.kubectl.json(args)
    }

    fn apply(&self, yaml: &str) {
        let path = self.server.dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    fn wait(&self, what: &str, cond: impl FnMut() -> bool) {
        Wait::new(what).timeout(Duration::from_secs(20)).until(cond);
    }

    fn items(&self, kind: &str, selector: &str) -> Vec<Value> {
        self.json(&["get", kind, "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Pods of `selector` once there are exactly `n` (not being deleted).
    fn pods(&self, selector: &str, n: usize) -> Vec<Value> {
        let mut pods = Vec::new();
        self.wait(&format!("{n} pods {selector}"), || {
            pods = self
                .items("pods", selector)
                .into_iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .collect();
            pods.len() == n
        });
        pods
    }

    /// The kubelet's part: pods bound to a node become Running and Ready.
    fn make_ready(&self, pods: &[Value]) {
        for p in pods {
            assert!(
                p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some(),
                "the scheduler binds every pod before it runs: {p}"
            );
            let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}]}});
            self.ok(&[
                "patch",
                "pod",
                name(p),
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ]);
        }
    }

    fn ready_pods(&self, selector: &str) -> usize {
        self.items("pods", selector)
            .iter()
            .filter(|p| {
                p.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count()
    }
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap()
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap()
}

/// Pods per node.
fn spread(pods: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(p["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// Each pod is named `<rs>-<5 characters>`, labelled with the hash and
/// controlled by the ReplicaSet, which is `<deployment>-<hash>` and
/// controlled by the Deployment.
fn assert_owned(deploy: &Value, rs: &Value, pods: &[Value]) {
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("pod-template-hash label");
    assert_eq!(name(rs), format!("{}-{hash}", name(deploy)));
    let controller = |o: &Value| o["metadata"]["ownerReferences"][0].clone();
    assert_eq!(
        controller(rs),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": name(deploy),
            "uid": deploy["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
    );
    for p in pods {
        let suffix = name(p)
            .strip_prefix(&format!("{}-", name(rs)))
            .unwrap_or_else(|| panic!("{} is not named after {}", name(p), name(rs)));
        assert!(
            suffix.len() == 5 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}",
            name(p)
        );
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash);
        assert_eq!(controller(p)["kind"], "ReplicaSet");
        assert_eq!(controller(p)["uid"], rs["metadata"]["uid"]);
        assert_eq!(controller(p)["controller"], true);
    }
}

#[test]
fn kubectl_creates_scales_rolls_back_and_deletes_a_deployment() {
    let c = Cluster::start();
    let asked = c.json(&[
        "create",
        "deployment",
        "web",
        "--image=mesh-echo:1",
        "--replicas=3",
        "--port=8080",
        "--dry-run=client",
    ]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=mesh-echo:1",
        "--replicas=3",
        "--port=8080",
    ]);
    let d = c.json(&["get", "deployment", "web"]);
    // The protobuf body arrived whole: what kubectl meant, plus the defaults.
    let got = &d["spec"]["template"]["spec"]["containers"][0];
    let want = &asked["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (
            &got["name"],
            &got["image"],
            &got["ports"][0]["containerPort"]
        ),
        (
            &want["name"],
            &want["image"],
            &want["ports"][0]["containerPort"]
        )
    );
    assert_eq!(d["spec"]["replicas"], asked["spec"]["replicas"]);
    assert_eq!(d["spec"]["selector"], asked["spec"]["selector"]);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");

    let pods = c.pods("app=web", 3);
    let rs = c.items("replicasets", "app=web");
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_owned(&d, &rs[0], &pods);
    let by_node = spread(&pods);
    assert_eq!(
        by_node.values().copied().collect::<Vec<_>>(),
        [2, 1],
        "{by_node:?}"
    );
    c.make_ready(&pods);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    let st = c.json(&["get", "deployment", "web"])["status"].clone();
    for f in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
    ] {
        assert_eq!(st[f], 3, "{f}: {st}");
    }
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    let table = c.ok(&["get", "deployment", "web"]);
    assert!(
        table.contains("3/3") && table.contains("UP-TO-DATE"),
        "{table}"
    );

    // kubectl scale reads and patches the /scale subresource.
    let scale: Value = serde_json::from_str(&c.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(
        (
            &scale["kind"],
            &scale["spec"]["replicas"],
            &scale["status"]["selector"]
        ),
        (&json!("Scale"), &json!(3), &json!("app=web"))
    );
    for n in [5, 1, 3] {
        c.ok(&["scale", "deployment", "web", &format!("--replicas={n}")]);
        let pods = c.pods("app=web", n);
        let by_node = spread(&pods);
        let (lo, hi) = (by_node.values().min(), by_node.values().max());
        assert!(hi.unwrap() - lo.unwrap() <= 1 || n == 1, "{n}: {by_node:?}");
        c.make_ready(&pods);
        c.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
        assert_eq!(
            c.items("replicasets", "app=web").len(),
            1,
            "scaling makes no new ReplicaSet"
        );
    }
    let bad = c.kubectl(&["scale", "deployment", "web", "--replicas=-1"]);
    assert!(!bad.status.success());

    // A template change: a new ReplicaSet, which gets one surge pod; while
    // it is not Ready the old ReplicaSet keeps all three.
    let first = c.items("replicasets", "app=web").remove(0);
    c.ok(&["set", "env", "deployment/web", "COLOR=blue"]);
    c.wait("a second ReplicaSet with one pod", || {
        c.items("replicasets", "app=web").len() == 2 && c.items("pods", "app=web").len() == 4
    });
    std::thread::sleep(Duration::from_secs(1));
    let old = c.json(&["get", "replicaset", name(&first)]);
    assert_eq!(
        replicas(&old),
        3,
        "the old ReplicaSet waits for a Ready new pod"
    );
    assert_eq!(c.ready_pods("app=web"), 3);
    // Each new pod Ready lets one old one go; never fewer than 3 Ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let not_ready: Vec<Value> = c
            .items("pods", "app=web")
            .into_iter()
            .filter(|p| p["status"]["phase"] != "Running")
            .collect();
        assert!(
            c.ready_pods("app=web") >= 3,
            "fewer than 3 Ready pods mid-rollout"
        );
        c.make_ready(&not_ready);
        let out = c.kubectl(&["rollout", "status", "deployment/web", "--watch=false"]);
        if String::from_utf8_lossy(&out.stdout).contains("successfully rolled out") {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = c.json(&["get", "deployment", "web"]);
    let pods = c.pods("app=web", 3);
    let sets = c.items("replicasets", "app=web");
    let new = sets.iter().find(|r| name(r) != name(&first)).unwrap();
    assert_owned(&d, new, &pods);
    for p in &pods {
        assert_eq!(
            p["spec"]["containers"][0]["env"],
            json!([{"name": "COLOR", "value": "blue"}])
        );
    }
    assert_eq!(replicas(&c.json(&["get", "replicaset", name(&first)])), 0);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );

    // Rolling back reuses the first ReplicaSet, as revision 3.
    c.ok(&["rollout", "undo", "deployment/web"]);
    c.wait("the first ReplicaSet back to 3", || {
        let pods = c.items("pods", "app=web");
        let pending: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["status"]["phase"] != "Running" && p["spec"]["nodeName"].is_string())
            .collect();
        c.make_ready(&pending);
        replicas(&c.json(&["get", "replicaset", name(&first)])) == 3
    });
    let back = c.json(&["get", "replicaset", name(&first)]);
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // Background deletion: the ReplicaSets and pods follow the Deployment.
    c.ok(&["delete", "deployment", "web"]);
    c.wait("ReplicaSets and pods collected", || {
        c.items("replicasets", "app=web").is_empty() && c.items("pods", "app=web").is_empty()
    });
}

#[test]
fn foreground_deletion_waits_for_the_pods_and_orphan_keeps_them() {
    let c = Cluster::start();
    let discovery = c.ok(&["api-resources", "--api-group=apps"]);
    for want in ["deployments", "deploy", "replicasets", "rs"] {
        assert!(discovery.contains(want), "{discovery}");
    }
    c.ok(&["create", "deployment", "fg", "--image=x", "--replicas=1"]);
    let pod = c.pods("app=fg", 1).remove(0);
    // Something else holds the pod: the foreground deletion must wait.
    c.ok(&[
        "patch",
        "pod",
        name(&pod),
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["test.meshwork.io/hold"]}}"#,
    ]);
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    c.wait("the pod marked for deletion", || {
        c.json(&["get", "pod", name(&pod)])
            .pointer("/metadata/deletionTimestamp")
            .is_some()
    });
    let d = c.json(&["get", "deployment", "fg"]);
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let rs = c.items("replicasets", "app=fg");
    assert_eq!(rs.len(), 1, "the ReplicaSet waits for its pod");
    assert_eq!(
        rs[0]["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    c.ok(&[
        "patch",
        "pod",
        name(&pod),
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.wait("the Deployment gone once its pod is", || {
        !c.kubectl(&["get", "deployment", "fg"]).status.success()
            && c.items("replicasets", "app=fg").is_empty()
    });

    c.ok(&["create", "deployment", "or", "--image=x", "--replicas=2"]);
    c.pods("app=or", 2);
    c.ok(&["delete", "deployment", "or", "--cascade=orphan"]);
    let rs = c.items("replicasets", "app=or");
    assert_eq!(rs.len(), 1, "orphaned, not deleted");
    assert!(
        rs[0]["metadata"].get("ownerReferences").is_none(),
        "{}",
        rs[0]
    );
    std::thread::sleep(Duration::from_millis(500));
    let pods = c.pods("app=or", 2);
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == rs[0]["metadata"]["uid"])
    );
    // Deleting the ReplicaSet itself takes its pods.
    c.ok(&["delete", "replicaset", name(&rs[0])]);
    c.pods("app=or", 0);
}
