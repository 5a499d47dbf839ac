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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortProtocol {
    /// Port number, as text (as Cilium writes it), e.g. "8080"; "0" or
    /// empty: every port of the protocol.
    #[serde(default)]
    pub port: String,
    /// With `port`, the last port of a range `port`..=`endPort`.
    #[serde(default, rename = "endPort", skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    /// `TCP`, `UDP`, `SCTP` or `ANY` (default `ANY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A field of Cilium's policy language this version keeps (nothing is
/// pruned on the way in) but does not enforce: a policy that uses one is
/// refused as a whole, so nothing is silently widened.
pub type Unenforced = Option<serde_json::Value>;

fn preserved(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Kept as written; not enforced by this version: a policy using it is refused as a whole.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The names of the unenforced fields that are set, in order.
fn set_fields<'a>(fields: &[(&'a str, &Unenforced)]) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| *name)
        .collect()
}

/// Ports a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// The ports.
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    /// L7 rules (`http`, `dns`, `kafka`): not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub rules: Unenforced,
    /// TLS SNI names: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub server_names: Unenforced,
    /// An Envoy listener: not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub listener: Unenforced,
    /// TLS origination: not supported.
    #[serde(
        default,
        rename = "originatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "preserved")]
    pub originating_tls: Unenforced,
    /// TLS termination: not supported.
    #[serde(
        default,
        rename = "terminatingTLS",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "preserved")]
    pub terminating_tls: Unenforced,
}

impl PortRule {
    /// The unenforced fields it sets (`rules.http` is named as such).
    pub fn unenforced(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(rules) = &self.rules {
            match rules.as_object() {
                Some(o) if !o.is_empty() => {
                    out.extend(o.keys().map(|k| format!("rules.{k}")));
                }
                _ => out.push("rules".into()),
            }
        }
        out.extend(
            set_fields(&[
                ("serverNames", &self.server_names),
                ("listener", &self.listener),
                ("originatingTLS", &self.originating_tls),
                ("terminatingTLS", &self.terminating_tls),
            ])
            .into_iter()
            .map(String::from),
        );
        out
    }
}

/// An address range with holes (Cilium's `CIDRRule`, Kubernetes'
/// `ipBlock`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CidrRule {
    /// The range, e.g. `10.0.0.0/8`.
    pub cidr: String,
    /// Ranges inside it that are not meant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
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
    /// Peers by address range with exceptions.
    #[serde(default, rename = "fromCIDRSet", skip_serializing_if = "Vec::is_empty")]
    pub from_cidr_set: Vec<CidrRule>,
    /// Ports allowed (none: all ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub from_requires: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub from_nodes: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub from_groups: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub icmps: Unenforced,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub authentication: Unenforced,
}

impl IngressRule {
    /// The unenforced fields it (and its port rules) set.
    pub fn unenforced(&self) -> Vec<String> {
        let mut out: Vec<String> = set_fields(&[
            ("fromRequires", &self.from_requires),
            ("fromNodes", &self.from_nodes),
            ("fromGroups", &self.from_groups),
            ("icmps", &self.icmps),
            ("authentication", &self.authentication),
        ])
        .into_iter()
        .map(String::from)
        .collect();
        for (i, p) in self.to_ports.iter().enumerate() {
            out.extend(
                p.unenforced()
                    .into_iter()
                    .map(|f| format!("toPorts[{i}].{f}")),
            );
        }
        out
    }
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
    /// Peers by address range with exceptions.
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr_set: Vec<CidrRule>,
    /// Ports allowed (none: all ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
    /// Peers by DNS name: not enforced yet.
    #[serde(default, rename = "toFQDNs", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub to_fqdns: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub to_services: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub to_requires: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub to_nodes: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub to_groups: Unenforced,
    /// Not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub icmps: Unenforced,
    /// Not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub authentication: Unenforced,
}

impl EgressRule {
    /// The unenforced fields it (and its port rules) set.
    pub fn unenforced(&self) -> Vec<String> {
        let mut out: Vec<String> = set_fields(&[
            ("toFQDNs", &self.to_fqdns),
            ("toServices", &self.to_services),
            ("toRequires", &self.to_requires),
            ("toNodes", &self.to_nodes),
            ("toGroups", &self.to_groups),
            ("icmps", &self.icmps),
            ("authentication", &self.authentication),
        ])
        .into_iter()
        .map(String::from)
        .collect();
        for (i, p) in self.to_ports.iter().enumerate() {
            out.extend(
                p.unenforced()
                    .into_iter()
                    .map(|f| format!("toPorts[{i}].{f}")),
            );
        }
        out
    }
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
    /// What the policy is for (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Deny rules: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub ingress_deny: Unenforced,
    /// Deny rules: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub egress_deny: Unenforced,
    /// Not supported (the default deny follows from the rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub enable_default_deny: Unenforced,
    /// Host policies: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub node_selector: Unenforced,
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
    /// What the policy is for (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Deny rules: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub ingress_deny: Unenforced,
    /// Deny rules: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub egress_deny: Unenforced,
    /// Not supported (the default deny follows from the rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub enable_default_deny: Unenforced,
    /// Host policies: not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved")]
    pub node_selector: Unenforced,
}

/// The unenforced fields a policy's spec uses, with where: what its
/// refusal names.
pub fn unenforced_fields(
    ingress: &[IngressRule],
    egress: &[EgressRule],
    spec_level: &[(&str, &Unenforced)],
) -> Vec<String> {
    let mut out: Vec<String> = set_fields(spec_level)
        .into_iter()
        .map(String::from)
        .collect();
    for (i, r) in ingress.iter().enumerate() {
        out.extend(
            r.unenforced()
                .into_iter()
                .map(|f| format!("ingress[{i}].{f}")),
        );
    }
    for (i, r) in egress.iter().enumerate() {
        out.extend(
            r.unenforced()
                .into_iter()
                .map(|f| format!("egress[{i}].{f}")),
        );
    }
    out
}

impl MeshNetworkPolicySpec {
    /// See [`unenforced_fields`].
    pub fn unenforced(&self) -> Vec<String> {
        unenforced_fields(
            &self.ingress,
            &self.egress,
            &[
                ("ingressDeny", &self.ingress_deny),
                ("egressDeny", &self.egress_deny),
                ("enableDefaultDeny", &self.enable_default_deny),
                ("nodeSelector", &self.node_selector),
            ],
        )
    }
}

impl MeshClusterwideNetworkPolicySpec {
    /// See [`unenforced_fields`].
    pub fn unenforced(&self) -> Vec<String> {
        unenforced_fields(
            &self.ingress,
            &self.egress,
            &[
                ("ingressDeny", &self.ingress_deny),
                ("egressDeny", &self.egress_deny),
                ("enableDefaultDeny", &self.enable_default_deny),
                ("nodeSelector", &self.node_selector),
            ],
        )
    }
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
