//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`) as the policy compiler
//! takes it: each NetworkPolicy becomes a [`PolicySource`] of kind
//! `NetworkPolicy`, compiled and enforced by the same compiler and maps as
//! MeshNetworkPolicy.
//!
//! What it is for: the translation, pure. The semantics are Kubernetes',
//! where they differ from Cilium's:
//! - `policyTypes` decides the directions (absent: Ingress, plus Egress when
//!   there are egress rules); a listed direction without rules denies all,
//!   rules of an unlisted direction are ignored;
//! - a rule without peers (`from`/`to` missing or empty) admits every peer,
//!   inside the cluster or not; a rule without `ports` admits every port;
//! - a port's protocol defaults to TCP; a port without a number means every
//!   port of its protocol; `endPort` closes a range;
//! - a `podSelector` peer means pods of the policy's namespace, a
//!   `namespaceSelector` peer pods of the namespaces it selects (their labels
//!   are matched under [`NAMESPACE_LABELS_PREFIX`]), both together the pods
//!   the one selects in the namespaces the other selects;
//! - peers are pods of this cluster only (as Cilium's default): a
//!   NetworkPolicy never admits another cluster's pods by labels;
//! - `ipBlock` is an address range with `except`, for addresses outside the
//!   mesh (pods and nodes keep their own identities, as in Cilium); IPv6
//!   blocks are left out (this datapath carries IPv4 only, so they could
//!   never match: leaving them out narrows nothing).
//!
//! A named port (`port: http`) resolves on the pod it protects for ingress
//! and on each peer for egress (each pod on its own port when any peer is
//! allowed), as Kubernetes resolves it; a name nothing declares admits
//! nothing.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort as K8sPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::labels::NAMESPACE_LABEL;

use super::compile::{NAMESPACE_LABELS_PREFIX, PolicySource};
use super::crd::{
    CidrRule, EgressRule, IngressRule, PortProtocol, PortRule, Selector, SelectorRequirement,
};

/// The kind a translated NetworkPolicy carries in the compiler, statuses
/// and rule names.
pub const KIND: &str = "NetworkPolicy";

fn selector(s: &K8sSelector) -> Selector {
    Selector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|r| SelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: r.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// A namespace selector as a selector of pod identities: its keys under
/// [`NAMESPACE_LABELS_PREFIX`], plus "any namespace" so the compiler does not
/// narrow it to the policy's own.
fn namespace_selector(s: &K8sSelector, pods: Option<&K8sSelector>) -> Selector {
    let ns = selector(s);
    let mut out = pods.map(selector).unwrap_or_default();
    for (k, v) in ns.match_labels {
        out.match_labels
            .insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    for r in ns.match_expressions {
        out.match_expressions.push(SelectorRequirement {
            key: format!("{NAMESPACE_LABELS_PREFIX}{}", r.key),
            ..r
        });
    }
    out.match_expressions.push(SelectorRequirement {
        key: NAMESPACE_LABEL.to_string(),
        operator: "Exists".into(),
        values: Vec::new(),
    });
    out
}

/// A rule's peers as selectors and CIDR sets (IPv6 blocks left out).
fn peers(list: &[NetworkPolicyPeer]) -> (Vec<Selector>, Vec<CidrRule>) {
    let (mut selectors, mut cidrs) = (Vec::new(), Vec::new());
    for peer in list {
        if let Some(block) = &peer.ip_block {
            if !block.cidr.contains(':') {
                cidrs.push(CidrRule {
                    cidr: block.cidr.clone(),
                    except: block
                        .except
                        .iter()
                        .flatten()
                        .filter(|e| !e.contains(':'))
                        .cloned()
                        .collect(),
                });
            }
            continue;
        }
        match (&peer.namespace_selector, &peer.pod_selector) {
            (Some(ns), pods) => selectors.push(namespace_selector(ns, pods.as_ref())),
            (None, Some(pods)) => selectors.push(selector(pods)),
            // A peer with nothing set is refused by the API server; if one
            // arrives it admits nobody rather than everybody.
            (None, None) => {}
        }
    }
    (selectors, cidrs)
}

fn ports(list: Option<&Vec<K8sPort>>) -> Vec<PortRule> {
    let ports: Vec<PortProtocol> = list
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| PortProtocol {
            port: match &p.port {
                None => String::new(),
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
            },
            // Out of range: 0, which the compiler refuses (never a wider range).
            end_port: p.end_port.map(|e| u16::try_from(e).unwrap_or(0)),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
        })
        .collect();
    if ports.is_empty() {
        Vec::new()
    } else {
        vec![PortRule {
            ports,
            ..PortRule::default()
        }]
    }
}

/// One rule: its peers (every peer when none are listed; nobody when all
/// listed peers were left out) on its ports.
fn rule(
    list: Option<&Vec<NetworkPolicyPeer>>,
    port_list: Option<&Vec<K8sPort>>,
) -> (Vec<Selector>, Vec<String>, Vec<CidrRule>, Vec<PortRule>) {
    let list = list.map(Vec::as_slice).unwrap_or_default();
    let (mut selectors, cidrs) = peers(list);
    let entities = if list.is_empty() {
        vec!["all".to_string()]
    } else {
        Vec::new()
    };
    if !list.is_empty() && selectors.is_empty() && cidrs.is_empty() {
        selectors.push(Selector::nobody());
    }
    (selectors, entities, cidrs, ports(port_list))
}

/// The compiler's form of a NetworkPolicy.
pub fn source(np: &NetworkPolicy) -> PolicySource {
    let spec = np.spec.clone().unwrap_or_default();
    let ingress_rules = spec.ingress.unwrap_or_default();
    let egress_rules = spec.egress.unwrap_or_default();
    let types: Vec<String> = spec.policy_types.unwrap_or_else(|| {
        let mut t = vec!["Ingress".to_string()];
        if !egress_rules.is_empty() {
            t.push("Egress".into());
        }
        t
    });
    let has = |t: &str| types.iter().any(|x| x == t);
    let ingress = if !has("Ingress") {
        Vec::new()
    } else if ingress_rules.is_empty() {
        vec![IngressRule::default()]
    } else {
        ingress_rules
            .iter()
            .map(|r| {
                let (from_endpoints, from_entities, from_cidr_set, to_ports) =
                    rule(r.from.as_ref(), r.ports.as_ref());
                IngressRule {
                    from_endpoints,
                    from_entities,
                    from_cidr_set,
                    to_ports,
                    ..IngressRule::default()
                }
            })
            .collect()
    };
    let egress = if !has("Egress") {
        Vec::new()
    } else if egress_rules.is_empty() {
        vec![EgressRule::default()]
    } else {
        egress_rules
            .iter()
            .map(|r| {
                let (to_endpoints, to_entities, to_cidr_set, to_ports) =
                    rule(r.to.as_ref(), r.ports.as_ref());
                EgressRule {
                    to_endpoints,
                    to_entities,
                    to_cidr_set,
                    to_ports,
                    ..EgressRule::default()
                }
            })
            .collect()
    };
    PolicySource {
        kind: KIND,
        namespace: Some(
            np.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        name: np.metadata.name.clone().unwrap_or_default(),
        endpoint_selector: spec.pod_selector.as_ref().map(selector).unwrap_or_default(),
        node_selector: None,
        ingress,
        egress,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
        default_deny: [true, true],
        refusal: None,
    }
}

#[cfg(test)]
mod tests;
