//! Publishing the status where `meshctl` reads it: the ConfigMap
//! `meshwork-status` (key `status.json`) in the install namespace, written
//! by the leader every few seconds. meshctl never needs a network path to
//! the mesh-apiserver: the Kubernetes API is enough, in kind, on a real
//! cluster, and in the lab.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use mesh_api::clustermesh::{MeshStatus, RecordCounts, RemoteStatus, STATUS_CONFIGMAP, STATUS_KEY};

use crate::status::{StatusReport, StatusSource};

/// How often the leader publishes.
pub const INTERVAL: Duration = Duration::from_secs(3);

/// The document meshctl reads, built from this replica's report.
pub fn mesh_status(report: &StatusReport, replica: &str, now: u64) -> MeshStatus {
    let mut remotes: BTreeMap<String, RemoteStatus> = report
        .remotes
        .iter()
        .map(|r| {
            let count = |k: &str| r.counts.get(k).copied().unwrap_or(0) as u64;
            (
                r.name.clone(),
                RemoteStatus {
                    name: r.name.clone(),
                    id: Some(r.id),
                    connected: r.connected,
                    synced: r.synced,
                    stale_since: r.stale_since.as_deref().and_then(unix_seconds),
                    last_error: r.last_error.clone(),
                    counts: RecordCounts {
                        nodes: count("nodes"),
                        identities: count("identities"),
                        endpoints: count("endpoints"),
                        services: count("services"),
                    },
                    last_event_age_secs: r.last_event_age_seconds.map(|s| s as u64),
                    refused: r.refused.clone(),
                },
            )
        })
        .collect();
    for refused in &report.refused_entries {
        remotes
            .entry(refused.entry.clone())
            .or_insert_with(|| RemoteStatus {
                name: refused.entry.clone(),
                id: None,
                connected: false,
                synced: false,
                stale_since: None,
                last_error: None,
                counts: RecordCounts::default(),
                last_event_age_secs: None,
                refused: Some(refused.reason.clone()),
            });
    }
    MeshStatus {
        cluster: report.cluster.name.clone(),
        cluster_id: report.cluster.id,
        pod_cidrs: report
            .cluster
            .pod_cidrs
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect(),
        version: report.version.clone(),
        replica: replica.to_string(),
        updated_at: now,
        watch_clients: report.watch_clients as u64,
        remotes,
    }
}

fn unix_seconds(rfc3339: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// Publishes the status every [`INTERVAL`] while this replica leads; logs
/// (once per change of outcome) when the API refuses.
pub async fn run(source: StatusSource, client: kube::Client, namespace: String, replica: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("mesh-apiserver").force();
    let mut last_ok = true;
    loop {
        let report = source.report().await;
        if report.leader {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let doc = mesh_status(&report, &replica, now);
            let cm = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": STATUS_CONFIGMAP, "namespace": namespace,
                             "labels": {"app.kubernetes.io/part-of": "meshwork"}},
                "data": {STATUS_KEY: serde_json::to_string(&doc).expect("status serializes")},
            });
            let res = api
                .patch(STATUS_CONFIGMAP, &params, &Patch::Apply(&cm))
                .await;
            match (&res, last_ok) {
                (Err(e), true) => {
                    tracing::warn!(error = %e, namespace, "cannot publish status to ConfigMap {STATUS_CONFIGMAP}: meshctl will see this cluster as not running")
                }
                (Ok(_), false) => tracing::info!(
                    namespace,
                    "status published again to ConfigMap {STATUS_CONFIGMAP}"
                ),
                _ => {}
            }
            last_ok = res.is_ok();
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests;
