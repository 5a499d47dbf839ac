//! `meshctl observe`: the flows every node-agent of a cluster saw, filtered,
//! merged in time order; `--follow` streams new ones.

use std::time::Duration;

use mesh_agent_api::flows::{FlowFilter, FlowPeer};
use meshctl::report::{AgentProblem, FlowRecord, ObserveReport, Verdict};

use crate::agents::{self, Agent};
use crate::kube::{Cluster, KubeArgs};
use crate::output::{self, OutputFormat};
use crate::{Outcome, parse_duration};

/// Flags of `meshctl observe`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl observe --context lab-c1
  meshctl observe --context lab-c1 --verdict dropped --last 50
  meshctl observe --context lab-c1 --pod shop/client --cluster c2 -o json
  meshctl observe --context lab-c1 --pod-namespace shop --follow

Exit codes: 0 every agent answered; 1 error (no agent answered, bad flags);
4 some agents did not answer (the others' flows are shown).")]
pub struct ObserveArgs {
    /// Context of the cluster whose agents are asked.
    #[arg(long)]
    pub context: String,
    /// Only flows from or to pods of this namespace (`--namespace` is
    /// where Meshwork is installed).
    #[arg(long)]
    pub pod_namespace: Option<String>,
    /// Only flows from or to this pod (`name` or `namespace/name`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows from or to this security identity (number).
    #[arg(long)]
    pub identity: Option<u32>,
    /// Only flows with this verdict: forwarded, dropped, translated.
    #[arg(long)]
    pub verdict: Option<Verdict>,
    /// Only flows from or to addresses of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only flows of the last duration (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// How many of the most recent matching flows to show (per agent, then
    /// merged and cut to this many).
    #[arg(long, default_value_t = 20)]
    pub last: usize,
    /// Keep running and print new flows as they happen (JSON: one flow per
    /// line).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

impl ObserveArgs {
    fn filter(&self) -> FlowFilter {
        FlowFilter {
            namespace: self.pod_namespace.clone(),
            pod: self.pod.clone(),
            identity: self.identity,
            verdict: self.verdict,
            cluster: self.cluster.clone(),
            since: self.since.map(|d| {
                mesh_agent_api::flows::unix_ms(std::time::SystemTime::now())
                    .saturating_sub(d.as_millis() as u64)
            }),
            last: Some(self.last),
            follow: false,
        }
    }
}

/// Runs `meshctl observe`.
pub async fn observe(
    kube: &KubeArgs,
    args: ObserveArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let cluster = Cluster::connect(kube, &args.context).await?;
    let agents = agents::of_cluster(&cluster).await?;
    let filter = args.filter();
    if args.follow {
        return follow(&agents, &filter, format);
    }
    let (mut flows, unreachable) = collect(&agents, &filter);
    let outcome = partial(&agents, &unreachable)?;
    name_remote_pods(kube, &cluster, &mut flows).await;
    let report = ObserveReport {
        context: cluster.context.clone(),
        flows,
        unreachable,
    };
    output::emit(format, &report, |r| {
        print_table(&r.flows);
        warn_unreachable(&r.unreachable);
    })?;
    Ok(outcome)
}

/// Names the addresses the agents could not (pods of other nodes and of
/// other clusters) from the Pods of this context and of the contexts of
/// the other clusters in the flows (best effort: a cluster without a
/// context in the kubeconfig stays unnamed).
async fn name_remote_pods(kube: &KubeArgs, cluster: &Cluster, flows: &mut [FlowRecord]) {
    let unnamed = |p: &FlowPeer| p.pod.is_none() && p.ip.is_some();
    if !flows
        .iter()
        .any(|f| unnamed(&f.source) || unnamed(&f.destination))
    {
        return;
    }
    let own = cluster.info().await.ok().map(|i| i.name.to_string());
    let mut pods: Vec<k8s_openapi::api::core::v1::Pod> = cluster.pods().await.unwrap_or_default();
    let others: std::collections::BTreeSet<String> = flows
        .iter()
        .flat_map(|f| [&f.source, &f.destination])
        .filter(|p| unnamed(p))
        .filter_map(|p| p.cluster.clone())
        .filter(|c| Some(c) != own.as_ref())
        .collect();
    for c in others {
        if let Some(other) = Cluster::of_cluster_name(kube, &c).await {
            pods.extend(other.pods().await.unwrap_or_default());
        }
    }
    name_peers(flows, &pods);
}

/// Fills namespace/pod of unnamed peers whose address is a pod's IP (pure).
pub fn name_peers(flows: &mut [FlowRecord], pods: &[k8s_openapi::api::core::v1::Pod]) {
    let by_ip: std::collections::BTreeMap<std::net::IpAddr, (String, String)> = pods
        .iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((
                ip,
                (p.metadata.namespace.clone()?, p.metadata.name.clone()?),
            ))
        })
        .collect();
    for f in flows.iter_mut() {
        for peer in [&mut f.source, &mut f.destination] {
            if peer.pod.is_some() {
                continue;
            }
            if let Some((ns, name)) = peer.ip.and_then(|ip| by_ip.get(&ip)) {
                peer.namespace = Some(ns.clone());
                peer.pod = Some(name.clone());
            }
        }
    }
}

/// The matching flows of every agent, merged in time order and cut to
/// `filter.last`.
pub fn collect(agents: &[Agent], filter: &FlowFilter) -> (Vec<FlowRecord>, Vec<AgentProblem>) {
    let mut flows = Vec::new();
    let mut unreachable = Vec::new();
    for r in agents::each(agents, |a| a.call(|c| c.flows(filter))) {
        match r {
            Ok(f) => flows.extend(f),
            Err(p) => unreachable.push(p),
        }
    }
    (merge(flows, filter.last), unreachable)
}

/// Sorts flows by time (then node) and keeps the newest `last`.
pub fn merge(mut flows: Vec<FlowRecord>, last: Option<usize>) -> Vec<FlowRecord> {
    flows.sort_by(|a, b| {
        (a.time_unix_ms, a.kernel_ns, &a.node).cmp(&(b.time_unix_ms, b.kernel_ns, &b.node))
    });
    if let Some(n) = last
        && flows.len() > n
    {
        flows.drain(..flows.len() - n);
    }
    flows
}

/// Outcome of a command that asked several agents: an error when none
/// answered, `Partial` when some did not.
pub fn partial(agents: &[Agent], unreachable: &[AgentProblem]) -> anyhow::Result<Outcome> {
    if !agents.is_empty() && unreachable.len() == agents.len() {
        anyhow::bail!(
            "no node-agent answered:\n  {}",
            unreachable
                .iter()
                .map(|p| p.problem.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    Ok(if unreachable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Partial
    })
}

/// Prints the unreachable agents on stderr.
pub fn warn_unreachable(unreachable: &[AgentProblem]) {
    for p in unreachable {
        eprintln!("warning: {}", p.problem);
    }
}

/// One table row of a flow.
pub fn row(f: &FlowRecord) -> Vec<String> {
    let side = |p: &mesh_agent_api::flows::FlowPeer| {
        let mut s = p.display_name();
        if p.port != 0 {
            s.push_str(&format!(":{}", p.port));
        }
        if let Some(c) = &p.cluster {
            s.push_str(&format!(" ({c})"));
        }
        s
    };
    let verdict = match &f.drop_reason {
        Some(r) if f.verdict == Verdict::Dropped => format!("DROPPED {r}"),
        _ => f.verdict.name().to_uppercase(),
    };
    vec![
        time_of_day(f.time_unix_ms),
        f.node.clone(),
        side(&f.source),
        side(&f.destination),
        f.protocol.clone(),
        verdict,
        f.observation.clone(),
        format!("{} → {}", f.source.identity, f.destination.identity),
    ]
}

const HEADER: [&str; 8] = [
    "TIME",
    "NODE",
    "SOURCE",
    "DESTINATION",
    "PROTO",
    "VERDICT",
    "SEEN AT",
    "IDENTITIES",
];

/// Prints flows as a table.
pub fn print_table(flows: &[FlowRecord]) {
    if flows.is_empty() {
        println!("no flows match");
        return;
    }
    let rows: Vec<Vec<String>> = flows.iter().map(row).collect();
    output::table(&HEADER, &rows);
}

/// `HH:MM:SS.mmm` (UTC) of a Unix-ms time.
pub fn time_of_day(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

fn follow(agents: &[Agent], filter: &FlowFilter, format: OutputFormat) -> anyhow::Result<Outcome> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<FlowRecord, AgentProblem>>();
    for a in agents {
        let (a, tx, filter) = (a.clone(), tx.clone(), filter.clone());
        std::thread::spawn(move || {
            let sent = a.call(|c| c.follow_flows(&filter, |f| tx.send(Ok(f)).is_ok()));
            if let Err(p) = sent {
                let _ = tx.send(Err(p));
            }
        });
    }
    drop(tx);
    if format == OutputFormat::Table {
        println!("{}", HEADER.join("  "));
    }
    let mut failed = 0;
    for item in rx {
        match item {
            Ok(f) => match format {
                OutputFormat::Json => println!("{}", serde_json::to_string(&f)?),
                OutputFormat::Table => println!("{}", row(&f).join("  ")),
            },
            Err(p) => {
                failed += 1;
                eprintln!("warning: {}", p.problem);
            }
        }
    }
    anyhow::ensure!(failed < agents.len(), "no node-agent is streaming flows");
    Ok(Outcome::Partial)
}

#[cfg(test)]
mod tests;
