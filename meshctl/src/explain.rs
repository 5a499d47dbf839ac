//! `meshctl explain <namespace/pod> <namespace/service|namespace/pod>[:port]`:
//! hop by hop, why a connection works or not.
//!
//! Every hop is read from the component that decides it: the source pod
//! (Kubernetes), its node-agent (`/v1/status`, `/v1/endpoints`), the service
//! lookup in the source node's datapath (`/v1/services`), the route and peer
//! identity (`/v1/ipcache`), the mesh-apiserver's view of the backend's
//! cluster (connected, stale), the egress policy of the source and the
//! ingress policy of the backend as their datapaths hold them
//! (`/v1/policies`), the WireGuard peer with its last handshake
//! (`/v1/encryption`), and the last flows both agents saw (`/v1/flows`).
//! The far end is checked through the kube context of the backend's
//! cluster, found in the kubeconfig by cluster name.
//!
//! [`policy_verdict`] and [`hop_summary`] are pure and unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod};
use mesh_agent_api::datapath::{Direction, EndpointPolicy, IpcacheEntry};
use mesh_agent_api::flows::FlowFilter;
use mesh_api::Identity;
use meshctl::report::{BackendPath, ExplainReport, FlowRecord, Hop, HopStatus};

use crate::Outcome;
use crate::agents::Agent;
use crate::kube::{Cluster, KubeArgs};
use crate::output::{self, OutputFormat};
use crate::services::{ClusterNames, lookup};

/// Flags of `meshctl explain`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl explain --context lab-c1 shop/client shop/web:80
  meshctl explain --context lab-c1 shop/client shop/web-2:8080
  meshctl explain --context lab-c1 shop/client shop/web -o json
  meshctl explain --context lab-c1 --destination-context lab-c2 shop/a shop/b:8080

The far end of a cross-cluster path is checked through the kube context of
the backend's cluster (found in the kubeconfig by cluster name).

Exit codes: 0 the connection works (every hop ✔ on at least one backend);
3 it does not (the ✘ hop says why); 1 error.")]
pub struct ExplainArgs {
    /// Context of the source pod's cluster.
    #[arg(long)]
    pub context: String,
    /// The source pod: namespace/name.
    pub source: String,
    /// The destination: namespace/service or namespace/pod, optionally
    /// :port (default: the service's first port; any port for a pod).
    pub destination: String,
    /// Context of the destination pod's cluster, when it is a pod of
    /// another cluster (services are looked up in the source's cluster:
    /// global services match by namespace/name).
    #[arg(long)]
    pub destination_context: Option<String>,
    /// How many recent matching flows to show.
    #[arg(long, default_value_t = 5)]
    pub flows: usize,
}

/// `report` with a failing hop appended (the walk stops there).
fn fail(mut report: ExplainReport, step: &str, detail: impl Into<String>) -> ExplainReport {
    report.hops.push(hop(step, HopStatus::Fail, detail));
    report
}

fn hop(step: &str, status: HopStatus, detail: impl Into<String>) -> Hop {
    Hop {
        step: step.into(),
        status,
        detail: detail.into(),
    }
}

/// `namespace/name[:port]`.
pub fn parse_target(s: &str) -> Result<(String, String, Option<u16>), String> {
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (
            n,
            Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: port {p:?} is not 1-65535"))?,
            ),
        ),
        None => (s, None),
    };
    match name.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((ns.to_string(), n.to_string(), port))
        }
        _ => Err(format!(
            "{s:?} is not namespace/name[:port] (e.g. shop/web:80)"
        )),
    }
}

/// Whether `policy` lets traffic with `peer` on `port`/TCP through in
/// `direction`, and why (pure).
pub fn policy_verdict(
    policy: &EndpointPolicy,
    rules: &std::collections::BTreeMap<u32, String>,
    direction: Direction,
    peer: Option<Identity>,
    port: u16,
    who: &str,
) -> (HopStatus, String) {
    let enforced = match direction {
        Direction::Ingress => policy.ingress_enforced,
        Direction::Egress => policy.egress_enforced,
    };
    let dir = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    if !enforced {
        return (
            HopStatus::Pass,
            format!("{who}: {dir} not enforced (no policy selects it for {dir})"),
        );
    }
    let peer_text = peer
        .map(|p| format!("identity {}", p.get()))
        .unwrap_or_else(|| "an unknown peer".into());
    let port_text = if port == 0 {
        "any port".to_string()
    } else {
        format!("port {port}/TCP")
    };
    let found = policy.allow.iter().find(|a| {
        a.direction == direction
            && (a.identity.is_none() || a.identity == peer)
            && (a.port == 0 || port == 0 || a.port == port)
            && a.protocol.is_none_or(|p| p == mesh_api::Protocol::Tcp)
    });
    match found {
        Some(a) => (
            HopStatus::Pass,
            format!(
                "{who}: {dir} allowed for {peer_text} on {port_text} by the entry ({}, {}){}",
                a.identity
                    .map(|i| format!("identity {}", i.get()))
                    .unwrap_or_else(|| "any identity".into()),
                if a.port == 0 {
                    "any port".to_string()
                } else {
                    format!("port {}", a.port)
                },
                rules
                    .get(&a.rule)
                    .map(|r| format!(" of rule {r}"))
                    .unwrap_or_default()
            ),
        ),
        None => {
            // The policies that select it for this direction (their rules
            // are what would have to allow the peer).
            let mut selecting: Vec<&str> = policy
                .allow
                .iter()
                .filter(|a| a.direction == direction)
                .filter_map(|a| rules.get(&a.rule))
                .filter_map(|r| r.rsplit_once(' ').map(|(policy, _)| policy))
                .collect();
            selecting.dedup();
            let by = if selecting.is_empty() {
                String::new()
            } else {
                format!(" (selected by {})", selecting.join(", "))
            };
            (
                HopStatus::Fail,
                format!(
                    "{who}: {dir} is policy-enforced{by} and no allow entry matches {peer_text} on {port_text}: dropped (policy_default_deny); add a rule allowing it"
                ),
            )
        }
    }
}

/// The WireGuard hop from `src_node` (its `/v1/encryption`) towards `ip`
/// (pure).
pub fn wireguard_hop(
    encryption: &meshctl::report::EncryptionReport,
    src_node: &str,
    ip: IpAddr,
    same_node: bool,
) -> Hop {
    let Some(dev) = &encryption.device else {
        return if same_node {
            hop("wireguard", HopStatus::Skip, "same node: no tunnel")
        } else {
            hop(
                "wireguard",
                HopStatus::Skip,
                format!(
                    "encryption is off on {src_node}: traffic crosses the network in the clear"
                ),
            )
        };
    };
    if same_node {
        return hop("wireguard", HopStatus::Skip, "same node: no tunnel");
    }
    let key =
        |p: &mesh_agent_api::encryption::PeerReport| crate::encryption::short_key(&p.public_key);
    let endpoint = |p: &mesh_agent_api::encryption::PeerReport| {
        p.endpoint
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into())
    };
    match dev
        .peers
        .iter()
        .find(|p| p.allowed_ips.iter().any(|n| n.contains(&ip)))
    {
        Some(p) => match p.last_handshake_seconds_ago {
            Some(age) => hop(
                "wireguard",
                HopStatus::Pass,
                format!(
                    "peer {} at {} holds {ip}, last handshake {}",
                    key(p),
                    endpoint(p),
                    crate::encryption::age(Some(age))
                ),
            ),
            None => hop(
                "wireguard",
                HopStatus::Fail,
                format!(
                    "peer {} at {} holds {ip} but never completed a handshake: is that node's agent running and UDP {} open?",
                    key(p),
                    endpoint(p),
                    p.endpoint.map(|e| e.port()).or(dev.port).unwrap_or(51871)
                ),
            ),
        },
        None if encryption.strict_mode => hop(
            "wireguard",
            HopStatus::Fail,
            format!(
                "no WireGuard peer of {src_node} holds {ip}: strict mode drops this traffic (has that node published its key?)"
            ),
        ),
        None => hop(
            "wireguard",
            HopStatus::Skip,
            format!(
                "no WireGuard peer of {src_node} holds {ip}: sent unencrypted (strict mode would drop it)"
            ),
        ),
    }
}

/// The first failing hop's detail, or None when none fails (pure).
pub fn hop_summary(hops: &[Hop]) -> Option<String> {
    hops.iter()
        .find(|h| h.status == HopStatus::Fail)
        .map(|h| format!("{}: {}", h.step, h.detail))
}

/// `131328`, or `5 (init)` for a reserved identity.
pub fn identity_text(id: Identity) -> String {
    match id.reserved() {
        Some(r) => format!("{} ({})", id.get(), r.name()),
        None => id.get().to_string(),
    }
}

/// The reserved identity `world`.
fn world() -> Identity {
    mesh_api::ReservedIdentity::World.identity()
}

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
    by_name: BTreeMap<String, Option<std::rc::Rc<FarEnd>>>,
}

impl Contexts<'_> {
    async fn far_end(&mut self, cluster: &str) -> Option<std::rc::Rc<FarEnd>> {
        if let Some(c) = self.by_name.get(cluster) {
            return c.clone();
        }
        if let Some(c) = Cluster::of_cluster_name(self.kube, cluster).await {
            let (pods, nodes) = (
                c.pods().await.unwrap_or_default(),
                c.nodes().await.unwrap_or_default(),
            );
            let far = std::rc::Rc::new(FarEnd {
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

/// Runs `meshctl explain`.
pub async fn explain(
    kube: &KubeArgs,
    args: ExplainArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let (src_ns, src_name, src_port) =
        parse_target(&args.source).map_err(|e| anyhow::anyhow!("source: {e}"))?;
    anyhow::ensure!(
        src_port.is_none(),
        "source {:?}: give the source pod without a port",
        args.source
    );
    let (dst_ns, dst_name, dst_port) =
        parse_target(&args.destination).map_err(|e| anyhow::anyhow!("destination: {e}"))?;
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
    let done = |mut report: ExplainReport| -> anyhow::Result<Outcome> {
        report.ok = hop_summary(&report.hops).is_none() && report.backends.iter().any(|b| b.ok);
        let failing: Vec<String> = report
            .backends
            .iter()
            .filter_map(|b| hop_summary(&b.hops).map(|s| format!("{} ({s})", b.ip)))
            .collect();
        report.summary = if report.ok {
            let n = report.backends.len() - failing.len();
            let mut s = format!(
                "{} can reach {}: {n} of {} backend(s) pass every hop",
                report.source,
                report.destination,
                report.backends.len()
            );
            if !failing.is_empty() {
                s.push_str(&format!(
                    "; connections balanced to the others fail: {}",
                    failing.join("; ")
                ));
            }
            s
        } else if let Some(s) = hop_summary(&report.hops) {
            s
        } else if report.backends.is_empty() {
            "no backend to reach".into()
        } else {
            format!("no backend passes every hop: {}", failing.join("; "))
        };
        output::emit(format, &report, print)?;
        Ok(if report.ok {
            Outcome::Ok
        } else {
            Outcome::CheckFailed
        })
    };

    // 1. The source pod.
    let Some(src_pod) = cluster.pod(&src_ns, &src_name).await? else {
        return done(fail(
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
        return done(fail(report, "source", detail));
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
        return done(fail(
            report,
            "agent",
            format!("node {src_node:?} of the pod is not a Node of the cluster"),
        ));
    };
    let src_status = match src_agent.call(|c| c.status()) {
        Ok(s) => s,
        Err(p) => return done(fail(report, "agent", p.problem)),
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
        Err(p) => return done(fail(report, "agent", p.problem)),
    };

    // 3. The source's identity.
    let Some(src_ep) = endpoints
        .iter()
        .find(|e| e.registration.ips.contains(&src_ip))
    else {
        return done(fail(
            report,
            "identity",
            format!(
                "the node-agent of {src_node} has no endpoint with IP {src_ip}: the pod was not wired by mesh-cni on this node"
            ),
        ));
    };
    let src_identity = src_ep.identity;
    if src_identity.reserved() == Some(mesh_api::ReservedIdentity::Init) {
        report.hops.push(hop(
            "identity",
            HopStatus::Skip,
            format!(
                "endpoint {} has no resolved identity yet (init): policies that select by labels cannot match it",
                src_ep.id
            ),
        ));
    } else {
        report.hops.push(hop(
            "identity",
            HopStatus::Pass,
            format!(
                "endpoint {} has identity {}{}",
                src_ep.id,
                src_identity.get(),
                src_identity
                    .cluster()
                    .and_then(|c| names.by_id.get(&c.get()))
                    .map(|n| format!(" (cluster {n})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let dump = crate::services::DatapathDump {
        node: src_node.clone(),
        services: services.clone(),
        ipcache: ipcache.clone(),
        nodes: mesh_nodes.clone(),
    };

    // 4. The destination: a Service (lookup in the datapath) or a Pod.
    let mut targets: Vec<(IpAddr, u16)> = Vec::new();
    let mut vip: Option<IpAddr> = None;
    if let Some(svc) = cluster.service(&dst_ns, &dst_name).await? {
        let spec = svc.spec.clone().unwrap_or_default();
        let ports: Vec<u16> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| p.port as u16)
            .collect();
        let port = match dst_port {
            Some(p) if ports.contains(&p) => p,
            Some(p) => {
                return done(fail(
                    report,
                    "service",
                    format!("Service {dst_ns}/{dst_name} has no port {p} (ports: {ports:?})"),
                ));
            }
            None => match ports.first() {
                Some(p) => *p,
                None => {
                    return done(fail(
                        report,
                        "service",
                        format!("Service {dst_ns}/{dst_name} has no ports"),
                    ));
                }
            },
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            return done(fail(
                report,
                "service",
                format!(
                    "Service {dst_ns}/{dst_name} has no ClusterIP (headless services are not load-balanced)"
                ),
            ));
        };
        vip = Some(ip);
        let global = crate::services::global_services(
            std::slice::from_ref(&svc),
            Some(&dump),
            &names,
            false,
        );
        let g = global.first();
        let Some(entry) = services.iter().find(|e| {
            e.frontend.ip == ip
                && e.frontend.port == port
                && e.frontend.kind == mesh_agent_api::datapath::FrontendKind::ClusterIp
        }) else {
            return done(fail(
                report,
                "service",
                format!(
                    "the datapath of {src_node} has no frontend {ip}:{port}: kube-proxy replacement is off there, or its service feed has not delivered {dst_ns}/{dst_name} yet"
                ),
            ));
        };
        if entry.backends.is_empty() {
            return done(fail(
                report,
                "service",
                format!(
                    "{dst_ns}/{dst_name} ({ip}:{port}) has no backends in the datapath of {src_node}: no ready pod{}; connections are dropped (no_service_backend)",
                    if g.is_some() {
                        " in any cluster sharing it"
                    } else {
                        " (the service is not global: only this cluster's pods count)"
                    }
                ),
            ));
        }
        targets = entry.backends.iter().map(|b| (b.ip, b.port)).collect();
        let by_cluster = g
            .map(|g| {
                g.backends_by_cluster
                    .iter()
                    .map(|(c, n)| format!("{c}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| format!("{}", targets.len()));
        report.hops.push(hop(
            "service",
            HopStatus::Pass,
            format!(
                "{dst_ns}/{dst_name} is {ip}:{port}{}; the datapath of {src_node} balances it to {} backend(s) ({by_cluster})",
                g.map(|g| format!(", global (affinity {}, shared {})", g.affinity, g.shared))
                    .unwrap_or_else(|| ", not global".into()),
                targets.len()
            ),
        ));
    } else if let Some(pod) = match &args.destination_context {
        Some(ctx) => Cluster::connect(kube, ctx).await?,
        None => cluster.clone(),
    }
    .pod(&dst_ns, &dst_name)
    .await?
    {
        let Some(ip) = pod_ip(&pod) else {
            return done(fail(
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
        return done(fail(
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
    let own_end = std::rc::Rc::new(FarEnd {
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
        let entry: Option<&IpcacheEntry> = lookup(&ipcache, ip);
        let backend_cluster = names.cluster_of(ip, &ipcache, &mesh_nodes);
        // What the source's datapath sees the backend as: its ipcache
        // identity, else world.
        let dst_identity = entry.map(|e| e.identity).unwrap_or(world());
        // The backend's cluster, as the mesh-apiserver sees it.
        if let Some(c) = &backend_cluster
            && *c != names.own
        {
            match status.as_ref().and_then(|s| s.remotes.get(c)) {
                Some(r) if r.stale_since.is_some() => hops.push(hop(
                    "remote cluster",
                    HopStatus::Fail,
                    format!(
                        "cluster {c} is unreachable since {} (unix s): its backends are kept stale and may be gone{}",
                        r.stale_since.unwrap_or_default(),
                        r.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
                    ),
                )),
                Some(r) if r.connected && r.synced => hops.push(hop(
                    "remote cluster",
                    HopStatus::Pass,
                    format!("cluster {c} is connected and synced"),
                )),
                Some(r) => hops.push(hop(
                    "remote cluster",
                    HopStatus::Fail,
                    format!(
                        "cluster {c} is {} ({})",
                        if r.connected { "connected, not synced" } else { "not connected" },
                        r.last_error.clone().unwrap_or_else(|| "no error reported".into())
                    ),
                )),
                None => hops.push(hop(
                    "remote cluster",
                    HopStatus::Fail,
                    format!("cluster {c} is not connected to {}: run meshctl connect", names.own),
                )),
            }
        }
        // The route the source node has towards the backend, and the
        // identity its datapath gives the backend.
        let seen_as = match entry {
            Some(e) => format!(
                "ipcache {} → identity {}{}",
                e.cidr,
                identity_text(e.identity),
                if e.encrypt { ", encrypt" } else { "" }
            ),
            None => format!(
                "no ipcache entry: the datapath sees it as {}",
                identity_text(world())
            ),
        };
        let same_node = src_status.pod_cidr.is_some_and(|c| c.contains(&ip));
        let route = src_status
            .routing
            .routes
            .iter()
            .filter(|r| ipnet::IpNet::V4(r.dst).contains(&ip))
            .max_by_key(|r| r.dst.prefix_len());
        match (same_node, route) {
            (true, _) => hops.push(hop(
                "route",
                HopStatus::Pass,
                format!("{ip} is on {src_node} itself (its pod CIDR); {seen_as}"),
            )),
            (false, Some(r)) => hops.push(hop(
                "route",
                HopStatus::Pass,
                format!(
                    "{src_node} routes {r}{}; {seen_as}",
                    crate::services::node_of(&mesh_nodes, ip)
                        .map(|n| format!(" (node {} of cluster {})", n.name, n.cluster))
                        .unwrap_or_default()
                ),
            )),
            (false, None) => hops.push(hop(
                "route",
                HopStatus::Fail,
                format!(
                    "{src_node} has no route to {ip}: no node of any connected cluster has a pod CIDR holding it (is its cluster connected and synced?); {seen_as}"
                ),
            )),
        }
        let (st, why) = policy_verdict(
            &src_policy,
            &src_rules,
            Direction::Egress,
            Some(dst_identity),
            port,
            &report.source,
        );
        hops.push(hop("egress policy", st, why));
        // WireGuard towards the backend's node.
        hops.push(wireguard_hop(&encryption, &src_node, ip, same_node));
        // The far end.
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
        match far {
            None => hops.push(hop(
                "destination",
                HopStatus::Skip,
                format!(
                    "no kube context for cluster {} in the kubeconfig: its end is not checked",
                    backend_cluster.as_deref().unwrap_or("(unknown)")
                ),
            )),
            Some(far) => match far.pods.iter().find(|p| pod_ip(p) == Some(ip)) {
                None => hops.push(hop(
                    "destination",
                    HopStatus::Fail,
                    format!(
                        "no pod has IP {ip} in context {}: a stale backend",
                        far.cluster.context
                    ),
                )),
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
                    match fetched {
                        Err(problem) => hops.push(hop("destination", HopStatus::Skip, problem)),
                        Ok((eps, pols, far_ipcache, flows)) => {
                            far_flows
                                .extend(flows.into_iter().filter(|f| f.source.ip == Some(src_ip)));
                            match eps.iter().find(|e| e.registration.ips.contains(&ip)) {
                                None => hops.push(hop(
                                    "destination",
                                    HopStatus::Fail,
                                    format!("the node-agent of {node} has no endpoint for {ip}: the pod is not wired by mesh-cni"),
                                )),
                                Some(ep) => {
                                    hops.push(hop(
                                        "destination",
                                        HopStatus::Pass,
                                        format!(
                                            "{} on node {node} (cluster {}), identity {}",
                                            pod_name(pod),
                                            backend_cluster.as_deref().unwrap_or("?"),
                                            identity_text(ep.identity)
                                        ),
                                    ));
                                    let (pol, pol_rules) = pols
                                        .iter()
                                        .find(|p| p.endpoint_id == ep.id)
                                        .map(|p| (p.policy.clone(), p.rules.clone()))
                                        .unwrap_or_default();
                                    // The source as the far datapath sees it.
                                    let src_seen = lookup(&far_ipcache, src_ip)
                                        .map(|e| e.identity)
                                        .unwrap_or(world());
                                    let (st, why) = policy_verdict(
                                        &pol,
                                        &pol_rules,
                                        Direction::Ingress,
                                        Some(src_seen),
                                        port,
                                        &pod_name(pod),
                                    );
                                    hops.push(hop("ingress policy", st, why));
                                }
                            }
                        }
                    }
                }
            },
        }
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
    let mut flows: Vec<FlowRecord> = near
        .into_iter()
        .filter(|f| {
            f.destination.ip.is_some_and(|d| addrs.contains(&d))
                || f.source.ip.is_some_and(|s| addrs.contains(&s))
        })
        .chain(far_flows)
        .collect();
    flows = crate::observe::merge(flows, Some(args.flows));
    report.flows = flows;
    done(report)
}

fn print(r: &ExplainReport) {
    println!("{} → {}", r.source, r.destination);
    println!();
    let width = r
        .hops
        .iter()
        .chain(r.backends.iter().flat_map(|b| b.hops.iter()))
        .map(|h| h.step.len())
        .max()
        .unwrap_or(0);
    let line = |indent: &str, h: &Hop| {
        println!(
            "{indent}{} {:<width$}  {}",
            h.status.mark(),
            h.step,
            h.detail
        );
    };
    for h in &r.hops {
        line("", h);
    }
    for b in &r.backends {
        println!();
        println!(
            "{} backend {}:{}{}{}{}",
            if b.ok { "✔" } else { "✘" },
            b.ip,
            b.port,
            b.pod.as_ref().map(|p| format!("  {p}")).unwrap_or_default(),
            b.cluster
                .as_ref()
                .map(|c| format!("  cluster {c}"))
                .unwrap_or_default(),
            b.node
                .as_ref()
                .map(|n| format!("  node {n}"))
                .unwrap_or_default(),
        );
        for h in &b.hops {
            line("  ", h);
        }
    }
    println!();
    if r.flows.is_empty() {
        println!("no recent flows between them");
    } else {
        println!("last flows:");
        crate::observe::print_table(&r.flows);
    }
    println!();
    println!("{} {}", if r.ok { "✔" } else { "✘" }, r.summary);
}

#[cfg(test)]
mod tests;
