//! `meshctl encryption status`: per node, the encryption mode, the
//! WireGuard key and its publication, and every peer with its last
//! handshake — from the node-agents' `GET /v1/encryption`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use meshctl::report::{EncryptionReport, EncryptionStatusReport};

use crate::Outcome;
use crate::agents;
use crate::kube::{Cluster, KubeArgs};
use crate::output::{self, OutputFormat};

/// `meshctl encryption …`.
#[derive(Debug, clap::Subcommand)]
pub enum EncryptionCommand {
    /// Per node: mode, WireGuard key, peers and their last handshake.
    ///
    /// Exits 3 when something is wrong (a peer that never completed a
    /// handshake, a key not published, nodes with different modes), 4 when
    /// some agents did not answer, 1 on errors.
    #[command(after_help = "Examples:
  meshctl encryption status --context lab-c1
  meshctl encryption status --context lab-c1 -o json | jq '.nodes[].device.peers'")]
    Status(StatusArgs),
    /// Give nodes a new WireGuard key: each agent generates and persists
    /// it, uses it, and publishes it on its Node; peers follow through the
    /// mesh and traffic resumes within one handshake.
    ///
    /// Exits 3 when a new key could not be published, 4 when some agents
    /// did not answer, 1 on errors.
    #[command(after_help = "Examples:
  meshctl encryption rotate-key --context lab-c1 --node c1-n1
  meshctl encryption rotate-key --context lab-c1          # every node, one after the other
  meshctl encryption status --context lab-c1              # then watch the handshakes come back")]
    RotateKey(RotateArgs),
}

/// Flags of `meshctl encryption rotate-key`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Context of the cluster.
    #[arg(long)]
    pub context: String,
    /// Only this node (default: every node of the cluster).
    #[arg(long)]
    pub node: Option<String>,
}

/// Flags of `meshctl encryption status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Context of the cluster.
    #[arg(long)]
    pub context: String,
}

/// Runs `meshctl encryption …`.
pub async fn run(
    kube: &KubeArgs,
    cmd: EncryptionCommand,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    match cmd {
        EncryptionCommand::Status(a) => status(kube, a, format).await,
        EncryptionCommand::RotateKey(a) => rotate(kube, a, format).await,
    }
}

async fn rotate(
    kube: &KubeArgs,
    args: RotateArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let cluster = Cluster::connect(kube, &args.context).await?;
    let mut agents = agents::of_cluster(&cluster).await?;
    if let Some(n) = &args.node {
        agents.retain(|a| a.node == *n);
        anyhow::ensure!(
            !agents.is_empty(),
            "context {}: no Node {n:?}",
            cluster.context
        );
    }
    let mut rotated = Vec::new();
    let mut unreachable = Vec::new();
    let mut unpublished = false;
    // One node after the other: the mesh never re-keys every tunnel at once.
    for a in &agents {
        match a.call(|c| c.rotate_key()) {
            Ok(r) => {
                if let Some(e) = &r.publish_error {
                    unpublished = true;
                    unreachable.push(meshctl::report::AgentProblem {
                        node: r.node.clone(),
                        problem: format!(
                            "node {}: rotated, but the new key is not on the Node: {e}; peers cannot follow until it is",
                            r.node
                        ),
                    });
                }
                rotated.push(meshctl::report::RotatedKey {
                    node: r.node,
                    old_public_key: r.old_public_key,
                    new_public_key: r.new_public_key,
                });
            }
            Err(p) => unreachable.push(p),
        }
    }
    anyhow::ensure!(
        !rotated.is_empty(),
        "no key was rotated:\n  {}",
        unreachable
            .iter()
            .map(|p| p.problem.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let report = meshctl::report::RotateKeyReport {
        context: cluster.context.clone(),
        rotated,
        unreachable,
    };
    output::emit(format, &report, |r| {
        let rows: Vec<Vec<String>> = r
            .rotated
            .iter()
            .map(|k| {
                vec![
                    k.node.clone(),
                    short_key(&k.old_public_key),
                    short_key(&k.new_public_key),
                ]
            })
            .collect();
        output::table(&["NODE", "OLD KEY", "NEW KEY"], &rows);
        crate::observe::warn_unreachable(&r.unreachable);
    })?;
    Ok(if unpublished {
        Outcome::CheckFailed
    } else if report.unreachable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Partial
    })
}

async fn status(
    kube: &KubeArgs,
    args: StatusArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let cluster = Cluster::connect(kube, &args.context).await?;
    let nodes = cluster.nodes().await?;
    let names = key_names(&nodes);
    let agents = nodes.iter().map(agents::Agent::of).collect::<Vec<_>>();
    let mut reports = Vec::new();
    let mut unreachable = Vec::new();
    for r in agents::each(&agents, |a| a.call(|c| c.encryption())) {
        match r {
            Ok(r) => reports.push(r),
            Err(p) => unreachable.push(p),
        }
    }
    reports.sort_by(|a, b| a.node.cmp(&b.node));
    let outcome = crate::observe::partial(&agents, &unreachable)?;
    let problems = problems(&reports);
    let report = EncryptionStatusReport {
        context: cluster.context.clone(),
        nodes: reports,
        problems,
        unreachable,
    };
    output::emit(format, &report, |r| print(r, &names))?;
    Ok(if !report.problems.is_empty() {
        Outcome::CheckFailed
    } else {
        outcome
    })
}

/// Public key → node name, from the Nodes' key annotations.
fn key_names(nodes: &[Node]) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter_map(|n| {
            let key = n
                .metadata
                .annotations
                .as_ref()?
                .get(mesh_api::annotations::WG_PUB_KEY)?;
            Some((key.clone(), n.metadata.name.clone()?))
        })
        .collect()
}

/// What is wrong, one sentence each.
pub fn problems(nodes: &[EncryptionReport]) -> Vec<String> {
    let mut out = Vec::new();
    let modes: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.mode.as_str()).collect();
    if modes.len() > 1 {
        out.push(format!(
            "nodes disagree on the encryption mode ({}): set encryption.enabled the same for every node-agent",
            nodes
                .iter()
                .map(|n| format!("{}={}", n.node, n.mode))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for n in nodes {
        if n.strict_mode && n.device.is_none() {
            out.push(format!(
                "node {}: strict mode is on but its WireGuard device is not up: its pods' traffic to other nodes is dropped (encryption_required) until the device starts; see the agent's log for why it cannot",
                n.node
            ));
        }
        let Some(dev) = &n.device else { continue };
        if !dev.key_published {
            out.push(format!(
                "node {}: its public key is not on its Node yet (annotation {}): other nodes cannot peer with it; check that the agent may patch its Node",
                n.node,
                mesh_api::annotations::WG_PUB_KEY
            ));
        }
        for p in &dev.peers {
            if p.last_handshake_seconds_ago.is_none() {
                out.push(format!(
                    "node {}: peer {} ({}) has never completed a handshake: is that node's agent running, and is UDP {} open between the nodes?",
                    n.node,
                    short_key(&p.public_key),
                    p.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "no endpoint".into()),
                    p.endpoint.map(|e| e.port()).or(dev.port).unwrap_or(51871),
                ));
            }
        }
        for r in &dev.rejected {
            out.push(format!("node {}: peer refused by the device: {r}", n.node));
        }
    }
    out
}

/// The first 8 characters of a key, then `…`.
pub fn short_key(k: &str) -> String {
    if k.len() > 8 {
        format!("{}…", &k[..8])
    } else {
        k.to_string()
    }
}

/// `12s ago`, `never`.
pub fn age(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h ago", s / 3600),
    }
}

fn print(r: &EncryptionStatusReport, names: &BTreeMap<String, String>) {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            let dev = n.device.as_ref();
            let peers = dev.map(|d| d.peers.len()).unwrap_or(0);
            let shaken = dev
                .map(|d| {
                    d.peers
                        .iter()
                        .filter(|p| p.last_handshake_seconds_ago.is_some())
                        .count()
                })
                .unwrap_or(0);
            vec![
                n.node.clone(),
                n.mode.clone(),
                yes(n.strict_mode),
                dev.and_then(|d| d.public_key.as_deref())
                    .map(short_key)
                    .unwrap_or_else(|| "-".into()),
                dev.map(|d| yes(d.key_published))
                    .unwrap_or_else(|| "-".into()),
                format!("{shaken}/{peers}"),
            ]
        })
        .collect();
    output::table(
        &[
            "NODE",
            "MODE",
            "STRICT",
            "PUBLIC KEY",
            "PUBLISHED",
            "HANDSHAKES",
        ],
        &rows,
    );
    let peers: Vec<Vec<String>> = r
        .nodes
        .iter()
        .flat_map(|n| {
            n.device.iter().flat_map(move |d| {
                d.peers.iter().map(move |p| {
                    vec![
                        n.node.clone(),
                        names
                            .get(&p.public_key)
                            .cloned()
                            .unwrap_or_else(|| short_key(&p.public_key)),
                        p.endpoint
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "-".into()),
                        p.allowed_ips
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        age(p.last_handshake_seconds_ago),
                        p.rx_bytes.to_string(),
                        p.tx_bytes.to_string(),
                    ]
                })
            })
        })
        .collect();
    if !peers.is_empty() {
        println!();
        output::table(
            &[
                "NODE",
                "PEER",
                "ENDPOINT",
                "ALLOWED IPS",
                "HANDSHAKE",
                "RX",
                "TX",
            ],
            &peers,
        );
    }
    if !r.problems.is_empty() {
        println!();
        for p in &r.problems {
            println!("✘ {p}");
        }
    }
    crate::observe::warn_unreachable(&r.unreachable);
}

#[cfg(test)]
mod tests;
