//! Identities of every cluster into the datapath: the mesh feed's identity,
//! endpoint and node records → the local endpoints' security identities,
//! the ipcache (address → identity, node, encrypt flag) and, with the policy
//! CRDs, each local endpoint's compiled policy.
//!
//! What it is for: the agent's "who is who" controller. One pass
//! ([`sync`]) is pure over the [`EndpointManager`] (unit-tested on the
//! in-memory datapath); [`run`] repeats it whenever the mesh feed, the
//! policies or the local endpoints change, and every 30 s.
//!
//! - A local endpoint takes the identity of the mesh-apiserver's
//!   EndpointRecord of this cluster with the same address (the
//!   mesh-apiserver allocates identities per label set, for every cluster
//!   alike); until that record arrives it stays `init`.
//! - The ipcache gets a /32 per endpoint address of every cluster (its
//!   identity; the node hosting it; encrypt = encryption on and the node is
//!   not this one) and a /32 per node address: this node's as `host`, every
//!   other node's (any cluster) as `remote-node`. Local endpoints come from
//!   the endpoint manager's own source, which wins.
//! - Policies are recompiled against every known identity on each pass, so
//!   a new identity in another cluster reaches the policy map without a
//!   policy change.
//!
//! Restart safety: until the mesh feed has synced once, nothing is written
//! (the pinned maps keep what the previous agent installed: the reconciler
//! declares [`SOURCE`] pending and keeps the installed policies).
//!
//! What it is not for: routes and WireGuard peers ([`crate::node_sync`]),
//! services ([`crate::feed::services`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use mesh_api::{ClusterName, Identity, NodeName};
use tokio::sync::watch;

use crate::datapath::{Datapath, EndpointId, HostPolicy, IpcacheEntry};
use crate::endpoint::EndpointManager;
use crate::feed::mesh::{MeshFeed, MeshView};
use crate::policy::compile::{
    CompileInputs, CompiledPolicies, LastValid, NamedPorts, NamespaceLabels, PodPorts,
    PolicyProblem, PolicySource, compile_keeping_last_valid,
};
use crate::shared_manager::SharedManager;

/// The policy side of the agent's status (`/v1/status` → `policy`).
pub use mesh_agent_api::policy::PolicyStatus;

/// The reconciler source name of the mesh's ipcache entries.
pub const SOURCE: &str = "mesh";
/// The reconciler source name of the policies' CIDR identities.
pub const CIDR_SOURCE: &str = "policy-cidrs";

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct LocalView {
    /// Its cluster.
    pub cluster: ClusterName,
    /// Its node.
    pub node: NodeName,
    /// Whether encryption is on (sets the ipcache encrypt flag of endpoints
    /// on other nodes).
    pub encryption: bool,
    /// Admit this node's own traffic (kubelet probes) to every endpoint
    /// whatever its policy (`--allow-localhost`).
    pub allow_localhost: bool,
    /// Report what the host firewall would drop instead of dropping it
    /// (`--policy-audit-mode`).
    pub policy_audit: bool,
}

/// What the cluster's API says beyond the policies themselves.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// Labels of every namespace (for `namespaceSelector`).
    pub namespaces: NamespaceLabels,
    /// Each pod's address and its named container ports (name, port,
    /// protocol), for rules on a named port.
    pub pod_ports: Vec<PodPorts>,
    /// This node's labels (for host policies' `nodeSelector`); None until
    /// its Node is known.
    pub node_labels: Option<BTreeMap<String, String>>,
    /// The API server's addresses (the `kubernetes` Service's endpoints).
    pub apiserver_ips: Vec<Ipv4Addr>,
    /// This cluster's Services (for `toServices`).
    pub services: crate::policy::compile::Services,
}

/// The ipcache entries of the mesh (every cluster's endpoints and nodes),
/// and this cluster's API server addresses (`apiserver`, the `kubernetes`
/// Service's endpoints) with the identity `kube-apiserver`: an address
/// that is also a pod's keeps the pod's, this node's keeps `host`, and a
/// remote node's becomes `kube-apiserver` (the `remote-node` entity then
/// covers it too: [`CompileInputs::apiserver_on_remote_node`]).
pub fn ipcache_entries(
    view: &MeshView,
    local: &LocalView,
    apiserver: &[Ipv4Addr],
) -> Vec<IpcacheEntry> {
    let node_ip = |cluster: &ClusterName, node: &NodeName| -> Option<Ipv4Addr> {
        view.nodes
            .iter()
            .find(|n| &n.cluster == cluster && &n.name == node)
            .and_then(|n| first_v4(&n.ips))
    };
    let mut out: BTreeMap<IpNet, IpcacheEntry> = BTreeMap::new();
    let kube_apiserver = mesh_api::ReservedIdentity::KubeApiserver.identity();
    for ip in apiserver {
        let cidr = IpNet::from(IpAddr::V4(*ip));
        out.insert(
            cidr,
            IpcacheEntry {
                cidr,
                identity: kube_apiserver,
                node_ip: None,
                encrypt: false,
            },
        );
    }
    for ep in &view.endpoints {
        let here = ep.cluster == local.cluster && ep.node == local.node;
        let host = if here {
            None
        } else {
            node_ip(&ep.cluster, &ep.node)
        };
        for ip in &ep.ips {
            if !ip.is_ipv4() {
                continue;
            }
            out.insert(
                IpNet::from(*ip),
                IpcacheEntry {
                    cidr: IpNet::from(*ip),
                    identity: ep.identity,
                    node_ip: host,
                    encrypt: local.encryption && !here,
                },
            );
        }
    }
    // Node addresses last: a host-network pod's record must not relabel
    // its node.
    for n in &view.nodes {
        let here = n.cluster == local.cluster && n.name == local.node;
        for ip in n.ips.iter().filter(|ip| ip.is_ipv4()) {
            let identity = if here {
                mesh_api::ReservedIdentity::Host.identity()
            } else if n.cluster == local.cluster
                && matches!(ip, IpAddr::V4(v4) if apiserver.contains(v4))
            {
                kube_apiserver
            } else {
                mesh_api::ReservedIdentity::RemoteNode.identity()
            };
            out.insert(
                IpNet::from(*ip),
                IpcacheEntry {
                    cidr: IpNet::from(*ip),
                    identity,
                    node_ip: None,
                    encrypt: false,
                },
            );
        }
    }
    out.into_values().collect()
}

fn first_v4(ips: &[IpAddr]) -> Option<Ipv4Addr> {
    ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

/// One pass: local identities, ipcache and policies into `mgr`'s
/// reconciler, then one reconcile. `policies` is None while the policy
/// source has not delivered (installed policies are kept).
#[tracing::instrument(
    name = "identity_sync",
    skip_all,
    fields(
        cluster = %local.cluster,
        node = %local.node,
        identities = view.identities.len(),
        endpoints = view.endpoints.len(),
        nodes = view.nodes.len(),
        policies = policies.map(<[PolicySource]>::len),
    )
)]
pub fn sync<D: Datapath>(
    mgr: &mut EndpointManager<D>,
    view: &MeshView,
    local: &LocalView,
    policies: Option<&[PolicySource]>,
    context: &PolicyContext,
    last_valid: &mut LastValid,
) -> crate::Result<(crate::reconcile::ReconcileReport, Option<CompiledPolicies>)> {
    // Local endpoints: the identity of this cluster's record with the same
    // address.
    let by_ip: BTreeMap<IpAddr, Identity> = view
        .endpoints
        .iter()
        .filter(|e| e.cluster == local.cluster)
        .flat_map(|e| e.ips.iter().map(move |ip| (*ip, e.identity)))
        .collect();
    let identities: BTreeMap<EndpointId, Identity> = mgr
        .list()
        .iter()
        .filter_map(|ep| {
            ep.registration
                .ips
                .iter()
                .find_map(|ip| by_ip.get(ip))
                .map(|id| (ep.id, *id))
        })
        .collect();
    mgr.set_identities(&identities)?;
    let entries = ipcache_entries(view, local, &context.apiserver_ips);
    // Where the API server runs, as the compiler needs it for the
    // `kube-apiserver` and `remote-node` entities.
    let on_node = |ip: &Ipv4Addr, this: bool| {
        view.nodes.iter().any(|n| {
            n.cluster == local.cluster
                && (n.name == local.node) == this
                && n.ips.contains(&IpAddr::V4(*ip))
        })
    };
    let apiserver_on_this_node = context.apiserver_ips.iter().any(|ip| on_node(ip, true));
    let apiserver_on_remote_node = context.apiserver_ips.iter().any(|ip| on_node(ip, false));
    mgr.reconciler().set_ipcache(SOURCE, entries);
    let compiled = policies.map(|policies| {
        let mut named_ports = NamedPorts::new();
        for (ip, ports) in &context.pod_ports {
            if let Some(id) = by_ip.get(ip) {
                named_ports
                    .entry(*id)
                    .or_default()
                    .extend(ports.iter().cloned());
            }
        }
        let compiled = compile_keeping_last_valid(
            policies,
            &CompileInputs {
                cluster: &local.cluster,
                identities: &view.identities,
                namespaces: &context.namespaces,
                named_ports: &named_ports,
                allow_localhost: local.allow_localhost,
                services: &context.services,
                apiserver_on_this_node,
                apiserver_on_remote_node,
            },
            last_valid,
        );
        let mut per_endpoint = BTreeMap::new();
        for ep in mgr.list() {
            let policy = match view.identities.get(&ep.identity) {
                Some(labels) => compiled.endpoint_policy(labels),
                // Not resolved yet: it cannot be matched by labels, so
                // whatever could select it holds it at default-deny until
                // its identity is known; missing state is never "allow".
                None => {
                    compiled.unresolved_endpoint_policy(ep.registration.pod_namespace.as_deref())
                }
            };
            per_endpoint.insert(ep.id, policy);
        }
        mgr.reconciler().set_policies(per_endpoint);
        mgr.hold_new_endpoints_by(compiled.clone());
        sync_host_policy(mgr, view, local, context, &compiled);
        mgr.reconciler().set_ipcache(
            CIDR_SOURCE,
            compiled
                .cidr_identities
                .iter()
                .map(|(net, identity)| IpcacheEntry {
                    cidr: IpNet::V4(*net),
                    identity: *identity,
                    node_ip: None,
                    encrypt: false,
                })
                .collect(),
        );
        compiled
    });
    Ok((mgr.reconcile(), compiled))
}

/// Converges the host firewall to what the host policies selecting this
/// node add up to (none: off). A failure is logged and retried on the next
/// pass.
fn sync_host_policy<D: Datapath>(
    mgr: &mut EndpointManager<D>,
    view: &MeshView,
    local: &LocalView,
    context: &PolicyContext,
    compiled: &CompiledPolicies,
) {
    // A label this build's validator refuses is left out, not the node's
    // labels as a whole (which would turn the firewall off).
    let labels = context.node_labels.as_ref().and_then(|l| {
        mesh_api::LabelSet::new(
            l.iter()
                .filter(|(k, v)| mesh_api::labels::validate_label(k, v).is_ok())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
        .ok()
    });
    let want = labels
        .as_ref()
        .and_then(|l| compiled.host_policy(l))
        .map(|policy| HostPolicy {
            policy,
            audit: local.policy_audit,
        });
    let held = match mgr.datapath().host_policy() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the host firewall; will retry");
            return;
        }
    };
    if held == want {
        return;
    }
    let node_ip = view
        .nodes
        .iter()
        .find(|n| n.cluster == local.cluster && n.name == local.node)
        .and_then(|n| first_v4(&n.ips));
    match mgr
        .reconciler()
        .datapath_mut()
        .set_host_policy(node_ip, want.as_ref())
    {
        Ok(()) => tracing::info!(
            on = want.is_some(),
            audit = local.policy_audit,
            "host firewall updated"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot write the host firewall; will retry"),
    }
}

/// The sources a pass reads, each optional.
#[derive(Debug)]
pub struct Sources {
    /// The mesh feed.
    pub mesh: Arc<MeshFeed>,
    /// The policy CRDs (None without Kubernetes).
    pub policies: Option<crate::feed::policy::PolicyFeed>,
}

/// Runs passes until the task is dropped, publishing the policy status
/// on `status` after each.
pub async fn run(
    state: Arc<SharedManager>,
    sources: Sources,
    local: LocalView,
    status: watch::Sender<PolicyStatus>,
) {
    let mut mesh_changes = sources.mesh.subscribe();
    let mut endpoint_changes = state.subscribe_endpoints();
    let mut last_problems: BTreeSet<PolicyProblem> = BTreeSet::new();
    let mut ever_synced = false;
    let last_valid = Arc::new(std::sync::Mutex::new(LastValid::new()));
    loop {
        ever_synced |= sources.mesh.status().synced;
        let policy_ready = sources.policies.as_ref().map(|p| p.ready());
        if !ever_synced && let (Some(p), Some(true)) = (&sources.policies, policy_ready) {
            // No identities yet (the mesh feed has not synced since this
            // agent started): existing endpoints keep what is installed,
            // but a pod created now is held by whatever could select it.
            let compiled = crate::policy::compile::compile(
                &p.sources(),
                &CompileInputs {
                    cluster: &local.cluster,
                    identities: &Default::default(),
                    namespaces: &p.namespace_labels(),
                    allow_localhost: local.allow_localhost,
                    named_ports: &NamedPorts::new(),
                    services: &Default::default(),
                    apiserver_on_this_node: false,
                    apiserver_on_remote_node: false,
                },
            );
            state.with_manager(|mgr| mgr.hold_new_endpoints_by(compiled));
        }
        if ever_synced {
            let view = sources.mesh.view();
            let policies = match (&sources.policies, policy_ready) {
                (Some(p), Some(true)) => Some(p.sources()),
                (Some(_), _) => None,
                // Without Kubernetes there are no policies: allow all.
                (None, _) => Some(Vec::new()),
            };
            let context = sources
                .policies
                .as_ref()
                .map(|p| PolicyContext {
                    namespaces: p.namespace_labels(),
                    pod_ports: p.pod_ports(),
                    node_labels: p.node_labels(local.node.as_str()),
                    apiserver_ips: p.apiserver_ips(),
                    services: p.services(),
                })
                .unwrap_or_default();
            let (state2, local2, last_valid2) = (state.clone(), local.clone(), last_valid.clone());
            let start = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                state2
                    .with_manager(|mgr| {
                        let mut last_valid = last_valid2.lock().unwrap_or_else(|e| e.into_inner());
                        sync(
                            mgr,
                            &view,
                            &local2,
                            policies.as_deref(),
                            &context,
                            &mut last_valid,
                        )
                    })
                    .map(|(report, compiled)| {
                        (
                            report,
                            compiled,
                            view.identities.len(),
                            policies.map(|p| p.len()),
                        )
                    })
            })
            .await;
            match result {
                Ok(Ok((report, compiled, identities, npolicies))) => {
                    state.count_reconcile(&report, start.elapsed());
                    if let (Some(feed), Some(c)) = (&sources.policies, &compiled) {
                        feed.write_status(&c.problems).await;
                    }
                    let enforcing = state.enforcing_endpoints();
                    let host_firewall = state.host_firewall();
                    let mut s = status.borrow().clone();
                    s.watching = sources.policies.is_some();
                    s.identities = identities;
                    if let (Some(c), Some(n)) = (compiled, npolicies) {
                        let problems: BTreeSet<PolicyProblem> =
                            c.problems.iter().cloned().collect();
                        for p in problems.difference(&last_problems) {
                            tracing::warn!(policy = %p.policy, "policy refused: {}", p.message);
                            state.metrics().error("invalid-policy");
                        }
                        last_problems = problems;
                        s.policies = n;
                        s.rules = c.rules.values().cloned().collect();
                        s.cidr_identities = c
                            .cidr_identities
                            .iter()
                            .map(|(n, i)| (n.to_string(), *i))
                            .collect();
                        s.problems = c.problems;
                        s.enforcing_endpoints = enforcing;
                        s.host_firewall = host_firewall;
                    }
                    status.send_replace(s);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "identity sync failed; will retry"),
                Err(e) => tracing::warn!(error = %e, "identity sync task failed"),
            }
        }
        let policy_changed = async {
            match &sources.policies {
                Some(p) => p.changed().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = mesh_changes.changed() => {
                if r.is_err() { return }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r = endpoint_changes.changed() => {
                if r.is_err() { return }
            }
            () = policy_changed => tokio::time::sleep(Duration::from_millis(50)).await,
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
