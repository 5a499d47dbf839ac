//! Gathering the evidence for `meshctl explain`: the I/O of the walk
//! (Kubernetes, the source's node-agent, the far ends' node-agents and
//! kube contexts), stopping at the first hop that cannot go on. Every
//! verdict is [`super::judge`]'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

use k8s_openapi::api::core::v1::{Node, Pod};
use mesh_agent_api::datapath::Direction;
use mesh_agent_api::flows::FlowFilter;
use meshctl::report::{BackendPath, ExplainReport, FlowRecord, HopStatus};

use super::ExplainArgs;
use super::judge::{
    FarAgent, FarEvidence, FarPod, ServiceFacts, fail, far_end_hops, hop, hop_summary,
    identity_hop, policy_verdict, remote_cluster_hop, route_hop, service_frontend, wireguard_hop,
    world,
};
use crate::agents::Agent;
use crate::kube::{Cluster, KubeArgs};
use crate::services::{ClusterNames, lookup};

fn pod_ip(p: &Pod) -> Option<IpAddr> {
    p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

fn pod_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

fn agent_of(nodes: &[Node], node: &str) -> Option<Agent> {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .map(Agent::of)
}

/// The far end of a backend: its cluster's context, pods and nodes.
struct FarEnd {
    cluster: Cluster,
    pods: Vec<Pod>,
    nodes: Vec<Node>,
}

/// Finds (and caches) the context of each cluster name.
struct Contexts<'a> {
    kube: &'a KubeArgs,
    by_name: BTreeMap<String, Option<Rc<FarEnd>>>,
}

impl Contexts<'_> {
    async fn far_end(&mut self, cluster: &str) -> Option<Rc<FarEnd>> {
        if let Some(c) = self.by_name.get(cluster) {
            return c.clone();
        }
        if let Some(c) = Cluster::of_cluster_name(self.kube, cluster).await {
            let (pods, nodes) = (
                c.pods().await.unwrap_or_default(),
                c.nodes().await.unwrap_or_default(),
            );
            let far = Rc::new(FarEnd {
                cluster: c,
                pods,
                nodes,
            });
            self.by_name.insert(cluster.into(), Some(far.clone()));
            return Some(far);
        }
        self.by_name.insert(cluster.into(), None);
        None
    }
}

/// Walks from the source pod to every backend of the destination, hop by
/// hop, into a report (not yet judged as a whole: see
/// [`super::judge::finish`]). Errors are I/O failures before the walk
/// can start (the kube context, the source's cluster).
pub async fn walk(
    kube: &KubeArgs,
    args: &ExplainArgs,
    source: (String, String),
    destination: (String, String, Option<u16>),
) -> anyhow::Result<ExplainReport> {
    let (src_ns, src_name) = source;
    let (dst_ns, dst_name, dst_port) = destination;
    let cluster = Cluster::connect(kube, &args.context).await?;
    let names = ClusterNames::of(&cluster).await?;
    let status = cluster.status().await?;
    let mut report = ExplainReport {
        source: format!("{src_ns}/{src_name}"),
        destination: args.destination.clone(),
        hops: Vec::new(),
        backends: Vec::new(),
        flows: Vec::new(),
        ok: false,
        summary: String::new(),
    };

    // 1. The source pod.
    let Some(src_pod) = cluster.pod(&src_ns, &src_name).await? else {
        return Ok(fail(
            report,
            "source",
            format!(
                "no Pod {src_ns}/{src_name} in context {} (check the name and namespace)",
                cluster.context
            ),
        ));
    };
    let src_node = src_pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let Some(src_ip) = pod_ip(&src_pod) else {
        let detail = format!("{} has no IP yet: is it running?", report.source);
        return Ok(fail(report, "source", detail));
    };
    report.hops.push(hop(
        "source",
        HopStatus::Pass,
        format!(
            "{} on node {src_node}, IP {src_ip}, cluster {}",
            report.source, names.own
        ),
    ));

    // 2. Its node-agent.
    let nodes = cluster.nodes().await?;
    let Some(src_agent) = agent_of(&nodes, &src_node) else {
        return Ok(fail(
            report,
            "agent",
            format!("node {src_node:?} of the pod is not a Node of the cluster"),
        ));
    };
    let src_status = match src_agent.call(|c| c.status()) {
        Ok(s) => s,
        Err(p) => return Ok(fail(report, "agent", p.problem)),
    };
    report.hops.push(hop(
        "agent",
        HopStatus::Pass,
        format!(
            "node-agent of {src_node} answers at {} (datapath {})",
            src_agent.api, src_status.datapath
        ),
    ));
    let fetched = src_agent.call(|c| {
        Ok((
            c.endpoints()?,
            c.ipcache()?,
            c.services()?,
            c.policies()?,
            c.encryption()?,
            c.nodes()?,
        ))
    });
    let (endpoints, ipcache, services, policies, encryption, mesh_nodes) = match fetched {
        Ok(v) => v,
        Err(p) => return Ok(fail(report, "agent", p.problem)),
    };

    // 3. The source's identity.
    let Some(src_ep) = endpoints
        .iter()
        .find(|e| e.registration.ips.contains(&src_ip))
    else {
        return Ok(fail(
            report,
            "identity",
            format!(
                "the node-agent of {src_node} has no endpoint with IP {src_ip}: the pod was not wired by mesh-cni on this node"
            ),
        ));
    };
    report.hops.push(identity_hop(src_ep, &names));

    // 4. The destination: a Service (lookup in the datapath) or a Pod.
    let mut targets: Vec<(IpAddr, u16)> = Vec::new();
    let mut vip: Option<IpAddr> = None;
    if let Some(svc) = cluster.service(&dst_ns, &dst_name).await? {
        let spec = svc.spec.clone().unwrap_or_default();
        let facts = ServiceFacts {
            name: format!("{dst_ns}/{dst_name}"),
            ports: spec
                .ports
                .unwrap_or_default()
                .iter()
                .map(|p| p.port as u16)
                .collect(),
            cluster_ip: spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
        };
        let dump = crate::services::DatapathDump {
            node: src_node.clone(),
            services: services.clone(),
            ipcache: ipcache.clone(),
            nodes: mesh_nodes.clone(),
        };
        let global = crate::services::global_services(
            std::slice::from_ref(&svc),
            Some(&dump),
            &names,
            false,
        );
        match service_frontend(&facts, dst_port, &services, global.first(), &src_node) {
            Ok(f) => {
                vip = Some(f.vip);
                targets = f.targets;
                report.hops.push(f.hop);
            }
            Err(stop) => {
                report.hops.push(stop);
                return Ok(report);
            }
        }
    } else if let Some(pod) = match &args.destination_context {
        Some(ctx) => Cluster::connect(kube, ctx).await?,
        None => cluster.clone(),
    }
    .pod(&dst_ns, &dst_name)
    .await?
    {
        let Some(ip) = pod_ip(&pod) else {
            return Ok(fail(
                report,
                "destination",
                format!("{dst_ns}/{dst_name} has no IP yet: is it running?"),
            ));
        };
        targets.push((ip, dst_port.unwrap_or(0)));
        report.hops.push(hop(
            "service",
            HopStatus::Skip,
            format!("{dst_ns}/{dst_name} is a pod ({ip}): no service lookup"),
        ));
    } else {
        return Ok(fail(
            report,
            "destination",
            format!(
                "neither a Service nor a Pod {dst_ns}/{dst_name} in context {}{}",
                cluster.context,
                args.destination_context
                    .as_ref()
                    .map(|c| format!(" (nor a Pod in context {c})"))
                    .unwrap_or_default()
            ),
        ));
    }

    // 5. Every backend: remote cluster, route, egress policy, WireGuard,
    //    destination endpoint, ingress policy.
    let (src_policy, src_rules) = policies
        .iter()
        .find(|p| p.endpoint_id == src_ep.id)
        .map(|p| (p.policy.clone(), p.rules.clone()))
        .unwrap_or_default();
    // This cluster is the far end of its own backends.
    let own_end = Rc::new(FarEnd {
        pods: cluster.pods().await?,
        nodes: nodes.clone(),
        cluster: cluster.clone(),
    });
    let mut contexts = Contexts {
        kube,
        by_name: BTreeMap::from([(names.own.clone(), Some(own_end))]),
    };
    let mut far_flows: Vec<FlowRecord> = Vec::new();
    for (ip, port) in targets.clone() {
        let mut hops = Vec::new();
        let entry = lookup(&ipcache, ip);
        let backend_cluster = names.cluster_of(ip, &ipcache, &mesh_nodes);
        // What the source's datapath sees the backend as: its ipcache
        // identity, else world.
        let dst_identity = entry.map(|e| e.identity).unwrap_or(world());
        if let Some(c) = &backend_cluster {
            hops.extend(remote_cluster_hop(status.as_ref(), c, &names.own));
        }
        let (route, same_node) = route_hop(
            &src_node,
            src_status.pod_cidr,
            &src_status.routing.routes,
            &mesh_nodes,
            entry,
            ip,
        );
        hops.push(route);
        let (st, why) = policy_verdict(
            &src_policy,
            &src_rules,
            Direction::Egress,
            src_ep.identity,
            Some(dst_identity),
            port,
            &report.source,
        );
        hops.push(hop("egress policy", st, why));
        hops.push(wireguard_hop(&encryption, &src_node, ip, same_node));
        let mut path = BackendPath {
            ip: ip.to_string(),
            port,
            cluster: backend_cluster.clone(),
            pod: None,
            node: None,
            hops: Vec::new(),
            ok: false,
        };
        let far = match &backend_cluster {
            Some(c) => contexts.far_end(c).await,
            None => None,
        };
        let evidence = match far {
            None => FarEvidence::NoContext {
                cluster: backend_cluster.clone(),
            },
            Some(far) => match far.pods.iter().find(|p| pod_ip(p) == Some(ip)) {
                None => FarEvidence::NoPod {
                    context: far.cluster.context.clone(),
                },
                Some(pod) => {
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    path.pod = Some(pod_name(pod));
                    path.node = Some(node.clone());
                    let fetched = agent_of(&far.nodes, &node)
                        .ok_or_else(|| format!("node {node} is not a Node of its cluster"))
                        .and_then(|a| {
                            a.call(|c| {
                                Ok((
                                    c.endpoints()?,
                                    c.policies()?,
                                    c.ipcache()?,
                                    c.flows(&FlowFilter {
                                        pod: Some(pod_name(pod)),
                                        last: Some(args.flows * 4),
                                        ..FlowFilter::default()
                                    })?,
                                ))
                            })
                            .map_err(|p| p.problem)
                        });
                    let agent = fetched.map(|(endpoints, policies, ipcache, flows)| {
                        far_flows.extend(flows.into_iter().filter(|f| f.source.ip == Some(src_ip)));
                        FarAgent {
                            endpoints,
                            policies,
                            ipcache,
                        }
                    });
                    FarEvidence::Pod(FarPod {
                        pod: pod_name(pod),
                        node,
                        cluster: backend_cluster.clone(),
                        agent,
                    })
                }
            },
        };
        hops.extend(far_end_hops(&evidence, ip, port, src_ip));
        path.ok = hop_summary(&hops).is_none();
        path.hops = hops;
        report.backends.push(path);
    }

    // 6. The last flows between the two ends.
    let addrs: Vec<IpAddr> = targets.iter().map(|(ip, _)| *ip).chain(vip).collect();
    let near = src_agent
        .call(|c| {
            c.flows(&FlowFilter {
                pod: Some(report.source.clone()),
                last: Some(args.flows * 4),
                ..FlowFilter::default()
            })
        })
        .unwrap_or_default();
    let flows: Vec<FlowRecord> = near
        .into_iter()
        .filter(|f| {
            f.destination.ip.is_some_and(|d| addrs.contains(&d))
                || f.source.ip.is_some_and(|s| addrs.contains(&s))
        })
        .chain(far_flows)
        .collect();
    report.flows = crate::observe::merge(flows, Some(args.flows));
    Ok(report)
}
