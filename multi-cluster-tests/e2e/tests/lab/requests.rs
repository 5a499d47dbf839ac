//! Requests from pods and who answers them: a pod's address, one request
//! answered or not, and many requests counted by answering cluster.

use std::time::Duration;

use mesh_e2e::Lab;
use mesh_testbed::Wait;

use super::helpers::T;

pub(super) fn pod_ip(lab: &Lab, ctx: &str, namespace: &str, name: &str) -> String {
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

/// Who answered each of `n` requests to `addr` from pod shop/client in c1:
/// the answering cluster and pod, or None for a failed request.
pub(super) fn who_answers(lab: &Lab, addr: &str, n: u32) -> Vec<Option<(String, String)>> {
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
pub(super) fn ask_until(
    lab: &Lab,
    addr: &str,
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, usize>) -> bool,
) {
    Wait::new(what)
        .timeout(T)
        .interval(Duration::from_millis(500))
        .until_ok(|| {
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
                Ok(())
            } else {
                Err(format!("still {counts:?}"))
            }
        });
}

/// Whether one request from pod `namespace/name` of `cluster` to `addr` is
/// answered (1 s timeout).
pub(super) fn reaches(lab: &Lab, cluster: &str, namespace: &str, name: &str, addr: &str) -> bool {
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

/// One request from pod `from` (c1) to `to:8080`, 1 s timeout: whether it
/// was answered.
pub(super) fn answered(lab: &Lab, from: &str, to: &str) -> bool {
    lab.exec(
        &lab.pod_ns("c1", "shop", from),
        &mesh_e2e::bin("mesh-echo"),
        &["ask", &format!("{to}:8080"), "--timeout-ms", "1000"],
    )
    .status
    .success()
}

pub(super) fn wait_answered(lab: &Lab, from: &str, to: &str, what: &str) {
    // No pause between looks: each request waits up to 1 s for its answer.
    Wait::new(format!("{what}: an answer"))
        .timeout(T)
        .interval(Duration::ZERO)
        .until(|| answered(lab, from, to));
}
