//! Global services: remote clusters' backends merged into the local
//! [`ServiceEntry`]s, per DESIGN.md.
//!
//! What it is for: the pure step between the Kubernetes service feed and the
//! datapath. For each local Service that is global (its mesh annotations,
//! Cilium's names too with `compat.ciliumAnnotations`), the same
//! namespace/name [`ServiceRecord`]s of OTHER clusters (from the mesh feed)
//! are merged with the local ready backends by
//! [`mesh_api::merge::merge_global_backends`] (shared, affinity
//! local/remote/none), and each remote backend is mapped to the service
//! port: the backend's port of the same name and protocol (its
//! EndpointSlice's resolved port), else the remote Service's numeric
//! targetPort.
//!
//! A remote cluster's backends are there while its records are: the
//! mesh-apiserver keeps an unreachable cluster's last known records (stale)
//! and withdraws them when the cluster is removed, so a removed cluster's
//! backends leave the datapath on the next run.
//!
//! Bad input: a malformed mesh annotation gives a warning naming the Service
//! and the allowed values; the Service is served with its local backends
//! only (treated as not global). Nothing else is affected.
//!
//! What it is not for: watching anything (see [`super::services::run`]);
//! topology-aware routing within a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use mesh_api::merge::{RemoteService, merge_global_backends};
use mesh_api::records::{Backend, NamedPort, ServiceRecord};
use mesh_api::{ClusterName, Protocol};

use super::service_entries::Warning;
use crate::datapath::{BackendAddr, FrontendKind, ServiceEntry};

/// What the merge needs beyond the local Services and entries.
#[derive(Debug, Clone, Copy)]
pub struct GlobalInputs<'a> {
    /// This agent's cluster: its records in `records` are not remote.
    pub cluster: &'a ClusterName,
    /// Honour Cilium's annotation names too.
    pub compat_cilium: bool,
    /// The ServiceRecords of every cluster, as the mesh feed holds them.
    pub records: &'a [ServiceRecord],
    /// Clusters known to be unreachable (their last known state is kept).
    pub stale: &'a BTreeSet<ClusterName>,
}

/// The entries for the datapath: `local` (from
/// [`super::service_entries::local_entries`] over `services`) with, for each global
/// Service, its ClusterIP frontends (not NodePorts, which serve this node's
/// backends only) carrying the merged backends of every
/// cluster, sorted. Also the warnings for malformed mesh annotations and for
/// remote backends whose port cannot be resolved.
pub fn merge_entries(
    services: &[Service],
    local: Vec<ServiceEntry>,
    inputs: &GlobalInputs<'_>,
) -> (Vec<ServiceEntry>, Vec<Warning>) {
    let mut entries: BTreeMap<_, ServiceEntry> =
        local.into_iter().map(|e| (e.frontend, e)).collect();
    let mut warnings = BTreeSet::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}");
        let empty = BTreeMap::new();
        let annotations = svc.metadata.annotations.as_ref().unwrap_or(&empty);
        let options =
            match mesh_api::annotations::service_mesh_options(annotations, inputs.compat_cilium) {
                Ok(o) => o,
                Err(e) => {
                    warnings.insert(Warning {
                        service: id,
                        message: format!(
                            "{e}; the Service is treated as not global (local backends only)"
                        ),
                    });
                    continue;
                }
            };
        if !options.global {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let Some(vip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|c| c.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let remotes: Vec<RemoteService<'_>> = inputs
            .records
            .iter()
            .filter(|r| &r.cluster != inputs.cluster && r.namespace == ns && r.name == name)
            .map(|r| RemoteService {
                record: r,
                stale: inputs.stale.contains(&r.cluster),
            })
            .collect();
        for p in spec.ports.iter().flatten() {
            let Ok(port) = u16::try_from(p.port) else {
                continue; // local_entries skipped the Service and warned
            };
            let Ok(protocol) = p.protocol.as_deref().unwrap_or("TCP").parse::<Protocol>() else {
                continue;
            };
            let pname = p.name.clone().unwrap_or_default();
            for entry in entries.values_mut() {
                let f = entry.frontend;
                // NodePorts serve this node's backends only (no SNAT).
                let mine = f.kind == FrontendKind::ClusterIp
                    && f.protocol == protocol
                    && f.ip == vip
                    && f.port == port;
                if !mine {
                    continue;
                }
                let local_record = ServiceRecord {
                    cluster: inputs.cluster.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                    cluster_ips: vec![vip],
                    ports: Vec::new(),
                    backends: entry
                        .backends
                        .iter()
                        .map(|b| Backend {
                            ip: b.ip,
                            ports: vec![NamedPort {
                                name: pname.clone(),
                                port: b.port,
                                protocol,
                            }],
                            ready: true,
                            node: None,
                            zone: None,
                        })
                        .collect(),
                    options,
                };
                let merged = merge_global_backends(&local_record, &remotes);
                let mut backends = BTreeSet::new();
                for m in merged {
                    let record = remotes
                        .iter()
                        .find(|r| r.record.cluster == m.cluster)
                        .map(|r| r.record)
                        .unwrap_or(&local_record);
                    match backend_port(&m.backend, record, &pname, protocol) {
                        Some(bport) => {
                            backends.insert(BackendAddr {
                                ip: m.backend.ip,
                                port: bport,
                            });
                        }
                        None => {
                            warnings.insert(Warning {
                                service: id.clone(),
                                message: format!(
                                    "backend {} in cluster {} has no port named {pname:?} ({protocol}) and its Service no numeric targetPort for it; that backend is not used",
                                    m.backend.ip, m.cluster
                                ),
                            });
                        }
                    }
                }
                entry.backends = backends.into_iter().collect();
            }
        }
    }
    (
        entries.into_values().collect(),
        warnings.into_iter().collect(),
    )
}

/// The port of `backend` (of `record`'s cluster) for the service port named
/// `name`: the backend's own port of that name and protocol, else the
/// Service's numeric targetPort for that name and protocol.
fn backend_port(
    backend: &Backend,
    record: &ServiceRecord,
    name: &str,
    protocol: Protocol,
) -> Option<u16> {
    backend
        .ports
        .iter()
        .find(|p| p.name == name && p.protocol == protocol)
        .map(|p| p.port)
        .or_else(|| {
            record
                .ports
                .iter()
                .find(|p| p.name == name && p.protocol == protocol && p.target_port != 0)
                .map(|p| p.target_port)
        })
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests;
