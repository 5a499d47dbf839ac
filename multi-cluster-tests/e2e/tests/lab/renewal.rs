//! Certificates renew themselves under traffic: the lab issues 2-minute
//! certificates (`mesh-lab up --cert-lifetime=120`) and the mesh-apiservers
//! renew theirs and the node-agents' through the Secrets, while each
//! importer renews its client certificate from the remote's CA.

use std::collections::BTreeMap;

use mesh_api::clustermesh::MeshStatus;
use mesh_e2e::Lab;

use super::node_agent::wait_agent;
use super::requests::{pod_ip, wait_answered};

/// The renewals each certificate of `cluster` reports.
fn renewals(status: &MeshStatus) -> BTreeMap<String, u64> {
    status
        .certificates
        .iter()
        .map(|c| (c.name.clone(), c.renewals))
        .collect()
}

/// For 150 s a pod of c1 holds a stream to a pod on another node of c2 and
/// opens a new connection every 500 ms. Meanwhile every certificate of the
/// mesh (both mesh-apiservers', both node-agent certificates, both
/// importers' client certificates) is renewed at least twice: the stream
/// never breaks, no new connection fails, both clusters stay connected and
/// synced, no certificate warning is shown, and every agent presents a
/// certificate that is not expired.
pub(super) fn certificates_renew_under_cross_cluster_traffic(lab: &Lab) {
    for (cluster, node, name) in [("c1", "c1-n1", "renew-a"), ("c2", "c2-n2", "renew-b")] {
        lab.ok(&[
            "pod",
            "add",
            &format!("--cluster={cluster}"),
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
        ]);
    }
    let b = pod_ip(lab, "lab-c2", "shop", "renew-b");
    wait_answered(lab, "renew-a", &b, "renew-a → renew-b before the renewals");
    let before: BTreeMap<&str, BTreeMap<String, u64>> = ["c1", "c2"]
        .into_iter()
        .map(|c| (c, renewals(&lab.status(c))))
        .collect();
    eprintln!("renewals before: {before:?}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pod_ns("c1", "shop", "renew-a")])
        .arg(mesh_e2e::bin("mesh-echo"))
        .args([
            "stream",
            &format!("{b}:8080"),
            "--seconds",
            "150",
            "--every-ms",
            "500",
        ])
        .output()
        .expect("mesh-echo stream");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stream report: {e}: {out:?}"));
    eprintln!("stream across the renewals: {report}");
    let after: BTreeMap<&str, MeshStatus> = ["c1", "c2"]
        .into_iter()
        .map(|c| (c, lab.status(c)))
        .collect();
    for (cluster, status) in &after {
        let now = renewals(status);
        eprintln!("{cluster} certificates: {:?}", status.certificates);
        let other = if *cluster == "c1" { "c2" } else { "c1" };
        for name in ["server", "node-agents", &format!("client/{other}")] {
            let was = before[cluster].get(name).copied().unwrap_or(0);
            let is = now.get(name).copied().unwrap_or(0);
            assert!(
                is >= was + 2,
                "{cluster}: certificate {name} renewed {} times during the stream: {:?}",
                is - was,
                status.certificates
            );
        }
        let unix_now = mesh_api::clustermesh::unix_seconds(std::time::SystemTime::now());
        let warnings: Vec<String> = status
            .certificates
            .iter()
            .filter_map(|c| c.warning(unix_now))
            .collect();
        assert!(warnings.is_empty(), "{cluster}: {warnings:?}");
        assert!(
            status.is_synced_with(other),
            "{cluster} lost {other}: {:?}",
            status.remotes
        );
    }
    assert_eq!(report["broken"], false, "the stream broke: {report}");
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    assert!(report["verified_bytes"].as_u64() > Some(0), "{report}");
    for (cluster, node) in [
        ("c1", "c1-n1"),
        ("c1", "c1-n2"),
        ("c2", "c2-n1"),
        ("c2", "c2-n2"),
    ] {
        wait_agent(
            lab,
            cluster,
            node,
            "a valid, renewed certificate and a synced feed",
            |s| {
                s["mesh_feed"]["synced"] == true
                    && s["mesh_feed"]["certificate_expiry_seconds"]
                        .as_i64()
                        .is_some_and(|left| left > 0)
            },
        );
    }
}
