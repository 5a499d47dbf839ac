//! Policy as `/v1/status` (`policy`) and `GET /v1/policies` report it:
//! compiled rules by id, refused policies, each endpoint's policy.

use std::collections::BTreeMap;

use mesh_api::Identity;
use serde::{Deserialize, Serialize};

use crate::datapath::Direction;

/// The policy side of the agent's status (`/v1/status` → `policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Whether the policy CRDs are watched (Kubernetes reachable).
    pub watching: bool,
    /// Policies known (both kinds).
    pub policies: usize,
    /// Local endpoints with ingress or egress enforced.
    pub enforcing_endpoints: usize,
    /// Every compiled rule, by id (what flow events' `rule_id` refer to).
    pub rules: Vec<RuleRef>,
    /// Refused policies, with what to change.
    pub problems: Vec<PolicyProblem>,
    /// Identities known across the mesh.
    pub identities: usize,
    /// The node-local identity of each CIDR the policies name.
    #[serde(default)]
    pub cidr_identities: BTreeMap<String, Identity>,
    /// The host firewall installed (None: no host policy selects this
    /// node).
    #[serde(default)]
    pub host_firewall: Option<crate::datapath::HostPolicy>,
}

/// Names the rule behind a rule id: what flow events and `explain` show.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    /// The id carried by policy map entries and flow events.
    pub id: u32,
    /// Policy kind.
    pub kind: String,
    /// `namespace/name` (or `name` for cluster-wide policies).
    pub policy: String,
    /// Direction.
    pub direction: Direction,
    /// Index of the rule in that direction's list.
    pub index: usize,
    /// A deny rule (`ingressDeny`/`egressDeny`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny: bool,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        let deny = if self.deny { "Deny" } else { "" };
        write!(
            f,
            "{} {} {dir}{deny}[{}]",
            self.kind, self.policy, self.index
        )
    }
}

/// A policy the compiler refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyProblem {
    /// `Kind namespace/name`.
    pub policy: String,
    /// What is wrong and what to change.
    pub message: String,
}

/// One endpoint's compiled policy, as `GET /v1/policies` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicyReport {
    /// Node-local endpoint id.
    pub endpoint_id: crate::datapath::EndpointId,
    /// Pod namespace, when known.
    pub namespace: Option<String>,
    /// Pod name, when known.
    pub pod: Option<String>,
    /// The pod's addresses.
    pub ips: Vec<std::net::IpAddr>,
    /// Its security identity.
    pub identity: mesh_api::Identity,
    /// What the policy map holds for it (no entry: nothing enforced).
    pub policy: crate::datapath::EndpointPolicy,
    /// The rules behind its allow and deny entries, by rule id (`Kind ns/name
    /// direction[index]`).
    #[serde(default)]
    pub rules: std::collections::BTreeMap<u32, String>,
}
