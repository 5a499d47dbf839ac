//! `meshctl services`: the global services of a cluster and where their
//! backends are.
//!
//! Two sources, said in the output: the cluster's Kubernetes Services that
//! carry the global annotation (name, ClusterIP, ports, affinity, shared),
//! and what one node-agent's datapath really balances each ClusterIP to
//! (`GET /v1/services`, merged local + remote backends, ready ones only),
//! each backend's cluster read from the identity its address has in that
//! agent's ipcache (`GET /v1/ipcache`), else from the node whose pod CIDR
//! holds it (`GET /v1/nodes`, the agent's mesh feed).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use mesh_agent_api::datapath::{IpcacheEntry, ServiceEntry};
use mesh_api::NodeRecord;
use meshctl::report::{GlobalService, ServiceBackend, ServicesReport};

use crate::Outcome;
use crate::agents::{self, Agent};
use crate::kube::{Cluster, KubeArgs};
use crate::output::{self, OutputFormat};

/// Flags of `meshctl services`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl services --context lab-c1
  meshctl services --context lab-c1 --namespace shop -o json

Sources: the cluster's Services with service.meshwork.io/global=true, and the
backends one node-agent's datapath balances each ClusterIP to (their cluster
from the ipcache identity).

Exit codes: 0 ok; 1 error; 4 no node-agent answered (backends unknown).")]
pub struct ServicesArgs {
    /// Context of the cluster.
    #[arg(long)]
    pub context: String,
    /// Only services of this namespace.
    #[arg(long = "service-namespace", short = 'N')]
    pub service_namespace: Option<String>,
    /// Also honour Cilium's global-service annotations (as the chart's
    /// compat.ciliumAnnotations does).
    #[arg(long)]
    pub compat_cilium: bool,
}

/// Cluster names by id and this cluster's pod CIDRs: how a backend address
/// is named.
#[derive(Debug, Clone, Default)]
pub struct ClusterNames {
    /// Name by id (this cluster and every remote the mesh-apiserver knows).
    pub by_id: BTreeMap<u8, String>,
    /// This cluster's name.
    pub own: String,
    /// This cluster's pod CIDRs.
    pub own_cidrs: Vec<IpNet>,
}

impl ClusterNames {
    /// From the mesh-apiserver's published status of `cluster`.
    pub async fn of(cluster: &Cluster) -> anyhow::Result<ClusterNames> {
        let Some(st) = cluster.status().await? else {
            let info = cluster.info().await?;
            return Ok(ClusterNames {
                by_id: [(info.id.get(), info.name.to_string())].into(),
                own: info.name.to_string(),
                own_cidrs: info.pod_cidrs,
            });
        };
        let mut by_id: BTreeMap<u8, String> = st
            .remotes
            .values()
            .filter_map(|r| Some((r.id?, r.name.clone())))
            .collect();
        by_id.insert(st.cluster_id, st.cluster.clone());
        Ok(ClusterNames {
            by_id,
            own: st.cluster,
            own_cidrs: st.pod_cidrs,
        })
    }

    /// The cluster of `ip`: from its ipcache identity's cluster bits, else
    /// the node whose pod CIDR holds it (the agent's mesh feed), else this
    /// cluster's pod CIDRs.
    pub fn cluster_of(
        &self,
        ip: IpAddr,
        ipcache: &[IpcacheEntry],
        nodes: &[NodeRecord],
    ) -> Option<String> {
        if let Some(e) = lookup(ipcache, ip)
            && let Some(id) = e.identity.cluster()
        {
            return Some(
                self.by_id
                    .get(&id.get())
                    .cloned()
                    .unwrap_or_else(|| format!("cluster-id-{}", id.get())),
            );
        }
        if let Some(n) = node_of(nodes, ip) {
            return Some(n.cluster.to_string());
        }
        self.own_cidrs
            .iter()
            .any(|c| c.contains(&ip))
            .then(|| self.own.clone())
    }
}

/// The node whose pod CIDR holds `ip` (longest prefix).
pub fn node_of(nodes: &[NodeRecord], ip: IpAddr) -> Option<&NodeRecord> {
    nodes
        .iter()
        .flat_map(|n| n.pod_cidrs.iter().map(move |c| (c, n)))
        .filter(|(c, _)| c.contains(&ip))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(_, n)| n)
}

/// The longest-prefix ipcache entry holding `ip`.
pub fn lookup(ipcache: &[IpcacheEntry], ip: IpAddr) -> Option<&IpcacheEntry> {
    ipcache
        .iter()
        .filter(|e| e.cidr.contains(&ip))
        .max_by_key(|e| e.cidr.prefix_len())
}

/// The global services among `services`, with the backends `datapath`
/// holds for their ClusterIP (pure).
pub fn global_services(
    services: &[Service],
    datapath: Option<&DatapathDump>,
    names: &ClusterNames,
    compat_cilium: bool,
) -> Vec<GlobalService> {
    let mut out = Vec::new();
    for svc in services {
        let annotations = svc.metadata.annotations.clone().unwrap_or_default();
        let (opts, invalid) =
            match mesh_api::annotations::service_mesh_options(&annotations, compat_cilium) {
                Ok(o) if o.global => (o, None),
                Ok(_) => continue,
                // Malformed: shown (the mesh treats it as not global) only
                // when it asks to be global.
                Err(e) => {
                    let wants_global = annotations
                        .get(mesh_api::annotations::GLOBAL)
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    if !wants_global {
                        continue;
                    }
                    (Default::default(), Some(e.to_string()))
                }
            };
        let spec = svc.spec.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.filter(|ip| ip != "None" && !ip.is_empty());
        let ports: Vec<(u16, String)> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p.port as u16,
                    format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")),
                )
            })
            .collect();
        let mut backends = Vec::new();
        if let (Some(dump), Some(vip)) = (
            datapath,
            cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        ) {
            for e in &dump.services {
                if e.frontend.ip != vip
                    || e.frontend.kind != mesh_agent_api::datapath::FrontendKind::ClusterIp
                    || !ports.iter().any(|(p, _)| *p == e.frontend.port)
                {
                    continue;
                }
                for b in &e.backends {
                    backends.push(ServiceBackend {
                        frontend_port: e.frontend.port,
                        ip: b.ip.to_string(),
                        port: b.port,
                        cluster: names.cluster_of(b.ip, &dump.ipcache, &dump.nodes),
                    });
                }
            }
        }
        let mut by_cluster: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for b in &backends {
            if seen.insert(&b.ip) {
                *by_cluster
                    .entry(b.cluster.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1;
            }
        }
        out.push(GlobalService {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            cluster_ip,
            ports: ports.into_iter().map(|(_, s)| s).collect(),
            affinity: opts.affinity.to_string(),
            shared: opts.shared,
            invalid,
            backends,
            backends_by_cluster: by_cluster,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// What one node-agent holds: its services and ipcache, and the nodes of
/// every cluster its mesh feed knows.
#[derive(Debug, Clone, Default)]
pub struct DatapathDump {
    /// The node.
    pub node: String,
    /// Its service maps.
    pub services: Vec<ServiceEntry>,
    /// Its ipcache.
    pub ipcache: Vec<IpcacheEntry>,
    /// Every cluster's nodes.
    pub nodes: Vec<NodeRecord>,
}

/// The first agent that answers both dumps, and the ones that did not.
pub fn first_datapath(
    agents: &[Agent],
) -> (Option<DatapathDump>, Vec<meshctl::report::AgentProblem>) {
    let mut problems = Vec::new();
    for a in agents {
        match a.call(|c| {
            Ok(DatapathDump {
                node: a.node.clone(),
                services: c.services()?,
                ipcache: c.ipcache()?,
                nodes: c.nodes()?,
            })
        }) {
            Ok(d) => return (Some(d), problems),
            Err(p) => problems.push(p),
        }
    }
    (None, problems)
}

/// Runs `meshctl services`.
pub async fn services(
    kube: &KubeArgs,
    args: ServicesArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let cluster = Cluster::connect(kube, &args.context).await?;
    let names = ClusterNames::of(&cluster).await?;
    let mut svcs = cluster.services().await?;
    if let Some(ns) = &args.service_namespace {
        svcs.retain(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()));
    }
    let agents = agents::of_cluster(&cluster).await?;
    let (dp, unreachable) = first_datapath(&agents);
    let services = global_services(&svcs, dp.as_ref(), &names, args.compat_cilium);
    let report = ServicesReport {
        context: cluster.context.clone(),
        cluster: names.own.clone(),
        datapath_node: dp.map(|d| d.node),
        services,
        unreachable,
    };
    output::emit(format, &report, print)?;
    Ok(if report.datapath_node.is_none() {
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}

fn print(r: &ServicesReport) {
    if r.services.is_empty() {
        println!(
            "no global services in cluster {} (annotate a Service with {}=true)",
            r.cluster,
            mesh_api::annotations::GLOBAL
        );
    } else {
        let rows: Vec<Vec<String>> = r
            .services
            .iter()
            .map(|s| {
                let backends = if r.datapath_node.is_none() {
                    "unknown".to_string()
                } else if s.backends_by_cluster.is_empty() {
                    "none".to_string()
                } else {
                    s.backends_by_cluster
                        .iter()
                        .map(|(c, n)| format!("{c}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![
                    format!("{}/{}", s.namespace, s.name),
                    s.cluster_ip.clone().unwrap_or_else(|| "-".into()),
                    s.ports.join(","),
                    s.affinity.clone(),
                    if s.shared { "yes" } else { "no" }.into(),
                    backends,
                    s.invalid.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &[
                "SERVICE",
                "CLUSTER-IP",
                "PORTS",
                "AFFINITY",
                "SHARED",
                "BACKENDS (ready, by cluster)",
                "PROBLEM",
            ],
            &rows,
        );
    }
    match &r.datapath_node {
        Some(n) => println!("\nbackends as the datapath of node {n} balances them"),
        None => println!("\nbackends unknown: no node-agent answered"),
    }
    crate::observe::warn_unreachable(&r.unreachable);
}

#[cfg(test)]
mod tests;
