//! The policy custom resources.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A label selector (as Kubernetes': `matchLabels` and `matchExpressions`).
/// Every identity carries `meshwork.io/cluster`, so a selector can name the
/// cluster of its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A port and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortProtocol {
    /// Port number, as text (as Cilium writes it), e.g. "8080".
    pub port: String,
    /// `TCP`, `UDP`, `SCTP` or `ANY` (default `ANY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Ports a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortRule {
    /// The ports.
    pub ports: Vec<PortProtocol>,
}

/// An ingress rule: who may connect to the selected endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Peers by labels (of any connected cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_endpoints: Vec<Selector>,
    /// Peers by entity: `world`, `host`, `remote-node`, `cluster`, `all`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_entities: Vec<String>,
    /// Peers by address range.
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Vec::is_empty")]
    pub from_cidr: Vec<String>,
    /// Ports allowed (none: all ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// An egress rule: where the selected endpoints may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Peers by labels (of any connected cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_endpoints: Vec<Selector>,
    /// Peers by entity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_entities: Vec<String>,
    /// Peers by address range.
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr: Vec<String>,
    /// Ports allowed (none: all ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// What a policy says: the endpoints it selects are default-deny in each
/// direction that has rules, and these rules allow.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "meshwork.io",
    version = "v1",
    kind = "MeshNetworkPolicy",
    plural = "meshnetworkpolicies",
    shortname = "mnp",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.valid"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MeshNetworkPolicySpec {
    /// The endpoints (pods of this namespace) the policy applies to.
    pub endpoint_selector: Selector,
    /// Allowed incoming connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// Allowed outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

/// The same, for endpoints of every namespace.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "meshwork.io",
    version = "v1",
    kind = "MeshClusterwideNetworkPolicy",
    plural = "meshclusterwidenetworkpolicies",
    shortname = "mcnp",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.valid"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MeshClusterwideNetworkPolicySpec {
    /// The endpoints (pods of any namespace) the policy applies to.
    pub endpoint_selector: Selector,
    /// Allowed incoming connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// Allowed outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

/// Whether the agent accepted a policy, and why not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    /// "true" when enforced, "false" when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<String>,
    /// Why it was refused, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The CRDs as YAML documents, in a stable order: what the chart ships.
pub fn crd_yaml() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt as _;
    vec![
        (
            "meshnetworkpolicies.meshwork.io.yaml",
            serde_yaml::to_string(&MeshNetworkPolicy::crd()).expect("CRD serializes"),
        ),
        (
            "meshclusterwidenetworkpolicies.meshwork.io.yaml",
            serde_yaml::to_string(&MeshClusterwideNetworkPolicy::crd()).expect("CRD serializes"),
        ),
    ]
}
