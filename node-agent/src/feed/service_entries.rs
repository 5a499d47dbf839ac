//! The local service entries: what the Kubernetes Services and
//! EndpointSlices of this cluster ask of the datapath, before global
//! Services get their remote backends ([`super::global`]).
//!
//! What it is for: the pure step of the kube-proxy replacement. One
//! [`ServiceEntry`] per ClusterIP:port, one per NodePort on each of the
//! node's IPv4 addresses, one per external IP and LoadBalancer address
//! (`status.loadBalancer.ingress`), with the ready backends of the Service's
//! EndpointSlices; a [`Warning`] for each Service skipped or served
//! partially. Both the service feed ([`super::services`]) and the global
//! merge ([`super::global`]) use these types, so neither depends on the
//! other's.
//!
//! What it is not for: watching anything ([`super::services::run`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use mesh_api::Protocol;

use crate::datapath::{BackendAddr, Frontend, FrontendKind, ServiceEntry};

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

/// The local service entries (ClusterIP, NodePort, external IP and
/// LoadBalancer frontends with their ready backends, backends sorted so the
/// slot order is stable across restarts) and the warnings for services
/// skipped or served partially. NodePort frontends on `node_ips` of this
/// node (`node_name`), external IPs and LoadBalancer addresses get every
/// backend, or only those on this node when `externalTrafficPolicy:
/// Local`; the ClusterIP only this node's with `internalTrafficPolicy:
/// Local`.
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
        let mut external_ips = Vec::new();
        for text in spec.external_ips.iter().flatten() {
            match text.parse::<Ipv4Addr>() {
                Ok(ip) => external_ips.push(ip),
                Err(_) => warn(
                    &mut warnings,
                    format!(
                        "externalIPs entry {text:?} is not an IPv4 address; the datapath serves IPv4 only, the others are served"
                    ),
                ),
            }
        }
        let lb_ips: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
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
            // NodePort: with `externalTrafficPolicy: Local` this node's
            // backends only (the client's address is kept, and a node
            // without one answers nothing); with `Cluster` (the default)
            // every backend, those on other nodes reached with the node's
            // address as source (the datapath SNATs them).
            let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
            let on_this_node =
                |(_, n): &&(BackendAddr, Option<String>)| n.as_deref() == Some(node_name);
            let mut node_backends: Vec<BackendAddr> = located
                .iter()
                .filter(|b| !local_only || on_this_node(b))
                .map(|(b, _)| b.clone())
                .collect();
            node_backends.dedup();
            // `internalTrafficPolicy: Local`: the ClusterIP serves this
            // node's backends only (none here: nothing answers).
            let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
            let cluster_backends = if internal_local {
                let mut mine: Vec<BackendAddr> = located
                    .iter()
                    .filter(on_this_node)
                    .map(|(b, _)| b.clone())
                    .collect();
                mine.dedup();
                mine
            } else {
                backends.clone()
            };
            let frontend = Frontend {
                ip: IpAddr::V4(vip),
                port,
                protocol,
                kind: FrontendKind::ClusterIp,
            };
            svc_entries.push(ServiceEntry {
                frontend,
                backends: cluster_backends,
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
            // External IPs and LoadBalancer addresses: served on every
            // node for traffic arriving from outside, with the external
            // traffic policy's backends.
            for (ip, kind) in external_ips
                .iter()
                .map(|ip| (*ip, FrontendKind::ExternalIp))
                .chain(lb_ips.iter().map(|ip| (*ip, FrontendKind::LoadBalancer)))
            {
                svc_entries.push(ServiceEntry {
                    frontend: Frontend {
                        ip: IpAddr::V4(ip),
                        port,
                        protocol,
                        kind,
                    },
                    backends: node_backends.clone(),
                    affinity_timeout: None,
                });
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

#[cfg(test)]
mod tests;
