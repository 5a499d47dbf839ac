//! Policy compilation: MeshNetworkPolicy / MeshClusterwideNetworkPolicy rules
//! and the identities of every cluster → the [`EndpointPolicy`] of one local
//! endpoint, as the policy map holds it.
//!
//! What it is for: the pure step between the policy CRDs (plus the mesh
//! feed's identities) and the datapath. Selectors are compiled to identity
//! sets by matching every known identity's labels; a new identity (a pod with
//! new labels in any cluster) therefore changes the result, and the caller
//! recompiles on every identity change.
//!
//! Semantics (those of DESIGN.md, shaped after Cilium):
//! - an endpoint selected by any policy that has ingress (egress) rules,
//!   allow or deny, is default-deny for ingress (egress), unless every such
//!   policy says `enableDefaultDeny: false` for it; the allow rules of every
//!   selecting policy add up, and a deny rule (`ingressDeny`/`egressDeny`)
//!   drops what it matches whatever allows it;
//! - a MeshNetworkPolicy selects endpoints of its own namespace only, and its
//!   peer selectors (`fromEndpoints`/`toEndpoints`) without the namespace
//!   label `io.kubernetes.pod.namespace` select peers of its namespace;
//! - a peer selector without the label `meshwork.io/cluster` selects peers
//!   of the local cluster only; name the cluster (or use `matchExpressions`
//!   on that key) to allow peers of other clusters. Like Cilium's
//!   `policy-default-local-cluster`: a new cluster joining the mesh never
//!   widens an existing policy by itself;
//! - entities: `all` (any peer), `world`, `host`, `remote-node`, `cluster`
//!   (the local cluster's identities plus host, remote-node, health and
//!   init: one entry, [`Identity::CLUSTER_PEERS`], that the datapath
//!   matches against the endpoint's own cluster), `kube-apiserver` (the
//!   addresses of the `kubernetes` Service's endpoints, see
//!   [`crate::identity_sync::ipcache_entries`]), `health`, `init`,
//!   `unmanaged`; in a host policy `cluster` is the identities themselves
//!   (the node carries no cluster id for the datapath to compare);
//! - `toPorts` restricts the rule to those ports; a rule with ports and no
//!   peers allows any peer on those ports; an empty rule (`{}`) allows
//!   nothing but still turns on default-deny; a port without a number (or
//!   "0") with a protocol means every port of that protocol, `endPort`
//!   closes a range; a named port resolves on the endpoint for ingress and
//!   on each peer for egress ([`NamedPorts`]);
//! - CIDR sets (`fromCIDRSet`/`toCIDRSet`, Kubernetes' `ipBlock`) allow the
//!   named CIDRs inside `cidr` and inside none of its `except` ranges;
//! - CIDR rules (`fromCIDR`/`toCIDR`, IPv4): every CIDR any policy names
//!   gets a node-local identity ([`Identity::node_local`]) and an ipcache
//!   entry ([`CompiledPolicies::cidr_identities`]); a rule allows the
//!   identities of every named CIDR inside its own (so `10.0.0.0/8` also
//!   covers a `10.1.0.0/16` another policy names). Addresses with a CIDR
//!   identity are still `world`: the entity `world` allows them too. Pods
//!   and nodes keep their own identities (longest prefix wins), as in
//!   Cilium, where CIDR rules are for peers outside the mesh;
//!
//! Bad input: a policy with an invalid selector, an unknown entity, a port
//! that is neither a number nor a name, or a field this version keeps but
//! does not enforce ([`PolicySource::refusal`]) is refused as a whole with a
//! message naming it and what to change, and what it selects allows nothing
//! in its directions; other policies are compiled as usual.
//!
//! Each allow entry carries the id of the rule that allowed it (the lowest
//! when several do), a stable hash of `kind/namespace/name/direction[index]`,
//! so flow events and `meshctl explain` can name the rule ([`RuleRef`]).
//!
//! What it is not for: watching anything (see [`crate::identity_sync`]).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use mesh_api::labels::{
    CLUSTER_LABEL, LabelSelector, NAMESPACE_LABEL, SelectorOperator, SelectorRequirement,
};
use mesh_api::{ClusterName, Identity, LabelSet, Protocol, ReservedIdentity};

use super::crd::{
    CidrRule, DefaultDeny, EgressRule, IcmpRule, IngressRule, MeshClusterwideNetworkPolicySpec,
    MeshNetworkPolicySpec, PortRule, Selector,
};
use crate::datapath::{Direction, EndpointPolicy, ICMP_TYPE_PORT_BASE, PolicyMatch};

/// Rule names and refused policies, as `/v1/status` reports them.
pub use mesh_agent_api::policy::{PolicyProblem, RuleRef};

/// One policy as the compiler takes it: any kind, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// `MeshNetworkPolicy`, `MeshClusterwideNetworkPolicy`,
    /// `NetworkPolicy`, or one of Cilium's kinds.
    pub kind: &'static str,
    /// Its namespace (None: cluster-wide).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Which endpoints it applies to.
    pub endpoint_selector: Selector,
    /// A host policy: which nodes (by their labels) it applies to instead
    /// (`endpoint_selector` is then unused).
    pub node_selector: Option<Selector>,
    /// Ingress rules.
    pub ingress: Vec<IngressRule>,
    /// Egress rules.
    pub egress: Vec<EgressRule>,
    /// Ingress deny rules: what they match is dropped whatever allows it.
    pub ingress_deny: Vec<IngressRule>,
    /// Egress deny rules.
    pub egress_deny: Vec<EgressRule>,
    /// Whether it turns on default deny in a direction it has rules in
    /// (Cilium's `enableDefaultDeny`; ingress, egress).
    pub default_deny: [bool; 2],
    /// Why it cannot be enforced as written, found before compiling (a
    /// field this version keeps but does not enforce): the policy is
    /// refused as a whole and what it selects allows nothing in its
    /// directions.
    pub refusal: Option<String>,
}

/// The refusal of a spec that uses fields this version does not enforce.
fn refusal_of(fields: &[String]) -> Option<String> {
    (!fields.is_empty()).then(|| {
        format!(
            "uses {}, which this version does not enforce; refused as a whole so that nothing is allowed that the author did not mean (remove the field to enforce the rest)",
            fields.join(", ")
        )
    })
}

/// `enableDefaultDeny` resolved: both directions default to yes.
fn default_deny_of(d: Option<DefaultDeny>) -> [bool; 2] {
    let d = d.unwrap_or_default();
    [d.ingress.unwrap_or(true), d.egress.unwrap_or(true)]
}

impl PolicySource {
    /// A namespaced policy.
    pub fn namespaced(namespace: &str, name: &str, spec: &MeshNetworkPolicySpec) -> Self {
        Self::namespaced_as("MeshNetworkPolicy", namespace, name, spec)
    }

    /// A namespaced policy of another kind with the same shape (Cilium's).
    pub fn namespaced_as(
        kind: &'static str,
        namespace: &str,
        name: &str,
        spec: &MeshNetworkPolicySpec,
    ) -> Self {
        let refusal = refusal_of(&spec.unenforced());
        PolicySource {
            kind,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
            endpoint_selector: spec.endpoint_selector.clone(),
            node_selector: None,
            ingress: spec.ingress.clone(),
            egress: spec.egress.clone(),
            ingress_deny: spec.ingress_deny.clone(),
            egress_deny: spec.egress_deny.clone(),
            default_deny: default_deny_of(spec.enable_default_deny),
            refusal,
        }
    }

    /// A cluster-wide policy.
    pub fn clusterwide(name: &str, spec: &MeshClusterwideNetworkPolicySpec) -> Self {
        Self::clusterwide_as("MeshClusterwideNetworkPolicy", name, spec)
    }

    /// A cluster-wide policy of another kind with the same shape.
    pub fn clusterwide_as(
        kind: &'static str,
        name: &str,
        spec: &MeshClusterwideNetworkPolicySpec,
    ) -> Self {
        let mut refusal = refusal_of(&spec.unenforced());
        match (&spec.endpoint_selector, &spec.node_selector) {
            (Some(_), Some(_)) => {
                refusal = Some(
                    "sets both endpointSelector and nodeSelector; a policy selects pods or nodes, so split it in two"
                        .into(),
                )
            }
            (None, None) => {
                refusal = Some(
                    "sets neither endpointSelector (pods) nor nodeSelector (nodes); name what it applies to (`{}` selects all)"
                        .into(),
                )
            }
            _ => {}
        }
        PolicySource {
            kind,
            namespace: None,
            name: name.to_string(),
            // A host policy selects no pod.
            endpoint_selector: spec
                .endpoint_selector
                .clone()
                .unwrap_or_else(Selector::nobody),
            node_selector: spec.node_selector.clone(),
            ingress: spec.ingress.clone(),
            egress: spec.egress.clone(),
            ingress_deny: spec.ingress_deny.clone(),
            egress_deny: spec.egress_deny.clone(),
            default_deny: default_deny_of(spec.enable_default_deny),
            refusal,
        }
    }

    /// Whether it has rules (allow or deny) in `dir`.
    fn has_rules(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => !self.ingress.is_empty() || !self.ingress_deny.is_empty(),
            Direction::Egress => !self.egress.is_empty() || !self.egress_deny.is_empty(),
        }
    }

    /// `namespace/name` or `name`.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The compiled policy set: per policy its selector and rules as identity
/// sets, ready to be evaluated for each local endpoint.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicies {
    policies: Vec<CompiledPolicy>,
    /// Every rule, by id.
    pub rules: BTreeMap<u32, RuleRef>,
    /// Refused policies, with what to change.
    pub problems: Vec<PolicyProblem>,
    /// The node-local identity of every CIDR the policies name (for the
    /// ipcache).
    pub cidr_identities: BTreeMap<Ipv4Net, Identity>,
    /// Ingress from this node (kubelet probes) is allowed to every
    /// endpoint ([`CompileInputs::allow_localhost`]).
    pub allow_localhost: bool,
    /// Named container ports by the labels of the identity whose pods
    /// declare them (for ingress rules on a named port).
    named_by_labels: BTreeMap<LabelSet, BTreeSet<(String, u16, Protocol)>>,
    /// This cluster's identities with their namespace's labels added
    /// ([`with_namespace_labels`]), built once per compile.
    namespace_labelled: BTreeMap<Identity, LabelSet>,
}

/// The rule id of the node's own traffic admitted by
/// [`CompileInputs::allow_localhost`].
pub fn localhost_rule() -> RuleRef {
    RuleRef {
        id: rule_id("NodeAgent", "allow-localhost", Direction::Ingress, false, 0),
        kind: "NodeAgent".into(),
        policy: "allow-localhost".into(),
        direction: Direction::Ingress,
        index: 0,
        deny: false,
    }
}

/// Identity labels of a pod's namespace, under the key prefix Cilium uses
/// (`io.cilium.k8s.namespace.labels.<key>`): what a NetworkPolicy's
/// `namespaceSelector` becomes.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

#[derive(Debug, Clone)]
struct CompiledPolicy {
    /// Matched against a pod's identity labels, or with `host` a node's
    /// labels.
    subject: LabelSelector,
    /// A host policy (`nodeSelector`).
    host: bool,
    /// None: no rules in that direction.
    ingress: Option<DirectionRules>,
    egress: Option<DirectionRules>,
}

/// One policy's rules in one direction, as identity sets.
#[derive(Debug, Clone, Default)]
struct DirectionRules {
    /// Whether they turn on default deny (`enableDefaultDeny`).
    closes: bool,
    allow: BTreeSet<PolicyMatch>,
    deny: BTreeSet<PolicyMatch>,
    /// Ingress matches on a named port: resolved against the container
    /// ports of the endpoint they are evaluated for.
    named: Vec<NamedMatch>,
}

impl DirectionRules {
    /// What a refused policy stands in with: closed, nothing allowed.
    fn closed() -> Self {
        DirectionRules {
            closes: true,
            ..DirectionRules::default()
        }
    }
}

/// A match on a named port, waiting for the endpoint that names it.
#[derive(Debug, Clone)]
struct NamedMatch {
    identity: Option<Identity>,
    name: String,
    protocol: Option<Protocol>,
    rule: u32,
    deny: bool,
}

/// The named container ports (`name`, port, protocol) the pods of each
/// identity of this cluster declare.
pub type NamedPorts = BTreeMap<Identity, BTreeSet<(String, u16, Protocol)>>;

/// One pod's address and the named ports (name, port, protocol) its
/// containers declare.
pub type PodPorts = (std::net::IpAddr, Vec<(String, u16, Protocol)>);

/// What `toServices` resolves against: this cluster's Services by
/// (namespace, name).
pub type Services = BTreeMap<(String, String), ServiceInfo>;

/// One Service, as `toServices` needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Its labels (what `k8sServiceSelector` matches).
    pub labels: BTreeMap<String, String>,
    /// Its pod selector (None: a Service without one).
    pub selector: Option<BTreeMap<String, String>>,
    /// The IPv4 addresses of its EndpointSlices (what a Service without a
    /// selector means).
    pub addresses: Vec<std::net::Ipv4Addr>,
}

/// The labels of this cluster's namespaces, by namespace name.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// What the compiler needs to know beyond the policies.
#[derive(Debug, Clone, Copy)]
pub struct CompileInputs<'a> {
    /// This agent's cluster (unnamed peer selectors mean this cluster).
    pub cluster: &'a ClusterName,
    /// Every known identity of every cluster with its labels.
    pub identities: &'a BTreeMap<Identity, LabelSet>,
    /// The labels of this cluster's namespaces, by name (matched by peer
    /// selectors under [`NAMESPACE_LABELS_PREFIX`]).
    pub namespaces: &'a NamespaceLabels,
    /// Admit the node's own traffic (kubelet probes) to every endpoint,
    /// whatever its policy (Cilium's `allow-localhost`).
    pub allow_localhost: bool,
    /// The named container ports of this cluster's identities (what a
    /// rule's `port: <name>` resolves to).
    pub named_ports: &'a NamedPorts,
    /// This cluster's Services (for `toServices`).
    pub services: &'a Services,
    /// The API server has an address of this node: the `kube-apiserver`
    /// entity covers `host` (that address keeps it).
    pub apiserver_on_this_node: bool,
    /// The API server has an address of another node of this cluster,
    /// which carries `kube-apiserver`: the `remote-node` entity covers
    /// that identity too.
    pub apiserver_on_remote_node: bool,
}

/// `labels` with its namespace's labels added under
/// [`NAMESPACE_LABELS_PREFIX`], for an identity of this cluster whose
/// namespace is known (labels whose prefixed key is not a valid label key
/// are left out: nothing can select them).
fn with_namespace_labels(labels: &LabelSet, inputs: &CompileInputs<'_>) -> Option<LabelSet> {
    if labels.get(CLUSTER_LABEL) != Some(inputs.cluster.as_str()) {
        return None;
    }
    let ns = inputs.namespaces.get(labels.get(NAMESPACE_LABEL)?)?;
    // A pod's own labels never pass for its namespace's.
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| !k.starts_with(NAMESPACE_LABELS_PREFIX))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in ns {
        let key = format!("{NAMESPACE_LABELS_PREFIX}{k}");
        if mesh_api::labels::validate_label(&key, v).is_ok() {
            all.insert(key, v.clone());
        }
    }
    LabelSet::new(all).ok()
}

/// `p` with its `toServices` written as what they mean: a Service with a
/// selector becomes a peer selector (its selector in its namespace), one
/// without becomes `/32` CIDRs of its endpoints' addresses. A rule whose
/// Services match nothing (yet) allows no peer, never "any peer on its
/// ports".
fn with_services_resolved(p: &PolicySource, services: &Services) -> PolicySource {
    if p.egress
        .iter()
        .chain(&p.egress_deny)
        .all(|r| r.to_services.is_empty())
    {
        return p.clone();
    }
    let resolve = |r: &EgressRule| -> EgressRule {
        if r.to_services.is_empty() {
            return r.clone();
        }
        let mut out = r.clone();
        for s in &r.to_services {
            let matched: Vec<(&(String, String), &ServiceInfo)> = services
                .iter()
                .filter(|((ns, name), info)| {
                    if let Some(n) = &s.k8s_service {
                        let want_ns = n.namespace.as_ref().or(p.namespace.as_ref());
                        Some(ns) == want_ns && *name == n.service_name
                    } else if let Some(sel) = &s.k8s_service_selector {
                        let want_ns = sel.namespace.as_ref().or(p.namespace.as_ref());
                        want_ns.is_none_or(|w| w == ns)
                            && to_selector(&sel.selector).is_ok_and(|ls| {
                                LabelSet::new(info.labels.clone()).is_ok_and(|l| ls.matches(&l))
                            })
                    } else {
                        false
                    }
                })
                .collect();
            for ((ns, _), info) in matched {
                match &info.selector {
                    Some(selector) => {
                        let mut match_labels = selector.clone();
                        match_labels.insert(NAMESPACE_LABEL.to_string(), ns.clone());
                        out.to_endpoints.push(Selector {
                            match_labels,
                            match_expressions: Vec::new(),
                        });
                    }
                    None => out
                        .to_cidr
                        .extend(info.addresses.iter().map(|a| format!("{a}/32"))),
                }
            }
        }
        if out.to_endpoints.is_empty()
            && out.to_cidr.is_empty()
            && r.to_cidr_set.is_empty()
            && r.to_entities.is_empty()
        {
            out.to_endpoints.push(Selector::nobody());
        }
        out
    };
    let mut resolved = p.clone();
    resolved.egress = p.egress.iter().map(resolve).collect();
    resolved.egress_deny = p.egress_deny.iter().map(resolve).collect();
    resolved
}

/// Compiles every policy against the known identities.
pub fn compile(policies: &[PolicySource], inputs: &CompileInputs<'_>) -> CompiledPolicies {
    let resolved: Vec<PolicySource> = policies
        .iter()
        .map(|p| with_services_resolved(p, inputs.services))
        .collect();
    let policies = resolved.as_slice();
    let mut out = CompiledPolicies {
        allow_localhost: inputs.allow_localhost,
        named_by_labels: inputs
            .named_ports
            .iter()
            .filter_map(|(id, ports)| Some((inputs.identities.get(id)?.clone(), ports.clone())))
            .collect(),
        namespace_labelled: inputs
            .identities
            .iter()
            .filter_map(|(id, labels)| Some((*id, with_namespace_labels(labels, inputs)?)))
            .collect(),
        ..CompiledPolicies::default()
    };
    if inputs.allow_localhost {
        let r = localhost_rule();
        out.rules.insert(r.id, r);
    }
    // Node-local identities for every well-formed CIDR named anywhere
    // (numbered in address order; malformed ones refuse their policy below).
    let sets = |set: &[CidrRule]| -> Vec<String> {
        set.iter()
            .flat_map(|c| std::iter::once(c.cidr.clone()).chain(c.except.iter().cloned()))
            .collect()
    };
    let named: BTreeSet<Ipv4Net> = policies
        .iter()
        .filter(|p| p.refusal.is_none())
        .flat_map(|p| {
            p.ingress
                .iter()
                .chain(&p.ingress_deny)
                .flat_map(|r| r.from_cidr.iter().cloned().chain(sets(&r.from_cidr_set)))
                .chain(
                    p.egress
                        .iter()
                        .chain(&p.egress_deny)
                        .flat_map(|r| r.to_cidr.iter().cloned().chain(sets(&r.to_cidr_set))),
                )
                .collect::<Vec<_>>()
        })
        .filter_map(|c| c.parse::<Ipv4Net>().ok().map(|n| n.trunc()))
        .collect();
    for (i, net) in named.into_iter().enumerate() {
        if let Ok(id) = Identity::node_local(i as u32 + 1) {
            out.cidr_identities.insert(net, id);
        }
    }
    let mut sorted: Vec<&PolicySource> = policies.iter().collect();
    sorted.sort_by_key(|p| (p.kind, p.id()));
    for p in sorted {
        match compile_one(p, inputs, &mut out) {
            Ok(c) => out.policies.push(c),
            Err(mut message) => {
                // Fail closed: what it selects is default-deny in the
                // directions it has rules for, with nothing allowed.
                let closed = deny_all_of(p);
                if !closed.is_empty() {
                    out.policies.extend(closed);
                    message.push_str(DENY_NOTE);
                }
                out.problems.push(PolicyProblem {
                    policy: format!("{} {}", p.kind, p.id()),
                    message,
                });
            }
        }
    }
    out
}

/// Said of a refused policy whose selector is valid.
const DENY_NOTE: &str =
    "; the endpoints it selects allow nothing in its directions until it is fixed";

/// A refused policy's fail-closed stand-ins: its subjects (pods, nodes;
/// each when its selector itself is valid) enforced with no allow, in the
/// directions it has rules.
fn deny_all_of(p: &PolicySource) -> Vec<CompiledPolicy> {
    let closed = |subject, host| CompiledPolicy {
        subject,
        host,
        ingress: p.has_rules(Direction::Ingress).then(DirectionRules::closed),
        egress: p.has_rules(Direction::Egress).then(DirectionRules::closed),
    };
    let mut out = Vec::new();
    if let Ok(mut subject) = to_selector(&p.endpoint_selector) {
        if let Some(ns) = &p.namespace {
            subject
                .match_labels
                .insert(NAMESPACE_LABEL.to_string(), ns.clone());
        }
        out.push(closed(subject, false));
    }
    if let Some(Ok(subject)) = p.node_selector.as_ref().map(to_selector) {
        out.push(closed(subject, true));
    }
    out
}

/// The last version of each policy that compiled, by `Kind namespace/name`:
/// a policy edited into a form that does not compile keeps its last valid
/// version enforced (a typo must not remove a default-deny), and its status
/// says it is stale.
pub type LastValid = BTreeMap<String, PolicySource>;

/// [`compile`], keeping each refused policy's last valid version from
/// `last_valid` (updated: valid versions recorded, deleted policies
/// forgotten).
pub fn compile_keeping_last_valid(
    policies: &[PolicySource],
    inputs: &CompileInputs<'_>,
    last_valid: &mut LastValid,
) -> CompiledPolicies {
    let key = |p: &PolicySource| format!("{} {}", p.kind, p.id());
    let alone = compile(policies, inputs);
    let refused: BTreeSet<&str> = alone.problems.iter().map(|p| p.policy.as_str()).collect();
    let mut chosen = Vec::with_capacity(policies.len());
    let mut stale = BTreeSet::new();
    for p in policies {
        let k = key(p);
        if !refused.contains(k.as_str()) {
            last_valid.insert(k, p.clone());
            chosen.push(p.clone());
        } else if let Some(last) = last_valid.get(&k) {
            chosen.push(last.clone());
            stale.insert(k);
        } else {
            // Never valid: compiled again, it is refused again and stands
            // in as what it selects denying all in its directions.
            chosen.push(p.clone());
        }
    }
    let present: BTreeSet<String> = policies.iter().map(key).collect();
    last_valid.retain(|k, _| present.contains(k));
    let mut out = compile(&chosen, inputs);
    out.problems = alone
        .problems
        .into_iter()
        .map(|mut problem| {
            if stale.contains(&problem.policy) {
                problem.message = problem.message.replace(
                    DENY_NOTE,
                    "; its last valid version stays enforced until this is fixed (stale)",
                );
            }
            problem
        })
        .collect();
    out
}

impl CompiledPolicies {
    /// The policy of an endpoint whose identity (labels) is not known yet
    /// (the mesh-apiserver is down, identities ran out): it cannot be
    /// matched, so every policy that could select a pod of its namespace
    /// counts as selecting it, with nothing allowed until its identity
    /// resolves. A namespace no policy can select stays open.
    pub fn unresolved_endpoint_policy(&self, namespace: Option<&str>) -> EndpointPolicy {
        let mut policy = EndpointPolicy::default();
        for p in self.policies.iter().filter(|p| !p.host) {
            let ns = p.subject.match_labels.get(NAMESPACE_LABEL);
            let could_select = match (ns, namespace) {
                (Some(theirs), Some(ours)) => theirs == ours,
                _ => true,
            };
            if could_select {
                policy.ingress_enforced |= p.ingress.is_some();
                policy.egress_enforced |= p.egress.is_some();
            }
        }
        self.admit_localhost(&mut policy);
        policy
    }

    /// With [`CompiledPolicies::allow_localhost`], an endpoint enforced for
    /// ingress admits the node's own traffic.
    fn admit_localhost(&self, policy: &mut EndpointPolicy) {
        if self.allow_localhost && policy.ingress_enforced {
            let allow = PolicyMatch {
                direction: Direction::Ingress,
                identity: Some(ReservedIdentity::Host.identity()),
                port: 0,
                protocol: None,
                rule: localhost_rule().id,
            };
            let key = |a: &PolicyMatch| (a.direction, a.identity, a.port, a.protocol);
            // A deny of the host on that very key stands (and wins anyway).
            if !policy
                .allow
                .iter()
                .chain(&policy.deny)
                .any(|a| key(a) == key(&allow))
            {
                policy.allow.insert(allow);
            }
        }
    }

    /// The policy of an endpoint with identity labels `labels`: the union
    /// of what every selecting policy allows, minus what any denies (a
    /// deny entry wins in the datapath whichever is more specific; one
    /// with the very key of an allow replaces it).
    pub fn endpoint_policy(&self, labels: &LabelSet) -> EndpointPolicy {
        let mut policy = self.merged(
            |p| !p.host && p.subject.matches(labels),
            self.named_by_labels.get(labels),
        );
        self.admit_localhost(&mut policy);
        policy
    }

    /// The host firewall of a node with labels `node_labels`: None when no
    /// host policy (`nodeSelector`) selects it (its traffic is not
    /// judged), else what the selecting ones allow and deny.
    pub fn host_policy(&self, node_labels: &LabelSet) -> Option<EndpointPolicy> {
        let selects = |p: &CompiledPolicy| p.host && p.subject.matches(node_labels);
        self.policies
            .iter()
            .any(selects)
            .then(|| self.merged(selects, None))
    }

    /// What the policies `selects` picks add up to (named ports resolved
    /// against `declared`, the endpoint's own).
    fn merged(
        &self,
        selects: impl Fn(&CompiledPolicy) -> bool,
        declared: Option<&BTreeSet<(String, u16, Protocol)>>,
    ) -> EndpointPolicy {
        type Key = (Direction, Option<Identity>, u16, Option<Protocol>);
        let mut policy = EndpointPolicy::default();
        let mut allow: BTreeMap<Key, u32> = BTreeMap::new();
        let mut deny: BTreeMap<Key, u32> = BTreeMap::new();
        // Per direction: has rules, some selecting policy closes it.
        let mut seen = [false; 2];
        let mut closed = [false; 2];
        let add = |to: &mut BTreeMap<Key, u32>, k: Key, rule: u32| {
            let e = to.entry(k).or_insert(rule);
            *e = (*e).min(rule);
        };
        for p in &self.policies {
            if !selects(p) {
                continue;
            }
            for (i, rules) in [&p.ingress, &p.egress].into_iter().enumerate() {
                let Some(rules) = rules else { continue };
                seen[i] = true;
                closed[i] |= rules.closes;
                for m in &rules.allow {
                    add(
                        &mut allow,
                        (m.direction, m.identity, m.port, m.protocol),
                        m.rule,
                    );
                }
                for m in &rules.deny {
                    add(
                        &mut deny,
                        (m.direction, m.identity, m.port, m.protocol),
                        m.rule,
                    );
                }
                // Named ports of this endpoint's own containers.
                for n in &rules.named {
                    for (name, port, proto) in declared.into_iter().flatten() {
                        if *name == n.name && n.protocol.is_none_or(|p| p == *proto) {
                            let k = (Direction::Ingress, n.identity, *port, Some(*proto));
                            add(if n.deny { &mut deny } else { &mut allow }, k, n.rule);
                        }
                    }
                }
            }
        }
        for (i, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            // Rules that close nothing (`enableDefaultDeny: false`) only
            // add: everything else stays allowed, their denies still drop.
            if seen[i] && !closed[i] {
                add(&mut allow, (dir, None, 0, None), 0);
            }
        }
        policy.ingress_enforced = seen[0];
        policy.egress_enforced = seen[1];
        let entry = |((direction, identity, port, protocol), rule): (Key, u32)| PolicyMatch {
            direction,
            identity,
            port,
            protocol,
            rule,
        };
        allow.retain(|k, _| !deny.contains_key(k));
        policy.allow = allow.into_iter().map(entry).collect();
        policy.deny = deny.into_iter().map(entry).collect();
        policy
    }

    /// Whether any policy is compiled.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// A stable, non-zero rule id (FNV-1a of the rule's name).
pub fn rule_id(kind: &str, policy: &str, direction: Direction, deny: bool, index: usize) -> u32 {
    let deny = if deny { "Deny" } else { "" };
    let text = format!("{kind}/{policy}/{direction:?}{deny}[{index}]");
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

fn compile_one(
    p: &PolicySource,
    inputs: &CompileInputs<'_>,
    out: &mut CompiledPolicies,
) -> Result<CompiledPolicy, String> {
    if let Some(refusal) = &p.refusal {
        return Err(refusal.clone());
    }
    let (mut subject, host) = match &p.node_selector {
        Some(nodes) => (
            to_selector(nodes).map_err(|e| format!("nodeSelector: {e}"))?,
            true,
        ),
        None => (
            to_selector(&p.endpoint_selector).map_err(|e| format!("endpointSelector: {e}"))?,
            false,
        ),
    };
    if let Some(ns) = &p.namespace {
        subject
            .match_labels
            .insert(NAMESPACE_LABEL.to_string(), ns.clone());
    }
    fn ingress_parts(r: &IngressRule) -> RuleParts<'_> {
        RuleParts {
            selectors: &r.from_endpoints,
            entities: &r.from_entities,
            cidrs: &r.from_cidr,
            cidr_sets: &r.from_cidr_set,
            ports: &r.to_ports,
            icmps: &r.icmps,
        }
    }
    fn egress_parts(r: &EgressRule) -> RuleParts<'_> {
        RuleParts {
            selectors: &r.to_endpoints,
            entities: &r.to_entities,
            cidrs: &r.to_cidr,
            cidr_sets: &r.to_cidr_set,
            ports: &r.to_ports,
            icmps: &r.icmps,
        }
    }
    let ingress: Vec<RuleParts<'_>> = p.ingress.iter().map(ingress_parts).collect();
    let ingress_deny: Vec<RuleParts<'_>> = p.ingress_deny.iter().map(ingress_parts).collect();
    let egress: Vec<RuleParts<'_>> = p.egress.iter().map(egress_parts).collect();
    let egress_deny: Vec<RuleParts<'_>> = p.egress_deny.iter().map(egress_parts).collect();
    let mut compiled = CompiledPolicy {
        subject,
        host,
        ingress: None,
        egress: None,
    };
    let mut rules = Vec::new();
    for (i, (dir, allows, denies)) in [
        (Direction::Ingress, &ingress, &ingress_deny),
        (Direction::Egress, &egress, &egress_deny),
    ]
    .into_iter()
    .enumerate()
    {
        if allows.is_empty() && denies.is_empty() {
            continue;
        }
        let mut set = DirectionRules {
            closes: p.default_deny[i],
            ..DirectionRules::default()
        };
        for (deny, list) in [(false, allows), (true, denies)] {
            for (index, rule) in list.iter().enumerate() {
                let id = rule_id(p.kind, &p.id(), dir, deny, index);
                let where_ = format!(
                    "{}{}[{index}]",
                    dir_name(dir),
                    if deny { "Deny" } else { "" }
                );
                let (matches, named) = compile_rule(p, inputs, out, dir, *rule, id, &where_)?;
                if deny {
                    set.deny.extend(matches);
                } else {
                    set.allow.extend(matches);
                }
                set.named.extend(named.into_iter().map(|mut n| {
                    n.deny = deny;
                    n
                }));
                rules.push(RuleRef {
                    id,
                    kind: p.kind.to_string(),
                    policy: p.id(),
                    direction: dir,
                    index,
                    deny,
                });
            }
        }
        match dir {
            Direction::Ingress => compiled.ingress = Some(set),
            Direction::Egress => compiled.egress = Some(set),
        }
    }
    for r in rules {
        out.rules.insert(r.id, r);
    }
    Ok(compiled)
}

/// One rule's matches (peers × ports), and its ingress matches on named
/// ports left to resolve per endpoint.
fn compile_rule(
    p: &PolicySource,
    inputs: &CompileInputs<'_>,
    out: &CompiledPolicies,
    dir: Direction,
    rule: RuleParts<'_>,
    id: u32,
    where_: &str,
) -> Result<(BTreeSet<PolicyMatch>, Vec<NamedMatch>), String> {
    let RuleParts {
        selectors,
        entities,
        cidrs,
        cidr_sets,
        ports,
        icmps,
    } = rule;
    let peers = peers(
        p,
        inputs,
        &out.cidr_identities,
        &out.namespace_labelled,
        selectors,
        entities,
        where_,
    )?;
    let (ports, named) = port_list(ports, where_)?;
    let icmp_types = icmp_list(icmps, where_)?;
    let mut by_cidr = cidr_peers(&out.cidr_identities, cidrs, where_)?;
    by_cidr.extend(cidr_set_peers(&out.cidr_identities, cidr_sets, where_)?);
    let has_cidrs = !cidrs.is_empty() || !cidr_sets.is_empty();
    let mut set = BTreeSet::new();
    let mut pending = Vec::new();
    let peers = match peers {
        Peers::Some(mut ids) => {
            ids.extend(by_cidr);
            ids.into_iter().map(Some).collect::<Vec<_>>()
        }
        Peers::Any => vec![None],
        Peers::NoneSpecified if has_cidrs => by_cidr.into_iter().map(Some).collect(),
        Peers::NoneSpecified if !ports.is_empty() || !named.is_empty() || !icmps.is_empty() => {
            vec![None]
        }
        Peers::NoneSpecified => Vec::new(),
    };
    // No ports at all: every port. Named ports or ICMP types only: those,
    // never every port.
    let mut ports = if ports.is_empty() && named.is_empty() && icmps.is_empty() {
        vec![(0, None)]
    } else {
        ports
    };
    ports.extend(
        icmp_types
            .into_iter()
            .map(|t| (ICMP_TYPE_PORT_BASE + u16::from(t), Some(Protocol::Icmp))),
    );
    for (name, protocol) in &named {
        match dir {
            // The port of the endpoint the rule protects.
            Direction::Ingress => {
                for identity in &peers {
                    pending.push(NamedMatch {
                        identity: *identity,
                        name: name.clone(),
                        protocol: *protocol,
                        rule: id,
                        deny: false,
                    });
                }
            }
            // The port each peer declares under that name. For "any peer",
            // each declaring identity on its own port: one pod naming a
            // port never opens that number towards every other peer.
            Direction::Egress => {
                for identity in &peers {
                    // (Named ports are this cluster's identities' own, so
                    // the `cluster` entity means all of them.)
                    let declared = inputs.named_ports.iter().filter(|(i, _)| {
                        identity.is_none_or(|x| x == **i || x == Identity::CLUSTER_PEERS)
                    });
                    for (peer, ports) in declared {
                        for (n, port, proto) in ports {
                            if n == name && protocol.is_none_or(|p| p == *proto) {
                                set.insert(PolicyMatch {
                                    direction: dir,
                                    identity: Some(*peer),
                                    port: *port,
                                    protocol: Some(*proto),
                                    rule: id,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    for identity in &peers {
        for (port, protocol) in &ports {
            set.insert(PolicyMatch {
                direction: dir,
                identity: *identity,
                port: *port,
                protocol: *protocol,
                rule: id,
            });
        }
    }
    Ok((set, pending))
}

/// One rule's parts, whichever its direction.
#[derive(Clone, Copy)]
struct RuleParts<'a> {
    selectors: &'a [Selector],
    entities: &'a [String],
    cidrs: &'a [String],
    cidr_sets: &'a [CidrRule],
    ports: &'a [PortRule],
    icmps: &'a [IcmpRule],
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

enum Peers {
    Some(BTreeSet<Identity>),
    Any,
    NoneSpecified,
}

/// The node-local identities of the named CIDRs inside the rule's `cidrs`.
fn cidr_peers(
    named: &BTreeMap<Ipv4Net, Identity>,
    cidrs: &[String],
    where_: &str,
) -> Result<BTreeSet<Identity>, String> {
    let mut out = BTreeSet::new();
    for c in cidrs {
        let net: Ipv4Net = c.parse().map_err(|_| {
            format!(
                "{where_}: {c:?} is not an IPv4 CIDR such as 192.0.2.0/24 (IPv6 is not supported)"
            )
        })?;
        let net = net.trunc();
        out.extend(
            named
                .iter()
                .filter(|(n, _)| net.contains(*n))
                .map(|(_, id)| *id),
        );
    }
    Ok(out)
}

fn parse_cidr(c: &str, where_: &str) -> Result<Ipv4Net, String> {
    c.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
        format!("{where_}: {c:?} is not an IPv4 CIDR such as 192.0.2.0/24 (IPv6 is not supported)")
    })
}

/// The node-local identities of the named CIDRs inside each set's `cidr`
/// and inside none of its `except` ranges (the excepted ranges are named
/// too, so the ipcache's longest prefix gives their addresses their own
/// identity, which the rule does not allow).
fn cidr_set_peers(
    named: &BTreeMap<Ipv4Net, Identity>,
    sets: &[CidrRule],
    where_: &str,
) -> Result<BTreeSet<Identity>, String> {
    let mut out = BTreeSet::new();
    for set in sets {
        let net = parse_cidr(&set.cidr, where_)?;
        let mut except = Vec::new();
        for e in &set.except {
            let e = parse_cidr(e, where_)?;
            if !net.contains(&e) {
                return Err(format!(
                    "{where_}: except {e} is not inside {net}; list only ranges inside the CIDR"
                ));
            }
            except.push(e);
        }
        out.extend(
            named
                .iter()
                .filter(|(n, _)| net.contains(*n) && !except.iter().any(|e| e.contains(*n)))
                .map(|(_, id)| *id),
        );
    }
    Ok(out)
}

fn peers(
    p: &PolicySource,
    inputs: &CompileInputs<'_>,
    cidr_identities: &BTreeMap<Ipv4Net, Identity>,
    namespace_labelled: &BTreeMap<Identity, LabelSet>,
    selectors: &[Selector],
    entities: &[String],
    where_: &str,
) -> Result<Peers, String> {
    if selectors.is_empty() && entities.is_empty() {
        return Ok(Peers::NoneSpecified);
    }
    let mut ids = BTreeSet::new();
    for (i, s) in selectors.iter().enumerate() {
        let mut sel = to_selector(s).map_err(|e| format!("{where_} selector {i}: {e}"))?;
        let names = |sel: &LabelSelector, key: &str| {
            sel.match_labels.contains_key(key) || sel.match_expressions.iter().any(|r| r.key == key)
        };
        if let Some(ns) = &p.namespace
            && !names(&sel, NAMESPACE_LABEL)
        {
            sel.match_labels
                .insert(NAMESPACE_LABEL.to_string(), ns.clone());
        }
        if !names(&sel, CLUSTER_LABEL) {
            sel.match_labels
                .insert(CLUSTER_LABEL.to_string(), inputs.cluster.to_string());
        }
        let by_namespace_labels = sel
            .match_labels
            .keys()
            .chain(sel.match_expressions.iter().map(|r| &r.key))
            .any(|k| k.starts_with(NAMESPACE_LABELS_PREFIX));
        ids.extend(
            inputs
                .identities
                .iter()
                .filter(|(id, labels)| {
                    if by_namespace_labels {
                        namespace_labelled.get(*id).is_some_and(|l| sel.matches(l))
                    } else {
                        sel.matches(labels)
                    }
                })
                .map(|(id, _)| *id),
        );
    }
    for e in entities {
        match e.as_str() {
            "all" => return Ok(Peers::Any),
            // One entry, whatever the cluster's size: the datapath matches
            // every peer of the endpoint's own cluster (its label-based
            // identities, host, remote-node, health, init) against it.
            // A host policy's endpoint (the node) carries no cluster id
            // for the datapath to compare: its one endpoint gets the
            // identities themselves.
            "cluster" if p.node_selector.is_some() => {
                ids.extend(
                    inputs
                        .identities
                        .iter()
                        .filter(|(_, l)| l.get(CLUSTER_LABEL) == Some(inputs.cluster.as_str()))
                        .map(|(id, _)| *id),
                );
                ids.extend(
                    [
                        ReservedIdentity::Host,
                        ReservedIdentity::RemoteNode,
                        ReservedIdentity::Health,
                        ReservedIdentity::Init,
                    ]
                    .map(ReservedIdentity::identity),
                );
            }
            "cluster" => {
                ids.insert(Identity::CLUSTER_PEERS);
            }
            other => match ReservedIdentity::ALL.iter().find(|r| r.name() == other) {
                Some(r) => {
                    ids.insert(r.identity());
                    // Where the API server shares a node's address.
                    if *r == ReservedIdentity::KubeApiserver && inputs.apiserver_on_this_node {
                        ids.insert(ReservedIdentity::Host.identity());
                    }
                    if *r == ReservedIdentity::RemoteNode && inputs.apiserver_on_remote_node {
                        ids.insert(ReservedIdentity::KubeApiserver.identity());
                    }
                    // Addresses with a CIDR identity are outside the mesh too.
                    if *r == ReservedIdentity::World {
                        ids.extend(cidr_identities.values().copied());
                    }
                }
                None => {
                    return Err(format!(
                        "{where_}: unknown entity {other:?}; use one of all, cluster, {}",
                        ReservedIdentity::ALL
                            .iter()
                            .map(|r| r.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            },
        }
    }
    Ok(Peers::Some(ids))
}

/// A rule's IPv4 ICMP types (IPv6 fields match nothing here: the datapath
/// carries IPv4 only).
fn icmp_list(icmps: &[IcmpRule], where_: &str) -> Result<BTreeSet<u8>, String> {
    let mut out = BTreeSet::new();
    for (i, rule) in icmps.iter().enumerate() {
        for (j, field) in rule.fields.iter().enumerate() {
            if let Some(t) = field
                .ipv4_type()
                .map_err(|e| format!("{where_}.icmps[{i}].fields[{j}]: {e}"))?
            {
                out.insert(t);
            }
        }
    }
    Ok(out)
}

/// The longest port range (`port`..=`endPort`) a rule may name: each port
/// is one policy map entry per peer.
pub const MAX_PORT_RANGE: usize = 1024;

/// A rule's ports: numbered ones (port, protocol), and named ones (name,
/// protocol) to be resolved against container ports.
type Ports = (
    Vec<(u16, Option<Protocol>)>,
    Vec<(String, Option<Protocol>)>,
);

fn port_list(rules: &[PortRule], where_: &str) -> Result<Ports, String> {
    let mut out = Vec::new();
    let mut named = Vec::new();
    for r in rules {
        for pp in &r.ports {
            let protocol = match pp
                .protocol
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("ANY") => None,
                Some("TCP") => Some(Protocol::Tcp),
                Some("UDP") => Some(Protocol::Udp),
                Some("SCTP") => Some(Protocol::Sctp),
                Some(other) => {
                    return Err(format!(
                        "{where_}: protocol {other:?} is not one of TCP, UDP, SCTP, ANY"
                    ));
                }
            };
            let port: u16 = match pp.port.as_str() {
                "" => 0,
                text if is_port_name(text) => {
                    if pp.end_port.is_some() {
                        return Err(format!(
                            "{where_}: endPort needs a numbered port, not the name {text:?}"
                        ));
                    }
                    if protocol == Some(Protocol::Sctp) {
                        return Err(format!(
                            "{where_}: port {text}/SCTP cannot be enforced (the datapath matches ports of TCP and UDP only)"
                        ));
                    }
                    named.push((text.to_string(), protocol));
                    continue;
                }
                text => text.parse().map_err(|_| {
                    format!(
                        "{where_}: port {text:?} is neither a number from 0 to 65535 nor a port name (lowercase letters, digits and '-', at most 15, with a letter)"
                    )
                })?,
            };
            let end = match pp.end_port {
                None => port,
                Some(end) if port == 0 => {
                    return Err(format!(
                        "{where_}: endPort {end} needs a port to start the range"
                    ));
                }
                Some(end) if end < port => {
                    return Err(format!(
                        "{where_}: endPort {end} is below port {port}; write the range low to high"
                    ));
                }
                Some(end) if usize::from(end - port) >= MAX_PORT_RANGE => {
                    return Err(format!(
                        "{where_}: the range {port}-{end} has {} ports; this version enforces ranges of at most {MAX_PORT_RANGE} ports (one map entry each): split the rule or allow every port",
                        u32::from(end - port) + 1
                    ));
                }
                Some(end) => end,
            };
            for port in port..=end {
                match (port, protocol) {
                    // A port means the same port of every protocol that has
                    // ports: the datapath keys ports by protocol, and a port
                    // with no protocol would match nothing (or be refused by
                    // the map and leave the endpoint open).
                    (1.., None) => {
                        out.push((port, Some(Protocol::Tcp)));
                        out.push((port, Some(Protocol::Udp)));
                    }
                    (1.., Some(Protocol::Sctp)) => {
                        return Err(format!(
                            "{where_}: port {port}/SCTP cannot be enforced (the datapath matches ports of TCP and UDP only); remove the port to allow all SCTP, or use TCP/UDP"
                        ));
                    }
                    _ => out.push((port, protocol)),
                }
            }
        }
    }
    Ok((out, named))
}

/// Whether `text` is a port name (IANA service name, as Kubernetes
/// validates container port names).
fn is_port_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 15
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text.bytes().any(|b| b.is_ascii_lowercase())
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--")
}

/// The CRD's selector as mesh-api's, validated.
pub fn to_selector(s: &Selector) -> Result<LabelSelector, String> {
    let mut exprs = Vec::new();
    let mut match_labels = BTreeMap::new();
    for (k, v) in &s.match_labels {
        match_labels.insert(label_key(k), v.clone());
    }
    for r in &s.match_expressions {
        let operator = match r.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return Err(format!(
                    "matchExpressions key {:?}: operator {other:?} is not one of In, NotIn, Exists, DoesNotExist",
                    r.key
                ));
            }
        };
        exprs.push(SelectorRequirement {
            key: label_key(&r.key),
            operator,
            values: r.values.clone(),
        });
    }
    let sel = LabelSelector {
        match_labels,
        match_expressions: exprs,
    };
    sel.validate().map_err(|e| e.to_string())?;
    Ok(sel)
}

/// A selector's label key as identities carry it: Cilium's label source
/// prefixes (`k8s:`, `any:`) dropped, and Cilium's cluster label
/// (`io.cilium.k8s.policy.cluster`) read as [`CLUSTER_LABEL`], so selectors
/// written for Cilium select the same pods.
pub fn label_key(key: &str) -> String {
    let key = key
        .strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key);
    match key {
        "io.cilium.k8s.policy.cluster" => CLUSTER_LABEL.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
