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

impl Selector {
    /// A selector that matches nothing (a label both present and absent).
    pub fn nobody() -> Selector {
        let req = |operator: &str| SelectorRequirement {
            key: mesh_api::labels::NAMESPACE_LABEL.to_string(),
            operator: operator.into(),
            values: Vec::new(),
        };
        Selector {
            match_labels: Default::default(),
            match_expressions: vec![req("Exists"), req("DoesNotExist")],
        }
    }
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

/// ICMP types (Cilium's `ICMPRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IcmpRule {
    /// The types.
    #[serde(default)]
    pub fields: Vec<IcmpField>,
}

/// One ICMP type of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IcmpField {
    /// `IPv4` (the default) or `IPv6` (matches nothing: the datapath
    /// carries IPv4 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The type: a number (0-255) or a name such as `EchoRequest`.
    #[serde(rename = "type")]
    #[schemars(schema_with = "int_or_string")]
    pub icmp_type: IcmpType,
}

/// An ICMP type as written: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IcmpType {
    /// A number.
    Number(i64),
    /// A name (`EchoRequest`, `DestinationUnreachable`, …).
    Name(String),
}

fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "An ICMP type: a number (0-255) or a name such as EchoRequest.",
        "x-kubernetes-int-or-string": true
    })
}

/// The IPv4 ICMP types by the names Cilium accepts.
pub const ICMP_TYPE_NAMES: [(&str, u8); 14] = [
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

impl IcmpField {
    /// The IPv4 type it names: `Ok(None)` for an IPv6 field (nothing to
    /// match here), an error naming what is wrong otherwise.
    pub fn ipv4_type(&self) -> Result<Option<u8>, String> {
        match self.family.as_deref().unwrap_or("IPv4") {
            "IPv4" => {}
            "IPv6" => return Ok(None),
            other => return Err(format!("ICMP family {other:?} is neither IPv4 nor IPv6")),
        }
        match &self.icmp_type {
            IcmpType::Number(n) => u8::try_from(*n)
                .map(Some)
                .map_err(|_| format!("ICMP type {n} is not 0-255")),
            IcmpType::Name(name) if name.parse::<i64>().is_ok() => IcmpField {
                family: None,
                icmp_type: IcmpType::Number(name.parse().unwrap_or(-1)),
            }
            .ipv4_type(),
            IcmpType::Name(name) => ICMP_TYPE_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| Some(*t))
                .ok_or_else(|| {
                    format!(
                        "unknown ICMP type {name:?}; use a number or one of {}",
                        ICMP_TYPE_NAMES.map(|(n, _)| n).join(", ")
                    )
                }),
        }
    }
}

/// One `toServices` entry: a Service by name, or Services by their labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// A Service by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_service: Option<ServiceName>,
    /// Services by labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_service_selector: Option<ServiceSelector>,
}

/// A Service's name and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceName {
    /// Its name.
    pub service_name: String,
    /// Its namespace (default: the policy's; a cluster-wide policy must
    /// name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Services by their labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceSelector {
    /// The Services' labels.
    pub selector: Selector,
    /// Their namespace (default: the policy's; for a cluster-wide policy,
    /// every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
    /// ICMP types allowed (or denied), by number or name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmps: Vec<IcmpRule>,
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
    /// Peers by Kubernetes Service: a Service with a selector means the
    /// pods it selects, one without means the addresses of its
    /// EndpointSlices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_services: Vec<ServiceRef>,
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
    /// ICMP types allowed (or denied), by number or name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmps: Vec<IcmpRule>,
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
            ("toRequires", &self.to_requires),
            ("toNodes", &self.to_nodes),
            ("toGroups", &self.to_groups),
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

/// Cilium's `enableDefaultDeny`: whether a policy puts what it selects into
/// default deny for a direction it has rules in. `false` makes a policy
/// that only adds (an allow for a monitoring agent, a deny for one peer)
/// without closing anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DefaultDeny {
    /// Ingress (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    /// Egress (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// What a policy says: the endpoints it selects are default-deny in each
/// direction that has rules (allow or deny), these rules allow, and its
/// deny rules drop whatever any policy allows.
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
    /// Denied incoming connections: a match is dropped whatever any
    /// policy allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_deny: Vec<IngressRule>,
    /// Denied outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<EgressRule>,
    /// Whether the policy turns on default deny in the directions it has
    /// rules for (default: yes, in both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
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
    /// The endpoints (pods of any namespace) the policy applies to; or,
    /// instead, `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<Selector>,
    /// Allowed incoming connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// Allowed outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
    /// What the policy is for (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Denied incoming connections: a match is dropped whatever any
    /// policy allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_deny: Vec<IngressRule>,
    /// Denied outgoing connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<EgressRule>,
    /// Whether the policy turns on default deny in the directions it has
    /// rules for (default: yes, in both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
    /// A host policy: the nodes (by their labels) whose own traffic the
    /// rules apply to, in and out of their interfaces (host-networked
    /// pods included): the host firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
}

/// The unenforced fields a policy's spec uses, with where: what its
/// refusal names.
pub fn unenforced_fields(
    ingress: &[IngressRule],
    egress: &[EgressRule],
    ingress_deny: &[IngressRule],
    egress_deny: &[EgressRule],
    spec_level: &[(&str, &Unenforced)],
) -> Vec<String> {
    let mut out: Vec<String> = set_fields(spec_level)
        .into_iter()
        .map(String::from)
        .collect();
    for (list, rules) in [("ingress", ingress), ("ingressDeny", ingress_deny)] {
        for (i, r) in rules.iter().enumerate() {
            out.extend(
                r.unenforced()
                    .into_iter()
                    .map(|f| format!("{list}[{i}].{f}")),
            );
        }
    }
    for (list, rules) in [("egress", egress), ("egressDeny", egress_deny)] {
        for (i, r) in rules.iter().enumerate() {
            out.extend(
                r.unenforced()
                    .into_iter()
                    .map(|f| format!("{list}[{i}].{f}")),
            );
        }
    }
    out
}

impl MeshNetworkPolicySpec {
    /// See [`unenforced_fields`].
    pub fn unenforced(&self) -> Vec<String> {
        unenforced_fields(
            &self.ingress,
            &self.egress,
            &self.ingress_deny,
            &self.egress_deny,
            &[("nodeSelector", &self.node_selector)],
        )
    }
}

impl MeshClusterwideNetworkPolicySpec {
    /// See [`unenforced_fields`].
    pub fn unenforced(&self) -> Vec<String> {
        unenforced_fields(
            &self.ingress,
            &self.egress,
            &self.ingress_deny,
            &self.egress_deny,
            &[],
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

/// Cilium's `CiliumNetworkPolicy` (`cilium.io/v2`), read as written when
/// `compat.ciliumPolicies` is on: one rule in `spec`, or several in
/// `specs`, each shaped as a [`MeshNetworkPolicySpec`] (the shapes are
/// Cilium's). Enforced by the same compiler; its status gets the same
/// verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiliumNetworkPolicy {
    /// Name, namespace, labels.
    pub metadata: kube::api::ObjectMeta,
    /// One rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<MeshNetworkPolicySpec>,
    /// Several rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<MeshNetworkPolicySpec>,
    /// The agents' verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

/// Cilium's `CiliumClusterwideNetworkPolicy` (`cilium.io/v2`): as
/// [`CiliumNetworkPolicy`], cluster-scoped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiliumClusterwideNetworkPolicy {
    /// Name, labels.
    pub metadata: kube::api::ObjectMeta,
    /// One rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<MeshClusterwideNetworkPolicySpec>,
    /// Several rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<MeshClusterwideNetworkPolicySpec>,
    /// The agents' verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

/// `kube::Resource` for a `cilium.io/v2` kind (hand-written: a Cilium
/// policy may have `specs` without `spec`, which the derive cannot say).
macro_rules! cilium_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                CILIUM_GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                CILIUM_VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &kube::api::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The API group of Cilium's policies.
pub const CILIUM_GROUP: &str = "cilium.io";
/// Their version.
pub const CILIUM_VERSION: &str = "v2";

cilium_resource!(
    CiliumNetworkPolicy,
    "CiliumNetworkPolicy",
    "ciliumnetworkpolicies",
    k8s_openapi::NamespaceResourceScope
);
cilium_resource!(
    CiliumClusterwideNetworkPolicy,
    "CiliumClusterwideNetworkPolicy",
    "ciliumclusterwidenetworkpolicies",
    k8s_openapi::ClusterResourceScope
);

/// The CRD of a Cilium kind, made from ours: same rule schema, under
/// `cilium.io/v2`, with `specs` beside `spec` and neither required.
fn cilium_crd(
    ours: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    kind: &str,
    plural: &str,
    short_names: &[&str],
) -> serde_json::Value {
    let mut crd = serde_json::to_value(ours).expect("CRD serializes");
    crd["metadata"]["name"] = format!("{plural}.{CILIUM_GROUP}").into();
    let spec = &mut crd["spec"];
    spec["group"] = CILIUM_GROUP.into();
    spec["names"] = serde_json::json!({
        "kind": kind,
        "plural": plural,
        "singular": kind.to_lowercase(),
        "shortNames": short_names,
        "categories": ["cilium", "ciliumpolicy"],
    });
    let version = &mut spec["versions"][0];
    version["name"] = CILIUM_VERSION.into();
    let schema = &mut version["schema"]["openAPIV3Schema"];
    let rule = schema["properties"]["spec"].clone();
    schema["properties"]["specs"] = serde_json::json!({"type": "array", "items": rule});
    if let Some(o) = schema.as_object_mut() {
        o.remove("required");
    }
    schema["description"] = format!(
        "Cilium's {kind}, enforced by Meshwork as written (compat.ciliumPolicies): one rule in spec or several in specs."
    )
    .into();
    crd
}

/// The Cilium CRDs the chart installs with `compat.ciliumPolicies`.
pub fn cilium_crd_yaml() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt as _;
    vec![
        (
            "ciliumnetworkpolicies.cilium.io.yaml",
            serde_yaml::to_string(&cilium_crd(
                &MeshNetworkPolicy::crd(),
                "CiliumNetworkPolicy",
                "ciliumnetworkpolicies",
                &["cnp", "ciliumnp"],
            ))
            .expect("CRD serializes"),
        ),
        (
            "ciliumclusterwidenetworkpolicies.cilium.io.yaml",
            serde_yaml::to_string(&cilium_crd(
                &MeshClusterwideNetworkPolicy::crd(),
                "CiliumClusterwideNetworkPolicy",
                "ciliumclusterwidenetworkpolicies",
                &["ccnp"],
            ))
            .expect("CRD serializes"),
        ),
    ]
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
