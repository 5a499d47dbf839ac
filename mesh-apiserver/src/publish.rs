//! Publishing the status where `meshctl` reads it: the ConfigMap
//! `meshwork-status` (key `status.json`) in the install namespace, written
//! by the leader every few seconds. meshctl never needs a network path to
//! the mesh-apiserver: the Kubernetes API is enough, in kind, on a real
//! cluster, and in the lab.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use mesh_api::clustermesh::{STATUS_CONFIGMAP, STATUS_KEY};

use crate::status::StatusSource;

/// How often the leader publishes.
pub const INTERVAL: Duration = Duration::from_secs(3);

/// Publishes the status every [`INTERVAL`] while this replica leads; logs
/// (once per change of outcome) when the API refuses.
pub async fn run(source: StatusSource, client: kube::Client, namespace: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("mesh-apiserver").force();
    let mut last_ok = true;
    loop {
        let doc = source.report().await;
        if doc.leader {
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
