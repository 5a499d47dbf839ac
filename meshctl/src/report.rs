//! Typed `-o json` output of meshctl's mesh-inspection commands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use mesh_agent_api::encryption::EncryptionReport;
pub use mesh_agent_api::flows::{FlowPeer, FlowRecord, Verdict};

/// A node whose agent did not answer, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProblem {
    /// The node.
    pub node: String,
    /// What went wrong and what to do.
    pub problem: String,
}

/// `meshctl status -o json`: the mesh-apiserver's published status plus
/// what this cluster's node-agents say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The mesh-apiserver's status (the `meshwork-status` ConfigMap).
    #[serde(flatten)]
    pub mesh: mesh_api::clustermesh::MeshStatus,
    /// The node-agents.
    pub agents: AgentsSummary,
}

/// The node-agents of a cluster, as they answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsSummary {
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Agents that answered and whose mesh feed is synced.
    pub ready: usize,
    /// Encryption as the agents report it: `wireguard`, `off`, `mixed`
    /// (agents disagree) or `unknown` (none answered).
    pub encryption: String,
    /// Agents that did not answer, and what to do.
    pub unreachable: Vec<AgentProblem>,
    /// Agents that answered but are not ready, and why.
    pub not_ready: Vec<AgentProblem>,
}

/// `meshctl observe -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserveReport {
    /// The kube context.
    pub context: String,
    /// Matching flows of every reachable agent, oldest first.
    pub flows: Vec<FlowRecord>,
    /// Agents that did not answer.
    pub unreachable: Vec<AgentProblem>,
}

/// `meshctl encryption status -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionStatusReport {
    /// The kube context.
    pub context: String,
    /// Each reachable node's encryption.
    pub nodes: Vec<EncryptionReport>,
    /// What is wrong (a peer without handshake, a key not published, ...).
    pub problems: Vec<String>,
    /// Agents that did not answer.
    pub unreachable: Vec<AgentProblem>,
}

/// `meshctl encryption rotate-key -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyReport {
    /// The kube context.
    pub context: String,
    /// (node, old public key, new public key) of every rotated node.
    pub rotated: Vec<RotatedKey>,
    /// Agents that did not answer or refused.
    pub unreachable: Vec<AgentProblem>,
}

/// One node's key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedKey {
    /// The node.
    pub node: String,
    /// Its public key before.
    pub old_public_key: String,
    /// Its public key now.
    pub new_public_key: String,
}

/// `meshctl services -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesReport {
    /// The kube context.
    pub context: String,
    /// Its cluster.
    pub cluster: String,
    /// Which node's datapath the backends were read from (None: no agent
    /// answered; backends unknown).
    pub datapath_node: Option<String>,
    /// The global services of this cluster.
    pub services: Vec<GlobalService>,
    /// Agents that did not answer.
    pub unreachable: Vec<AgentProblem>,
}

/// A global service and where its backends are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP in this cluster.
    pub cluster_ip: Option<String>,
    /// Ports (`80/TCP`).
    pub ports: Vec<String>,
    /// `none`, `local` or `remote`.
    pub affinity: String,
    /// Whether this cluster shares its backends.
    pub shared: bool,
    /// A malformed annotation (the mesh treats the service as not global).
    pub invalid: Option<String>,
    /// The backends the datapath balances this ClusterIP to.
    pub backends: Vec<ServiceBackend>,
    /// Backend count per cluster.
    pub backends_by_cluster: BTreeMap<String, usize>,
}

/// One backend of a global service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBackend {
    /// Frontend port it serves.
    pub frontend_port: u16,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Cluster (from the identity of its address in the ipcache).
    pub cluster: Option<String>,
}

/// The state of one hop of `meshctl explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HopStatus {
    /// This hop lets the connection through.
    Pass,
    /// This hop stops it (the detail says why).
    Fail,
    /// Not applicable or not checkable here (the detail says why).
    Skip,
}

impl HopStatus {
    /// ✔, ✘ or –.
    pub fn mark(self) -> &'static str {
        match self {
            HopStatus::Pass => "✔",
            HopStatus::Fail => "✘",
            HopStatus::Skip => "–",
        }
    }
}

/// One hop of `meshctl explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// What is checked (`source`, `agent`, `identity`, `service`, `egress
    /// policy`, `route`, `wireguard`, `destination`, `ingress policy`).
    pub step: String,
    /// Verdict.
    pub status: HopStatus,
    /// Why, for people.
    pub detail: String,
}

/// One possible backend of the destination and the hops towards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPath {
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// Its cluster, when known.
    pub cluster: Option<String>,
    /// Its pod (`namespace/name`), when found.
    pub pod: Option<String>,
    /// Its node, when found.
    pub node: Option<String>,
    /// The hops from the source's node to it.
    pub hops: Vec<Hop>,
    /// Whether every hop passes.
    pub ok: bool,
}

/// `meshctl explain -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// The source pod (`namespace/name`).
    pub source: String,
    /// The destination as given.
    pub destination: String,
    /// Hops before the choice of a backend (source, agent, identity,
    /// service lookup, egress policy).
    pub hops: Vec<Hop>,
    /// Every possible backend and its path.
    pub backends: Vec<BackendPath>,
    /// The last flows between the source and the destination's addresses,
    /// from the agents on both ends.
    pub flows: Vec<FlowRecord>,
    /// Whether the connection works: every common hop passes and at least
    /// one backend path passes.
    pub ok: bool,
    /// One sentence: why it works or what stops it.
    pub summary: String,
}
