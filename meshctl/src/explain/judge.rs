//! The verdicts of `meshctl explain`, from evidence already gathered: pure
//! functions from what the components hold (agent API documents, the
//! mesh-apiserver's status, Kubernetes facts) to hops, each table-tested.

use std::net::IpAddr;

use ipnet::IpNet;
use mesh_agent_api::datapath::{
    Direction, EndpointPolicy, FrontendKind, IpcacheEntry, ServiceEntry,
};
use mesh_agent_api::endpoint::Endpoint;
use mesh_agent_api::policy::EndpointPolicyReport;
use mesh_agent_api::status::Route;
use mesh_api::clustermesh::MeshStatus;
use mesh_api::{Identity, NodeRecord};
use meshctl::report::{ExplainReport, GlobalService, Hop, HopStatus};

use crate::services::{ClusterNames, lookup, node_of};

/// `report` with a failing hop appended (the walk stops there).
pub fn fail(mut report: ExplainReport, step: &str, detail: impl Into<String>) -> ExplainReport {
    report.hops.push(hop(step, HopStatus::Fail, detail));
    report
}

/// A hop.
pub fn hop(step: &str, status: HopStatus, detail: impl Into<String>) -> Hop {
    Hop {
        step: step.into(),
        status,
        detail: detail.into(),
    }
}

/// Whether `policy` (of an endpoint with identity `own`) lets traffic with
/// `peer` on `port`/TCP through in `direction`, and why (pure): as the
/// datapath decides, a matching deny first, then any allow.
pub fn policy_verdict(
    policy: &EndpointPolicy,
    rules: &std::collections::BTreeMap<u32, String>,
    direction: Direction,
    own: Identity,
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
    let matches = |a: &&mesh_agent_api::datapath::PolicyMatch| {
        a.direction == direction
            && (a.identity.is_none()
                || a.identity == peer
                || (a.identity == Some(Identity::CLUSTER_PEERS)
                    && peer.is_some_and(|p| in_cluster_of(p, own))))
            && (a.port == 0 || port == 0 || a.port == port)
            && a.protocol.is_none_or(|p| p == mesh_api::Protocol::Tcp)
    };
    // As the datapath: a matching deny wins over any allow.
    if let Some(d) = policy.deny.iter().find(matches) {
        return (
            HopStatus::Fail,
            format!(
                "{who}: {dir} denied for {peer_text} on {port_text} by the deny entry ({}, {}){}: dropped (policy_denied); a deny wins over every allow, so change or remove that rule",
                d.identity
                    .map(|i| format!("identity {}", i.get()))
                    .unwrap_or_else(|| "any identity".into()),
                if d.port == 0 {
                    "any port".to_string()
                } else {
                    format!("port {}", d.port)
                },
                rules
                    .get(&d.rule)
                    .map(|r| format!(" of rule {r}"))
                    .unwrap_or_default()
            ),
        );
    }
    let found = policy.allow.iter().find(matches);
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
                .chain(&policy.deny)
                .filter(|a| a.direction == direction)
                .filter_map(|a| rules.get(&a.rule))
                // The agent's own default (allow-localhost) selects nothing.
                .filter(|r| !r.starts_with("NodeAgent "))
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
    if id == Identity::CLUSTER_PEERS {
        return format!("{} (any peer of this cluster)", id.get());
    }
    match id.reserved() {
        Some(r) => format!("{} ({})", id.get(), r.name()),
        None => id.get().to_string(),
    }
}

/// Whether `peer` counts as the own cluster of an endpoint with identity
/// `own` (what a `cluster` entity entry admits; the datapath's
/// `peer_in_cluster`).
pub fn in_cluster_of(peer: Identity, own: Identity) -> bool {
    use mesh_api::ReservedIdentity as R;
    matches!(
        peer.reserved(),
        Some(R::Host | R::RemoteNode | R::Health | R::Init)
    ) || (!peer.is_reserved() && own.cluster().is_some() && peer.cluster() == own.cluster())
}

/// The reserved identity `world`.
pub fn world() -> Identity {
    mesh_api::ReservedIdentity::World.identity()
}

/// The report's verdict: it works when no hop before the backends fails
/// and at least one backend passes every hop; the summary says why.
pub fn finish(mut report: ExplainReport) -> ExplainReport {
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
    report
}

/// The source endpoint's identity hop (skipped while it is `init`).
pub fn identity_hop(endpoint: &Endpoint, names: &ClusterNames) -> Hop {
    let id = endpoint.identity;
    if id.reserved() == Some(mesh_api::ReservedIdentity::Init) {
        return hop(
            "identity",
            HopStatus::Skip,
            format!(
                "endpoint {} has no resolved identity yet (init): policies that select by labels cannot match it",
                endpoint.id
            ),
        );
    }
    hop(
        "identity",
        HopStatus::Pass,
        format!(
            "endpoint {} has identity {}{}",
            endpoint.id,
            id.get(),
            id.cluster()
                .and_then(|c| names.by_id.get(&c.get()))
                .map(|n| format!(" (cluster {n})"))
                .unwrap_or_default()
        ),
    )
}

/// What Kubernetes says of a destination Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `namespace/name`.
    pub name: String,
    /// Its ports.
    pub ports: Vec<u16>,
    /// Its ClusterIP (None: headless or unparsable).
    pub cluster_ip: Option<IpAddr>,
}

/// A Service destination resolved in the source node's datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The ClusterIP.
    pub vip: IpAddr,
    /// The backends the datapath balances it to.
    pub targets: Vec<(IpAddr, u16)>,
    /// The passing hop that says so.
    pub hop: Hop,
}

/// The service hop: the Service's port (`wanted`, else its first), its
/// ClusterIP, and the frontend the source node's datapath holds for it.
/// `Err` is the failing hop that stops the walk.
pub fn service_frontend(
    svc: &ServiceFacts,
    wanted: Option<u16>,
    datapath: &[ServiceEntry],
    global: Option<&GlobalService>,
    src_node: &str,
) -> Result<Frontend, Hop> {
    let name = &svc.name;
    let stop = |detail: String| hop("service", HopStatus::Fail, detail);
    let port = match wanted {
        Some(p) if svc.ports.contains(&p) => p,
        Some(p) => {
            return Err(stop(format!(
                "Service {name} has no port {p} (ports: {:?})",
                svc.ports
            )));
        }
        None => match svc.ports.first() {
            Some(p) => *p,
            None => return Err(stop(format!("Service {name} has no ports"))),
        },
    };
    let Some(ip) = svc.cluster_ip else {
        return Err(stop(format!(
            "Service {name} has no ClusterIP (headless services are not load-balanced)"
        )));
    };
    let Some(entry) = datapath.iter().find(|e| {
        e.frontend.ip == ip && e.frontend.port == port && e.frontend.kind == FrontendKind::ClusterIp
    }) else {
        return Err(stop(format!(
            "the datapath of {src_node} has no frontend {ip}:{port}: kube-proxy replacement is off there, or its service feed has not delivered {name} yet"
        )));
    };
    if entry.backends.is_empty() {
        return Err(stop(format!(
            "{name} ({ip}:{port}) has no backends in the datapath of {src_node}: no ready pod{}; connections are dropped (no_service_backend)",
            if global.is_some() {
                " in any cluster sharing it"
            } else {
                " (the service is not global: only this cluster's pods count)"
            }
        )));
    }
    let targets: Vec<(IpAddr, u16)> = entry.backends.iter().map(|b| (b.ip, b.port)).collect();
    let by_cluster = global
        .map(|g| {
            g.backends_by_cluster
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| format!("{}", targets.len()));
    let hop = hop(
        "service",
        HopStatus::Pass,
        format!(
            "{name} is {ip}:{port}{}; the datapath of {src_node} balances it to {} backend(s) ({by_cluster})",
            global
                .map(|g| format!(", global (affinity {}, shared {})", g.affinity, g.shared))
                .unwrap_or_else(|| ", not global".into()),
            targets.len()
        ),
    );
    Ok(Frontend {
        vip: ip,
        targets,
        hop,
    })
}

/// The backend's cluster as the mesh-apiserver sees it (`status` of the
/// source's cluster `own`); None for a backend of `own` itself.
pub fn remote_cluster_hop(status: Option<&MeshStatus>, cluster: &str, own: &str) -> Option<Hop> {
    if cluster == own {
        return None;
    }
    let c = cluster;
    Some(match status.and_then(|s| s.remotes.get(c)) {
        Some(r) if r.stale_since.is_some() => hop(
            "remote cluster",
            HopStatus::Fail,
            format!(
                "cluster {c} is unreachable since {} (unix s): its backends are kept stale and may be gone{}",
                r.stale_since.unwrap_or_default(),
                r.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        ),
        Some(r) if r.connected && r.synced => hop(
            "remote cluster",
            HopStatus::Pass,
            format!("cluster {c} is connected and synced"),
        ),
        Some(r) => hop(
            "remote cluster",
            HopStatus::Fail,
            format!(
                "cluster {c} is {} ({})",
                if r.connected {
                    "connected, not synced"
                } else {
                    "not connected"
                },
                r.last_error
                    .clone()
                    .unwrap_or_else(|| "no error reported".into())
            ),
        ),
        None => hop(
            "remote cluster",
            HopStatus::Fail,
            format!("cluster {c} is not connected to {own}: run meshctl connect"),
        ),
    })
}

/// The route hop: whether `ip` is on the source node (`pod_cidr`), else
/// the source node's most specific route to it, with the identity its
/// datapath gives the backend (`entry`). Also answers "same node".
pub fn route_hop(
    src_node: &str,
    pod_cidr: Option<IpNet>,
    routes: &[Route],
    mesh_nodes: &[NodeRecord],
    entry: Option<&IpcacheEntry>,
    ip: IpAddr,
) -> (Hop, bool) {
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
    let same_node = pod_cidr.is_some_and(|c| c.contains(&ip));
    let route = routes
        .iter()
        .filter(|r| IpNet::V4(r.dst).contains(&ip))
        .max_by_key(|r| r.dst.prefix_len());
    let hop = match (same_node, route) {
        (true, _) => hop(
            "route",
            HopStatus::Pass,
            format!("{ip} is on {src_node} itself (its pod CIDR); {seen_as}"),
        ),
        (false, Some(r)) => hop(
            "route",
            HopStatus::Pass,
            format!(
                "{src_node} routes {r}{}; {seen_as}",
                node_of(mesh_nodes, ip)
                    .map(|n| format!(" (node {} of cluster {})", n.name, n.cluster))
                    .unwrap_or_default()
            ),
        ),
        (false, None) => hop(
            "route",
            HopStatus::Fail,
            format!(
                "{src_node} has no route to {ip}: no node of any connected cluster has a pod CIDR holding it (is its cluster connected and synced?); {seen_as}"
            ),
        ),
    };
    (hop, same_node)
}

/// What the backend's own node-agent holds (read through its cluster's
/// kube context).
#[derive(Debug, Clone)]
pub struct FarAgent {
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Its policies.
    pub policies: Vec<EndpointPolicyReport>,
    /// Its ipcache.
    pub ipcache: Vec<IpcacheEntry>,
}

/// The backend pod as found at the far end.
#[derive(Debug, Clone)]
pub struct FarPod {
    /// `namespace/name`.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// Its cluster.
    pub cluster: Option<String>,
    /// Its node-agent's documents, or why they could not be read.
    pub agent: Result<FarAgent, String>,
}

/// The far end of a backend, as gathered.
#[derive(Debug, Clone)]
pub enum FarEvidence {
    /// No kube context in the kubeconfig names the backend's cluster.
    NoContext {
        /// The cluster, when known.
        cluster: Option<String>,
    },
    /// The context has no pod with the backend's IP.
    NoPod {
        /// The context asked.
        context: String,
    },
    /// The pod.
    Pod(FarPod),
}

/// The destination and ingress-policy hops of a backend `ip`:`port`, as
/// its own node-agent holds them; `src_ip` is the source pod's address.
pub fn far_end_hops(far: &FarEvidence, ip: IpAddr, port: u16, src_ip: IpAddr) -> Vec<Hop> {
    let pod = match far {
        FarEvidence::NoContext { cluster } => {
            return vec![hop(
                "destination",
                HopStatus::Skip,
                format!(
                    "no kube context for cluster {} in the kubeconfig: its end is not checked",
                    cluster.as_deref().unwrap_or("(unknown)")
                ),
            )];
        }
        FarEvidence::NoPod { context } => {
            return vec![hop(
                "destination",
                HopStatus::Fail,
                format!("no pod has IP {ip} in context {context}: a stale backend"),
            )];
        }
        FarEvidence::Pod(p) => p,
    };
    let agent = match &pod.agent {
        Err(problem) => return vec![hop("destination", HopStatus::Skip, problem.clone())],
        Ok(a) => a,
    };
    let node = &pod.node;
    let Some(ep) = agent
        .endpoints
        .iter()
        .find(|e| e.registration.ips.contains(&ip))
    else {
        return vec![hop(
            "destination",
            HopStatus::Fail,
            format!(
                "the node-agent of {node} has no endpoint for {ip}: the pod is not wired by mesh-cni"
            ),
        )];
    };
    let destination = hop(
        "destination",
        HopStatus::Pass,
        format!(
            "{} on node {node} (cluster {}), identity {}",
            pod.pod,
            pod.cluster.as_deref().unwrap_or("?"),
            identity_text(ep.identity)
        ),
    );
    let (policy, rules) = agent
        .policies
        .iter()
        .find(|p| p.endpoint_id == ep.id)
        .map(|p| (p.policy.clone(), p.rules.clone()))
        .unwrap_or_default();
    // The source as the far datapath sees it.
    let src_seen = lookup(&agent.ipcache, src_ip)
        .map(|e| e.identity)
        .unwrap_or(world());
    let (st, why) = policy_verdict(
        &policy,
        &rules,
        Direction::Ingress,
        ep.identity,
        Some(src_seen),
        port,
        &pod.pod,
    );
    vec![destination, hop("ingress policy", st, why)]
}

#[cfg(test)]
mod tests;
