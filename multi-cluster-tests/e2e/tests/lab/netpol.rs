//! Kubernetes NetworkPolicy, against the cases of the upstream e2e suite
//! (kubernetes/kubernetes `test/e2e/network/netpol`): the same model
//! (namespaces x, y, z; pods a, b, c labelled `pod=<name>`, serving 80 and
//! 81 on TCP and UDP behind a Service each, probed through its ClusterIP),
//! the same policies and the same expected reachability after each step,
//! transcribed as data in `netpol_cases.json`. The driver is ours.
//!
//! Each case starts from no policy and full reachability; after each step
//! the whole 9×9 matrix is probed (all pairs at once) until it matches or
//! 10 s pass, as upstream retries. A pod to itself is not judged (upstream
//! ignores loopback too).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mesh_e2e::Lab;

use super::requests::pod_ip;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// The node each pod runs on: a and c on the first, b on the second, so
/// every namespace has pairs on one node and across nodes.
fn node_of(pod: &str) -> &'static str {
    if pod == "b" { "c1-n2" } else { "c1-n1" }
}

/// Cases expected to fail, with why: the test fails if one of them passes
/// (update the list) or if any other case fails.
const EXPECTED_FAILURES: &[(u32, &str)] = &[
    (
        34,
        "ipBlock naming a pod's address: pods keep their own identity (Cilium's semantics)",
    ),
    (
        35,
        "ipBlock naming a pod's address: pods keep their own identity (Cilium's semantics)",
    ),
    (
        36,
        "ipBlock naming a pod's address: pods keep their own identity (Cilium's semantics)",
    ),
];

fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn pod_manifest(ns: &str, pod: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: "{pod}", namespace: "{ns}", labels: {{pod: "{pod}"}}}}
spec:
  nodeName: {node}
  containers:
    - name: cont-80-tcp
      image: mesh-echo
      ports:
        - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}
        - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
        - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}
        - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata: {{name: "s-{ns}-{pod}", namespace: "{ns}"}}
spec:
  selector: {{pod: "{pod}"}}
  ports:
    - {{name: service-port-tcp-80, port: 80, protocol: TCP}}
    - {{name: service-port-udp-80, port: 80, protocol: UDP}}
    - {{name: service-port-tcp-81, port: 81, protocol: TCP}}
    - {{name: service-port-udp-81, port: 81, protocol: UDP}}
"#,
        node = node_of(pod)
    )
}

/// The model: namespaces, pods, their Services. Returns pod → (pod IP,
/// ClusterIP).
fn build_model(lab: &Lab) -> BTreeMap<String, (String, String)> {
    for ns in NAMESPACES {
        lab.apply(
            "lab-c1",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{ns}\"}}\n"),
        );
    }
    for ns in NAMESPACES {
        for pod in PODS {
            lab.apply("lab-c1", &pod_manifest(ns, pod));
        }
    }
    let mut out = BTreeMap::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let deadline = Instant::now() + Duration::from_secs(60);
            let ip = loop {
                let ip = pod_ip(lab, "lab-c1", ns, pod);
                let ready = lab.kubectl(
                    "lab-c1",
                    &[
                        "-n",
                        ns,
                        "get",
                        "pod",
                        pod,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ],
                );
                if !ip.trim().is_empty() && ready.trim() == "True" {
                    break ip.trim().to_string();
                }
                assert!(Instant::now() < deadline, "pod {ns}/{pod} not Ready");
                std::thread::sleep(Duration::from_millis(200));
            };
            let vip = lab.kubectl(
                "lab-c1",
                &[
                    "-n",
                    ns,
                    "get",
                    "svc",
                    &format!("s-{ns}-{pod}"),
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ],
            );
            out.insert(format!("{ns}/{pod}"), (ip, vip.trim().to_string()));
        }
    }
    out
}

/// Who reaches whom on `port`/`protocol`, through each target's ClusterIP:
/// the set of (from, to) pairs that did NOT connect (loopback left out).
fn denied_pairs(
    lab: &Lab,
    model: &BTreeMap<String, (String, String)>,
    port: u16,
    udp: bool,
) -> BTreeSet<String> {
    let pods = all_pods();
    let targets: Vec<String> = pods
        .iter()
        .map(|p| format!("{}:{port}", model[p].1))
        .collect();
    std::thread::scope(|s| {
        let rows: Vec<_> = pods
            .iter()
            .map(|from| {
                let targets = &targets;
                s.spawn(move || {
                    let (ns, name) = from.split_once('/').expect("ns/pod");
                    let mut args: Vec<&str> = vec!["probe", "--timeout-ms", "1000"];
                    if udp {
                        args.push("--udp");
                    }
                    args.extend(targets.iter().map(String::as_str));
                    let out = lab.exec(
                        &lab.pod_ns("c1", ns, name),
                        &mesh_e2e::bin("mesh-echo"),
                        &args,
                    );
                    let answered: Vec<bool> =
                        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                            panic!(
                                "probe from {from}: {e}: {}",
                                String::from_utf8_lossy(&out.stderr)
                            )
                        });
                    (from.clone(), answered)
                })
            })
            .collect();
        let mut denied = BTreeSet::new();
        for row in rows {
            let (from, answered) = row.join().expect("probe thread");
            for (to, ok) in pods.iter().zip(answered) {
                if !ok && *to != from {
                    denied.insert(format!("{from}->{to}"));
                }
            }
        }
        denied
    })
}

/// Probes until the denied pairs are `want` or 10 s pass; the difference
/// left, if any.
fn probe_until(
    lab: &Lab,
    model: &BTreeMap<String, (String, String)>,
    port: u16,
    udp: bool,
    want: &BTreeSet<String>,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = denied_pairs(lab, model, port, udp);
        if &got == want {
            return None;
        }
        if Instant::now() >= deadline {
            let wrongly_denied: Vec<_> = got.difference(want).collect();
            let wrongly_allowed: Vec<_> = want.difference(&got).collect();
            return Some(format!(
                "port {port}/{}: refused but expected to connect {wrongly_denied:?}; connected but expected refused {wrongly_allowed:?}",
                if udp { "UDP" } else { "TCP" }
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `{{podIP ns/pod}}` replaced by the pod's address.
fn with_pod_ips(policy: &serde_json::Value, model: &BTreeMap<String, (String, String)>) -> String {
    let mut text = policy.to_string();
    for (pod, (ip, _)) in model {
        text = text.replace(&format!("{{{{podIP {pod}}}}}"), ip);
    }
    text
}

fn kubectl_quiet(lab: &Lab, args: &[&str]) {
    let _ = std::process::Command::new("kubectl")
        .env("KUBECONFIG", lab.kubeconfig())
        .arg("--context=lab-c1")
        .args(args)
        .output();
}

/// Back to the start: no policy, and the labels the model gave to what
/// `case` relabelled.
fn reset(lab: &Lab, case: &serde_json::Value) {
    kubectl_quiet(
        lab,
        &["delete", "networkpolicy", "--all", "--all-namespaces"],
    );
    for step in case["steps"].as_array().into_iter().flatten() {
        if let Some(l) = step.get("label_namespace") {
            let ns = l["namespace"].as_str().unwrap_or_default();
            for k in l["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                kubectl_quiet(lab, &["label", "namespace", ns, &format!("{k}-")]);
            }
        }
        if let Some(l) = step.get("label_pod")
            && let Some((ns, pod)) = l["pod"].as_str().and_then(|p| p.split_once('/'))
        {
            for k in l["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if k != "pod" {
                    kubectl_quiet(lab, &["-n", ns, "label", "pod", pod, &format!("{k}-")]);
                }
            }
        }
    }
}

/// `kubectl <target…> --overwrite k=v…` for each label of `labels`.
fn label(lab: &Lab, target: &[&str], labels: &serde_json::Value) {
    let pairs: Vec<String> = labels
        .as_object()
        .expect("labels")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().expect("value")))
        .collect();
    let mut args = target.to_vec();
    args.push("--overwrite");
    args.extend(pairs.iter().map(String::as_str));
    lab.kubectl("lab-c1", &args);
}

/// Runs one case; the first mismatch, if any.
fn run_case(
    lab: &Lab,
    model: &BTreeMap<String, (String, String)>,
    case: &serde_json::Value,
) -> Option<String> {
    for step in case["steps"].as_array().expect("steps") {
        if let Some(policy) = step.get("apply") {
            lab.apply("lab-c1", &with_pod_ips(policy, model));
        } else if let Some(l) = step.get("label_namespace") {
            let ns = l["namespace"].as_str().expect("namespace");
            label(lab, &["label", "namespace", ns], &l["labels"]);
        } else if let Some(l) = step.get("label_pod") {
            let (ns, pod) = l["pod"]
                .as_str()
                .and_then(|p| p.split_once('/'))
                .expect("ns/pod");
            label(lab, &["-n", ns, "label", "pod", pod], &l["labels"]);
        } else if step.get("delete_all_policies").is_some() {
            for ns in NAMESPACES {
                lab.kubectl("lab-c1", &["-n", ns, "delete", "networkpolicy", "--all"]);
            }
        } else if let Some(p) = step.get("probe") {
            let port = p["port"].as_u64().expect("port") as u16;
            let udp = match p["protocol"].as_str() {
                Some("TCP") => false,
                Some("UDP") => true,
                other => return Some(format!("cannot probe protocol {other:?}")),
            };
            let want: BTreeSet<String> = p["denied"]
                .as_array()
                .expect("denied")
                .iter()
                .map(|d| d.as_str().expect("pair").to_string())
                .collect();
            if let Some(diff) = probe_until(lab, model, port, udp, &want) {
                return Some(diff);
            }
        } else {
            return Some(format!("unknown step {step}"));
        }
    }
    None
}

/// The upstream cases, each from a clean start: every applicable one
/// passes except the listed expected failures, which still fail.
pub(super) fn the_upstream_network_policy_cases_pass(lab: &Lab) {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("netpol_cases.json")).expect("netpol_cases.json");
    let model = build_model(lab);
    let everyone = BTreeSet::new();
    assert_eq!(
        probe_until(lab, &model, 80, false, &everyone),
        None,
        "without policies every pod reaches every other"
    );
    let expected: BTreeMap<u32, &str> = EXPECTED_FAILURES.iter().copied().collect();
    let (mut passed, mut failed, mut not_applicable) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    for case in cases["cases"].as_array().expect("cases") {
        let index = case["index"].as_u64().expect("index") as u32;
        let name = case["name"].as_str().expect("name");
        if case["applicable"] != true {
            not_applicable += 1;
            eprintln!("case {index} not applicable: {}", case["why_not"]);
            continue;
        }
        let t = Instant::now();
        let result = run_case(lab, &model, case);
        reset(lab, case);
        // The next case starts from full reachability again.
        if let Some(stuck) = probe_until(lab, &model, 80, false, &everyone) {
            panic!("after case {index} the policies did not go away: {stuck}");
        }
        match result {
            None => {
                eprintln!(
                    "case {index} passed ({:.1} s): {name}",
                    t.elapsed().as_secs_f64()
                );
                passed.push(index);
            }
            Some(why) => {
                eprintln!("case {index} FAILED: {name}: {why}");
                failed.push((index, name.to_string(), why));
            }
        }
    }
    let applicable = passed.len() + failed.len();
    eprintln!(
        "upstream NetworkPolicy cases: {} of {applicable} applicable passed ({not_applicable} not applicable) in {:.0} s",
        passed.len(),
        start.elapsed().as_secs_f64()
    );
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|(i, _, _)| !expected.contains_key(i))
        .collect();
    let now_passing: Vec<_> = passed.iter().filter(|i| expected.contains_key(i)).collect();
    assert!(
        unexpected.is_empty(),
        "cases failed that should pass: {unexpected:#?}"
    );
    assert!(
        now_passing.is_empty(),
        "cases listed as expected failures pass now (take them off EXPECTED_FAILURES): {now_passing:?}"
    );
}
