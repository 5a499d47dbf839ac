//! Finding the node-agents of a cluster: every node-agent publishes where
//! its local API is on its Node (annotation `network.meshwork.io/agent-api`,
//! e.g. `unix:///var/run/meshwork/agent.sock`); meshctl reads the Nodes of
//! the context and talks to each agent whose socket it can reach.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;
use mesh_agent_api::AgentClient;
use mesh_api::annotations::AGENT_API;
use meshctl::report::AgentProblem;

/// One node and how to reach its agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The node.
    pub node: String,
    /// The annotation's value (empty when absent).
    pub api: String,
    /// The client, when the annotation names a socket.
    client: Result<AgentClient, String>,
}

impl Agent {
    /// The agent of `node`, from its annotation.
    pub fn of(node: &Node) -> Agent {
        let name = node.metadata.name.clone().unwrap_or_default();
        let api = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(AGENT_API))
            .cloned()
            .unwrap_or_default();
        Agent {
            client: client_for(&name, &api),
            node: name,
            api,
        }
    }

    /// Calls `f` with the agent's client; a failure becomes a problem that
    /// says what to do.
    pub fn call<T>(
        &self,
        f: impl FnOnce(&AgentClient) -> mesh_agent_api::Result<T>,
    ) -> Result<T, AgentProblem> {
        let client = self.client.as_ref().map_err(|p| AgentProblem {
            node: self.node.clone(),
            problem: p.clone(),
        })?;
        f(client).map_err(|e| AgentProblem {
            node: self.node.clone(),
            problem: describe(&self.node, &self.api, &e),
        })
    }
}

/// A client for the API at `api` (`unix://<path>`), or what is wrong.
pub fn client_for(node: &str, api: &str) -> Result<AgentClient, String> {
    if api.is_empty() {
        return Err(format!(
            "node {node} has no {AGENT_API} annotation: its node-agent is not running, has not started yet, or cannot write its Node (check `kubectl get pods -n meshwork-system -o wide` and the agent's log)"
        ));
    }
    match api.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(AgentClient::new(PathBuf::from(path))),
        _ => Err(format!(
            "node {node}: {AGENT_API} is {api:?}; this meshctl speaks only unix://<absolute path>"
        )),
    }
}

/// A failed agent call, said so a person knows what to do.
pub fn describe(node: &str, api: &str, e: &mesh_agent_api::Error) -> String {
    match e {
        mesh_agent_api::Error::AgentUnreachable { source, .. } => format!(
            "node {node}: cannot reach its node-agent at {api} ({source}). meshctl talks to node-agents over their local unix socket: run meshctl on that node or where the socket is mounted (e.g. `kubectl -n meshwork-system exec <node-agent pod on {node}> -- meshctl ...`)"
        ),
        other => format!("node {node}: node-agent at {api}: {other}"),
    }
}

/// Runs `f` for every agent in parallel (one thread each); results in
/// node order.
pub fn each<T: Send>(
    agents: &[Agent],
    f: impl Fn(&Agent) -> Result<T, AgentProblem> + Sync,
) -> Vec<Result<T, AgentProblem>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = agents.iter().map(|a| s.spawn(|| f(a))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("agent call thread"))
            .collect()
    })
}

/// The agents of every Node of `cluster`, sorted by node name.
pub async fn of_cluster(cluster: &crate::kube::Cluster) -> anyhow::Result<Vec<Agent>> {
    let mut agents: Vec<Agent> = cluster.nodes().await?.iter().map(Agent::of).collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    anyhow::ensure!(
        !agents.is_empty(),
        "context {}: the cluster has no Nodes",
        cluster.context
    );
    Ok(agents)
}
