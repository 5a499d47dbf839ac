//! The cross-cluster trust boundary in the lab: a cluster exports only what
//! it can own, and a cluster removed from a remote's config loses its open
//! stream at once.

use std::time::{Duration, Instant};

use mesh_e2e::Lab;

const T: Duration = Duration::from_secs(45);

const EVIL_NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: evil
spec:
  podCIDR: 128.0.0.0/1
status:
  addresses:
  - type: InternalIP
    address: 192.168.77.250
"#;

/// The routes of every c1 node.
fn c1_routes(lab: &Lab) -> String {
    ["c1-n1", "c1-n2"]
        .iter()
        .map(|n| {
            let out = std::process::Command::new("ip")
                .args(["-n", &lab.node_ns(n), "route", "show", "table", "all"])
                .output()
                .expect("ip route");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

/// Anyone allowed to create a Node in c2 cannot steer c1's routes: a Node
/// whose pod CIDR lies outside c2's (here half the address space) is not
/// exported. c2 says so with a Warning Event on the Node and in its status;
/// c1 keeps exactly c2's real nodes and no node of c1 gets a route for it.
pub fn a_node_outside_its_clusters_pod_cidrs_is_not_exported(lab: &Lab) {
    let nodes_before = lab.status("c1").remotes["c2"].counts.nodes;
    lab.apply("lab-c2", EVIL_NODE);
    let st = lab.wait_status("c2", "the Node refused at export", T, |s| {
        s.refused_exports.iter().any(|r| r.object == "Node evil")
    });
    let why = &st
        .refused_exports
        .iter()
        .find(|r| r.object == "Node evil")
        .unwrap()
        .reason;
    assert!(
        why.contains("128.0.0.0/1") && why.contains("10.2.0.0/16"),
        "{why}"
    );
    mesh_testbed::Wait::new("a Warning Event on Node evil")
        .timeout(T)
        .interval(Duration::from_millis(300))
        .until(|| {
            let events: serde_json::Value = serde_json::from_str(&lab.kubectl(
                "lab-c2",
                &["get", "events.events.k8s.io", "-A", "-o", "json"],
            ))
            .expect("events JSON");
            events["items"].as_array().is_some_and(|items| {
                items.iter().any(|e| {
                    e["type"] == "Warning"
                        && e["regarding"]["kind"] == "Node"
                        && e["regarding"]["name"] == "evil"
                        && e["note"]
                            .as_str()
                            .is_some_and(|n| n.contains("not exported"))
                })
            })
        });
    // Give a leak every chance to show: c1 has seen c2's changes since.
    std::thread::sleep(Duration::from_secs(3));
    let st = lab.wait_status("c1", "c2 synced", T, |s| s.is_synced_with("c2"));
    assert_eq!(
        st.remotes["c2"].counts.nodes, nodes_before,
        "c1 imported no extra node"
    );
    let routes = c1_routes(lab);
    assert!(
        !routes.contains("128.0.0.0/1") && !routes.contains("192.168.77.250"),
        "a c1 node routes the refused Node's CIDR:\n{routes}"
    );
    lab.kubectl("lab-c2", &["delete", "node", "evil"]);
    lab.wait_status("c2", "the refusal gone with the Node", T, |s| {
        s.refused_exports.is_empty()
    });
}

const PROBE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: after-removal
  namespace: shop
  annotations:
    service.meshwork.io/global: "true"
spec:
  selector:
    app: after-removal
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

/// c1 removes c2 from its config while c2 still has c1 configured: c1
/// closes c2's already open watch, so a global service created in c1
/// afterwards never reaches c2, and c2's status says why. Connecting again
/// lets it through.
pub fn a_remote_removed_from_the_config_receives_nothing_more(lab: &Lab) {
    let services_before = lab.status("c2").remotes["c1"].counts.services;
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "meshwork-system",
            "patch",
            "secret",
            "meshwork-clustermesh",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/c2"}]"#,
        ],
    );
    let removed = Instant::now();
    let st = lab.wait_status("c2", "c1 closed c2's open watch", T, |s| {
        s.remotes.get("c1").is_some_and(|r| !r.connected)
    });
    println!(
        "c2's watch of c1 closed {:?} after the removal",
        removed.elapsed()
    );
    lab.apply("lab-c1", PROBE);
    // Meanwhile c1 exports it (its own status counts its own services
    // nowhere, so wait on c3, which is still connected to c1).
    lab.wait_status("c3", "c1's new service reaches c3", T, |s| {
        s.remotes
            .get("c1")
            .is_some_and(|r| r.counts.services == services_before + 1)
    });
    // c3 has it, so an open watch would have delivered it to c2 by now;
    // give it a few seconds more. c2 may meanwhile withdraw c1's stale
    // state (the lab's stale timeout is 20 s, and under load the wait above
    // can take most of it), so "did not grow" is the claim, not "unchanged".
    std::thread::sleep(Duration::from_secs(5));
    let st2 = lab.status("c2");
    let c1 = &st2.remotes["c1"];
    assert!(
        c1.counts.services <= services_before,
        "the service created after the removal reached c2: {c1:?} (first seen {st:?})"
    );
    let why = c1.refused.clone().unwrap_or_default();
    assert!(
        why.contains("c1") && why.contains("clustermesh config"),
        "c2's status says why: {c1:?}"
    );
    let r = lab.meshctl_json(&[
        "connect",
        "--context",
        "lab-c1",
        "--destination-context",
        "lab-c2",
        "--timeout",
        "60s",
    ]);
    assert_eq!(r["synced"], true, "{r}");
    lab.wait_status("c2", "c1's new service once connected again", T, |s| {
        s.remotes
            .get("c1")
            .is_some_and(|r| r.counts.services == services_before + 1 && r.refused.is_none())
    });
    lab.kubectl(
        "lab-c1",
        &["-n", "shop", "delete", "service", "after-removal"],
    );
    lab.wait_status("c2", "the probe service withdrawn", T, |s| {
        s.remotes
            .get("c1")
            .is_some_and(|r| r.counts.services == services_before)
    });
}
