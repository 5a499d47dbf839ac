//! The Kubernetes service feed: kube-proxy replacement.
//!
//! What it is for: watching Services, EndpointSlices and the agent's own
//! Node (kube-rs reflectors) and turning them into [`ServiceEntry`]s — one
//! per ClusterIP:port, and one per NodePort on each of the node's IPv4
//! addresses — with the ready backends of the service's EndpointSlices. The
//! entries replace the reconciler's [`SOURCE`] part after every change
//! (debounced), so the datapath only sees differences.
//!
//! Bad input: a Service with an invalid port or a protocol the datapath does
//! not serve is skipped as a whole, with a warning naming it and saying what
//! is allowed; every other service keeps working.
//!
//! Global services: [`to_datapath`] merges remote clusters' backends (from
//! the mesh feed) into the entries of global Services
//! ([`super::global::merge_entries`]); the feed re-runs on changes of either
//! side.
//!
//! What it is not for: sessionAffinity ClientIP (not implemented by the
//! datapath yet: served without affinity, with a warning).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use mesh_api::{ClusterName, Protocol};
use mesh_export_client::reflect::reflect;
use tokio::sync::Notify;

use super::global::{GlobalInputs, merge_entries};
use super::mesh::MeshFeed;
use crate::datapath::{BackendAddr, Frontend, FrontendKind, ServiceEntry};

/// The reconciler source name of this feed.
pub const SOURCE: &str = "kubernetes-services";

/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service the feed could not (fully) serve, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `namespace/name` of the Service.
    pub service: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// The local service entries (ClusterIP and NodePort frontends with their
/// ready backends, backends sorted so the slot order is stable across
/// restarts) and the warnings for services skipped or served partially.
/// NodePort frontends on `node_ips` of this node (`node_name`) get only the
/// backends on this node when `externalTrafficPolicy: Local`.
pub fn local_entries(
    services: &[Service],
    slices: &[EndpointSlice],
    node_name: &str,
    node_ips: &[Ipv4Addr],
) -> (Vec<ServiceEntry>, Vec<Warning>) {
    let mut entries = BTreeMap::new();
    let mut warnings = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}");
        let warn = |warnings: &mut Vec<Warning>, message: String| {
            warnings.push(Warning {
                service: id.clone(),
                message,
            })
        };
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref() else {
            continue;
        };
        if cluster_ip.is_empty() || cluster_ip == "None" {
            continue; // headless: no virtual IP to serve
        }
        let Ok(vip) = cluster_ip.parse::<Ipv4Addr>() else {
            warn(
                &mut warnings,
                format!(
                    "clusterIP {cluster_ip:?} is not an IPv4 address; the datapath serves IPv4 ClusterIPs only"
                ),
            );
            continue;
        };
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let mut svc_entries = Vec::new();
        let mut bad = None;
        for p in spec.ports.iter().flatten() {
            let pname = p.name.clone().unwrap_or_default();
            let label = if pname.is_empty() {
                format!("port {}", p.port)
            } else {
                format!("port {pname:?} ({})", p.port)
            };
            let Some(port) = u16::try_from(p.port).ok().filter(|p| *p != 0) else {
                bad = Some(format!("{label} is not a valid port; use 1-65535"));
                break;
            };
            let proto_text = p.protocol.as_deref().unwrap_or("TCP");
            let protocol = match proto_text {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                other => {
                    bad = Some(format!(
                        "{label} has protocol {other:?}; the datapath serves TCP and UDP"
                    ));
                    break;
                }
            };
            let node_port = match p.node_port {
                Some(n) if node_ports => match u16::try_from(n).ok().filter(|n| *n != 0) {
                    Some(n) => Some(n),
                    None => {
                        bad = Some(format!(
                            "{label} has nodePort {n}, not a valid port; use 1-65535"
                        ));
                        break;
                    }
                },
                _ => None,
            };
            let located = ready_backends(slices, &ns, &name, p.name.as_deref(), proto_text);
            let mut backends: Vec<BackendAddr> = located.iter().map(|(b, _)| b.clone()).collect();
            backends.dedup(); // sorted by address: one slot per address
            // NodePort: this node's backends only, whatever the
            // externalTrafficPolicy. The datapath does not SNAT, so a
            // backend on another node would answer the client from its own
            // address and the client would drop the reply.
            let node_backends: Vec<BackendAddr> = located
                .iter()
                .filter(|(_, n)| n.as_deref() == Some(node_name))
                .map(|(b, _)| b.clone())
                .collect();
            let mut node_backends = node_backends;
            node_backends.dedup();
            let frontend = Frontend {
                ip: IpAddr::V4(vip),
                port,
                protocol,
                kind: FrontendKind::ClusterIp,
            };
            svc_entries.push(ServiceEntry {
                frontend,
                backends: backends.clone(),
                affinity_timeout: None,
            });
            if let Some(np) = node_port {
                for ip in node_ips {
                    svc_entries.push(ServiceEntry {
                        frontend: Frontend {
                            ip: IpAddr::V4(*ip),
                            port: np,
                            protocol,
                            kind: FrontendKind::NodePort,
                        },
                        backends: node_backends.clone(),
                        affinity_timeout: None,
                    });
                }
            }
        }
        if let Some(message) = bad {
            warn(&mut warnings, format!("{message}; the Service is skipped"));
            continue;
        }
        let affinity = match spec.session_affinity.as_deref() {
            Some("ClientIP") => {
                let t = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
                match u32::try_from(t).ok().filter(|t| (1..=86_400).contains(t)) {
                    Some(t) => Some(t),
                    None => {
                        warn(
                            &mut warnings,
                            format!(
                                "sessionAffinityConfig.clientIP.timeoutSeconds {t} is outside 1-86400; served with the default {DEFAULT_AFFINITY_TIMEOUT} s"
                            ),
                        );
                        Some(DEFAULT_AFFINITY_TIMEOUT as u32)
                    }
                }
            }
            _ => None,
        };
        for mut e in svc_entries {
            e.affinity_timeout = affinity;
            if entries.contains_key(&e.frontend) {
                warn(
                    &mut warnings,
                    format!(
                        "frontend {}:{}/{} is already served by another Service; this one is skipped for it",
                        e.frontend.ip, e.frontend.port, e.frontend.protocol
                    ),
                );
                continue;
            }
            entries.insert(e.frontend, e);
        }
    }
    (entries.into_values().collect(), warnings)
}

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10_800;

/// Ready backends of one service port, from the service's IPv4
/// EndpointSlices: endpoints whose `ready` condition is not false (unset
/// means ready, as in Kubernetes), matched to the port by name and protocol;
/// each with the node it runs on, when the slice says.
fn ready_backends(
    slices: &[EndpointSlice],
    ns: &str,
    service: &str,
    port_name: Option<&str>,
    protocol: &str,
) -> Vec<(BackendAddr, Option<String>)> {
    let mut out = BTreeSet::new();
    let want_name = port_name.unwrap_or("");
    for slice in slices {
        if slice.metadata.namespace.as_deref() != Some(ns)
            || slice.address_type != "IPv4"
            || slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                != Some(service)
        {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find_map(|p| {
            let name = p.name.as_deref().unwrap_or("");
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            (name == want_name && proto == protocol)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<Ipv4Addr>() {
                    out.insert((
                        BackendAddr {
                            ip: IpAddr::V4(ip),
                            port,
                        },
                        ep.node_name.clone(),
                    ));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Where global services' remote backends come from: the mesh feed, this
/// agent's cluster and the annotation compatibility flag.
#[derive(Debug, Clone)]
pub struct GlobalSource {
    /// The mesh feed (records of every cluster); without it (no
    /// mesh-apiserver) global Services keep their local backends.
    pub mesh: Option<Arc<MeshFeed>>,
    /// This agent's cluster.
    pub cluster: ClusterName,
    /// `compat.ciliumAnnotations`.
    pub compat_cilium: bool,
}

/// What goes to the datapath for the local service entries of `services`:
/// global Services get the backends of every cluster, merged per DESIGN.md
/// (see [`super::global::merge_entries`]); others stay as they are. Pure:
/// `records` are all clusters' ServiceRecords, `stale` the clusters known to
/// be unreachable.
pub fn to_datapath(
    services: &[Service],
    local: Vec<ServiceEntry>,
    inputs: &GlobalInputs<'_>,
) -> (Vec<ServiceEntry>, Vec<Warning>) {
    merge_entries(services, local, inputs)
}

/// The IPv4 InternalIP/ExternalIP addresses of a Node.
pub fn node_addresses(node: &Node) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Watches Services, EndpointSlices and the Node `node_name` through
/// `client` and calls `apply` with the entries for the datapath after every
/// change of those or of `global`'s mesh feed (debounced by 100 ms; also
/// every 30 s as a safety net). Runs until the task is dropped.
pub async fn run(
    client: Client,
    node_name: String,
    global: GlobalSource,
    apply: impl Fn(Vec<ServiceEntry>) + Send,
    on_new_warning: impl Fn(&Warning) + Send,
) {
    let notify = Arc::new(Notify::new());
    let services = reflect::<Service>(Api::all(client.clone()), notify.clone());
    let slices = reflect::<EndpointSlice>(Api::all(client.clone()), notify.clone());
    let nodes = reflect::<Node>(Api::all(client), notify.clone());
    let _ = services.0.wait_until_ready().await;
    let _ = slices.0.wait_until_ready().await;
    let _ = nodes.0.wait_until_ready().await;
    tracing::info!("Kubernetes service feed synced");
    let mut last_warnings = BTreeSet::new();
    let mut warned_no_node = false;
    let mut mesh_changes = global.mesh.as_ref().map(|m| m.subscribe());
    let no_stale = BTreeSet::new();
    loop {
        let pass = tracing::info_span!(
            "services_pass",
            node = %node_name,
            cluster = %global.cluster,
            services = tracing::field::Empty,
            entries = tracing::field::Empty
        );
        let entered = pass.enter();
        let node_ips = nodes
            .0
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .map(|n| node_addresses(n))
            .unwrap_or_default();
        if node_ips.is_empty() && !warned_no_node {
            tracing::warn!(node = %node_name, "no IPv4 address known for this Node (object missing or without addresses): NodePort frontends are not served");
            warned_no_node = true;
        }
        let svcs: Vec<Service> = services.0.state().iter().map(|s| (**s).clone()).collect();
        let sls: Vec<EndpointSlice> = slices.0.state().iter().map(|s| (**s).clone()).collect();
        let (entries, mut warnings) = local_entries(&svcs, &sls, &node_name, &node_ips);
        let records = global
            .mesh
            .as_ref()
            .map(|m| m.services())
            .unwrap_or_default();
        // The mesh-apiserver keeps an unreachable cluster's last known
        // records and withdraws them when the cluster is removed; the watch
        // does not say which cluster is stale, and staleness does not change
        // which backends are used.
        let inputs = GlobalInputs {
            cluster: &global.cluster,
            compat_cilium: global.compat_cilium,
            records: &records,
            stale: &no_stale,
        };
        let (entries, merge_warnings) = to_datapath(&svcs, entries, &inputs);
        warnings.extend(merge_warnings);
        let warnings: BTreeSet<Warning> = warnings.into_iter().collect();
        for w in warnings.difference(&last_warnings) {
            tracing::warn!(service = %w.service, "{}", w.message);
            on_new_warning(w);
        }
        last_warnings = warnings;
        pass.record("services", svcs.len());
        pass.record("entries", entries.len());
        apply(entries);
        drop(entered);
        let mesh_changed = async {
            match mesh_changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = notify.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
            () = mesh_changed => tokio::time::sleep(Duration::from_millis(100)).await,
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests;

/// The Kubernetes client for the feed when kube-proxy replacement is on:
/// from KUBECONFIG or the in-cluster environment. Without any Kubernetes
/// configuration in the environment the agent runs without the feed (a
/// warning says so); a configuration that does not work is an error.
/// Call it before opening the endpoint manager, so that [`SOURCE`] can be
/// declared pending ([`crate::reconcile::Reconciler::expect_source`]).
pub async fn client_for(
    config: &crate::config::AgentConfig,
) -> std::result::Result<Option<Client>, kube::Error> {
    if !config.kube_proxy_replacement {
        tracing::info!("kube-proxy replacement off: Services are not loaded into the datapath");
        return Ok(None);
    }
    let configured = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    match Client::try_default().await {
        Ok(c) => Ok(Some(c)),
        Err(e) if !configured => {
            tracing::warn!(error = %e, "no Kubernetes API configured (KUBECONFIG or in-cluster): the service feed is off");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs the feed into the agent's reconciler under [`SOURCE`] (needs the
/// multi-threaded runtime: map writes block under the manager lock).
pub fn spawn(
    client: Client,
    node_name: String,
    global: GlobalSource,
    state: Arc<crate::api::AgentState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let counters = state.clone();
        run(
            client,
            node_name,
            global,
            move |entries| {
                tokio::task::block_in_place(|| state.set_services(SOURCE, entries));
            },
            // Counted once per new warning: meshwork_errors_total{reason="invalid-service"}.
            move |_| counters.metrics().error("invalid-service"),
        )
        .await;
    })
}
