//! The agent's own Node object: its pod CIDR (when `--pod-cidr` is not
//! given), its InternalIP, and the WireGuard public key the agent publishes
//! on it (annotation `network.meshwork.io/wg-pub-key`, a JSON merge patch
//! that touches nothing else), and where its local API is (annotation
//! `network.meshwork.io/agent-api`, read by `meshctl`). Kubernetes access comes from `KUBECONFIG` or
//! the in-cluster service account.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use mesh_api::WireGuardKey;

use crate::error::{Error, Result};

/// The annotation holding a node's WireGuard public key.
pub const WG_PUB_KEY_ANNOTATION: &str = mesh_api::annotations::WG_PUB_KEY;

/// The annotation saying where the agent's local API is.
pub const AGENT_API_ANNOTATION: &str = mesh_api::annotations::AGENT_API;

/// The [`AGENT_API_ANNOTATION`] value for an agent serving on `socket`:
/// `unix://<absolute path>`.
pub fn agent_api_value(socket: &std::path::Path) -> String {
    let abs = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    format!("unix://{}", abs.display())
}

/// The merge patch that sets `annotations` and touches nothing else.
pub fn annotations_patch(annotations: &[(&str, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({ "metadata": { "annotations": map } })
}

/// Sets `annotations` on Node `name` (one merge patch).
pub async fn publish_annotations(
    client: &kube::Client,
    name: &str,
    annotations: &[(&str, String)],
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let keys: Vec<&str> = annotations.iter().map(|(k, _)| *k).collect();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&annotations_patch(annotations)),
    )
    .await
    .map_err(|e| Error::Kube {
        what: format!("annotate Node {name} with {}", keys.join(", ")),
        source: Box::new(e),
    })?;
    Ok(())
}

/// What the agent takes from its Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnNode {
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// The InternalIP addresses (first: the node IP).
    pub internal_ips: Vec<IpAddr>,
    /// The published key, if any.
    pub wireguard_key: Option<String>,
}

/// Extracts [`OwnNode`] from a Node object (pure). Unparsable values are
/// skipped with a warning naming the node.
pub fn own_node(node: &Node) -> OwnNode {
    let name = node.metadata.name.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let mut cidrs: Vec<String> = spec.pod_cidrs.unwrap_or_default();
    if cidrs.is_empty()
        && let Some(c) = spec.pod_cidr
    {
        cidrs.push(c);
    }
    let pod_cidrs = cidrs
        .iter()
        .filter_map(|c| match c.parse::<IpNet>() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(node = %name, cidr = %c, error = %e, "Node pod CIDR does not parse; ignored");
                None
            }
        })
        .collect();
    let internal_ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    OwnNode {
        pod_cidrs,
        internal_ips,
        wireguard_key: node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WG_PUB_KEY_ANNOTATION).cloned()),
    }
}

/// A Kubernetes client from `KUBECONFIG` / in-cluster config.
pub async fn client() -> Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| Error::Kube {
        what: "load KUBECONFIG or in-cluster configuration".into(),
        source: Box::new(e),
    })
}

/// Reads Node `name`.
pub async fn read(client: &kube::Client, name: &str) -> Result<OwnNode> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api.get(name).await.map_err(|e| Error::Kube {
        what: format!("read Node {name}"),
        source: Box::new(e),
    })?;
    Ok(own_node(&node))
}

/// The merge patch that sets the key annotation.
pub fn key_patch(key: &WireGuardKey) -> serde_json::Value {
    annotations_patch(&[(WG_PUB_KEY_ANNOTATION, key.to_string())])
}

/// Publishes `key` on Node `name` (merge patch of one annotation).
pub async fn publish_key(client: &kube::Client, name: &str, key: &WireGuardKey) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&key_patch(key)),
    )
    .await
    .map_err(|e| Error::Kube {
        what: format!("annotate Node {name} with {WG_PUB_KEY_ANNOTATION}"),
        source: Box::new(e),
    })?;
    Ok(())
}

/// Removes the key annotation from Node `name` (encryption turned off);
/// absent already: not an error.
pub async fn withdraw_key(client: &kube::Client, name: &str) -> Result<()> {
    remove_annotation(client, name, WG_PUB_KEY_ANNOTATION).await
}

/// Removes `annotation` from Node `name` (merge patch setting it to null);
/// absent already: not an error.
pub async fn remove_annotation(client: &kube::Client, name: &str, annotation: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({
        "metadata": { "annotations": { annotation: null } }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::Kube {
            what: format!("remove {annotation} from Node {name}"),
            source: Box::new(e),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests;
