//! The policy feed: MeshNetworkPolicy, MeshClusterwideNetworkPolicy and
//! Kubernetes NetworkPolicy objects of the agent's cluster (plus Cilium's
//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy with
//! `--compat-cilium-policies`), and its Namespaces (whose labels
//! `namespaceSelector` matches), watched with kube-rs.
//!
//! What it is for: handing [`crate::identity_sync`] the current policies as
//! [`PolicySource`]s, and telling it when they change. It reports "ready"
//! once every watch has listed, so a restarted agent keeps the installed
//! policies until it knows the current ones (never an allow-all window).
//!
//! When the CRDs are not installed (or RBAC refuses a kind) the watches fail
//! and retry (a warning names the kind); the agent stays "not ready" for
//! policies and keeps what is installed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Api, Client};
use mesh_export_client::reflect::{Reflected, reflect};
use tokio::sync::Notify;

use crate::policy::compile::{NamespaceLabels, PodPorts, PolicyProblem, PolicySource};
use crate::policy::crd::{
    CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, MeshClusterwideNetworkPolicy,
    MeshNetworkPolicy, PolicyStatus,
};

/// Cilium's kinds, watched only when asked (their CRDs are installed only
/// then).
struct CiliumPolicies {
    namespaced: Reflected<CiliumNetworkPolicy>,
    clusterwide: Reflected<CiliumClusterwideNetworkPolicy>,
}

/// The name of rule `i` of a Cilium policy with several (`specs`): the
/// object's name, then `specs[i]`.
fn specs_name(name: &str, i: usize) -> String {
    format!("{name} specs[{i}]")
}

/// `spec`, then each of `specs`, with the name each compiles under.
fn cilium_rules<'a, S>(
    name: &'a str,
    spec: &'a Option<S>,
    specs: &'a [S],
) -> impl Iterator<Item = (String, &'a S)> + 'a {
    spec.iter().map(move |s| (name.to_string(), s)).chain(
        specs
            .iter()
            .enumerate()
            .map(move |(i, s)| (specs_name(name, i), s)),
    )
}

async fn patch_status<K>(api: &Api<K>, name: &str, status: &PolicyStatus) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Explicit nulls, so that a message that went away is removed.
    let body = serde_json::json!({ "status": {"valid": status.valid, "message": status.message} });
    match api
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => 1,
        Err(e) => {
            tracing::warn!(policy = name, error = %e, "cannot write the policy's status; will retry");
            0
        }
    }
}

/// The watches and their change signal.
pub struct PolicyFeed {
    client: Client,
    namespaced: Reflected<MeshNetworkPolicy>,
    clusterwide: Reflected<MeshClusterwideNetworkPolicy>,
    network_policies: Reflected<NetworkPolicy>,
    namespaces: Reflected<Namespace>,
    /// Every pod of the cluster, for the named ports of its containers.
    /// (The whole object is kept: a metadata-and-ports projection would do.)
    pods: Reflected<Pod>,
    /// Nodes, for the labels host policies select by.
    nodes: Reflected<Node>,
    /// Services and EndpointSlices, for `toServices` and the API server's
    /// addresses (the `kubernetes` Service's).
    services: Reflected<Service>,
    slices: Reflected<EndpointSlice>,
    cilium: Option<CiliumPolicies>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for PolicyFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFeed")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl PolicyFeed {
    /// Starts watching every kind in every namespace (Cilium's too with
    /// `cilium_policies`).
    pub fn start(client: &Client, cilium_policies: bool) -> PolicyFeed {
        let notify = Arc::new(Notify::new());
        PolicyFeed {
            cilium: cilium_policies.then(|| CiliumPolicies {
                namespaced: reflect(Api::all(client.clone()), notify.clone()),
                clusterwide: reflect(Api::all(client.clone()), notify.clone()),
            }),
            client: client.clone(),
            namespaced: reflect(Api::all(client.clone()), notify.clone()),
            clusterwide: reflect(Api::all(client.clone()), notify.clone()),
            network_policies: reflect(Api::all(client.clone()), notify.clone()),
            namespaces: reflect(Api::all(client.clone()), notify.clone()),
            pods: reflect(Api::all(client.clone()), notify.clone()),
            nodes: reflect(Api::all(client.clone()), notify.clone()),
            services: reflect(Api::all(client.clone()), notify.clone()),
            slices: reflect(Api::all(client.clone()), notify.clone()),
            notify,
        }
    }

    /// Whether every kind has been listed at least once.
    pub fn ready(&self) -> bool {
        use futures::FutureExt as _;
        let listed = |ready: Option<Result<(), _>>| ready.is_some_and(|r| r.is_ok());
        listed(self.namespaced.0.wait_until_ready().now_or_never())
            && listed(self.clusterwide.0.wait_until_ready().now_or_never())
            && listed(self.network_policies.0.wait_until_ready().now_or_never())
            && listed(self.namespaces.0.wait_until_ready().now_or_never())
            && listed(self.pods.0.wait_until_ready().now_or_never())
            && listed(self.nodes.0.wait_until_ready().now_or_never())
            && listed(self.services.0.wait_until_ready().now_or_never())
            && listed(self.slices.0.wait_until_ready().now_or_never())
            && self.cilium.as_ref().is_none_or(|c| {
                listed(c.namespaced.0.wait_until_ready().now_or_never())
                    && listed(c.clusterwide.0.wait_until_ready().now_or_never())
            })
    }

    /// Each pod's address and the named ports of its containers.
    pub fn pod_ports(&self) -> Vec<PodPorts> {
        self.pods
            .0
            .state()
            .iter()
            .filter_map(|pod| {
                let ip = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
                let ports: Vec<_> = pod
                    .spec
                    .as_ref()?
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|p| {
                        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                            "TCP" => mesh_api::Protocol::Tcp,
                            "UDP" => mesh_api::Protocol::Udp,
                            "SCTP" => mesh_api::Protocol::Sctp,
                            _ => return None,
                        };
                        Some((
                            p.name.clone()?,
                            u16::try_from(p.container_port).ok()?,
                            proto,
                        ))
                    })
                    .collect();
                (!ports.is_empty()).then_some((ip, ports))
            })
            .collect()
    }

    /// The API server's IPv4 addresses: the endpoints of the `kubernetes`
    /// Service in `default` (what the `kube-apiserver` entity matches), as
    /// the API server writes them: in its slice named `kubernetes` (another
    /// slice carrying the Service's label does not make an address the API
    /// server).
    pub fn apiserver_ips(&self) -> Vec<std::net::Ipv4Addr> {
        let mut out: Vec<std::net::Ipv4Addr> = self
            .slices
            .0
            .state()
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some("default")
                    && s.metadata.name.as_deref() == Some("kubernetes")
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .is_some_and(|n| n == "kubernetes")
            })
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.iter()))
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every Service with what `toServices` needs of it (the addresses
    /// only for Services without a selector).
    pub fn services(&self) -> crate::policy::compile::Services {
        let mut by_service: std::collections::BTreeMap<(String, String), Vec<std::net::Ipv4Addr>> =
            Default::default();
        for s in self.slices.0.state() {
            let (Some(ns), Some(name)) = (
                s.metadata.namespace.clone(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .cloned(),
            ) else {
                continue;
            };
            by_service.entry((ns, name)).or_default().extend(
                s.endpoints
                    .iter()
                    .flat_map(|e| e.addresses.iter())
                    .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok()),
            );
        }
        self.services
            .0
            .state()
            .iter()
            .filter_map(|s| {
                let ns = s.metadata.namespace.clone()?;
                let name = s.metadata.name.clone()?;
                let selector = s
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.selector.clone())
                    .filter(|sel| !sel.is_empty());
                let mut addresses = if selector.is_none() {
                    by_service
                        .get(&(ns.clone(), name.clone()))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                addresses.sort();
                addresses.dedup();
                Some((
                    (ns, name),
                    crate::policy::compile::ServiceInfo {
                        labels: s.metadata.labels.clone().unwrap_or_default(),
                        selector,
                        addresses,
                    },
                ))
            })
            .collect()
    }

    /// The labels of Node `name`, when it is known.
    pub fn node_labels(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.nodes
            .0
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    /// The labels of every namespace, by name.
    pub fn namespace_labels(&self) -> NamespaceLabels {
        self.namespaces
            .0
            .state()
            .iter()
            .filter_map(|ns| {
                Some((
                    ns.metadata.name.clone()?,
                    ns.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Every policy, every kind.
    pub fn sources(&self) -> Vec<PolicySource> {
        let mut out: Vec<PolicySource> = self
            .namespaced
            .0
            .state()
            .iter()
            .map(|p| {
                PolicySource::namespaced(
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &p.spec,
                )
            })
            .collect();
        out.extend(self.clusterwide.0.state().iter().map(|p| {
            PolicySource::clusterwide(p.metadata.name.as_deref().unwrap_or_default(), &p.spec)
        }));
        out.extend(
            self.network_policies
                .0
                .state()
                .iter()
                .map(|p| crate::policy::netpol::source(p)),
        );
        if let Some(c) = &self.cilium {
            for p in c.namespaced.0.state() {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                let name = p.metadata.name.as_deref().unwrap_or_default();
                out.extend(cilium_rules(name, &p.spec, &p.specs).map(|(name, spec)| {
                    PolicySource::namespaced_as("CiliumNetworkPolicy", ns, &name, spec)
                }));
            }
            for p in c.clusterwide.0.state() {
                let name = p.metadata.name.as_deref().unwrap_or_default();
                out.extend(cilium_rules(name, &p.spec, &p.specs).map(|(name, spec)| {
                    PolicySource::clusterwide_as("CiliumClusterwideNetworkPolicy", &name, spec)
                }));
            }
        }
        out
    }

    /// Writes each policy's verdict into its `status` (`valid`, `message`:
    /// what `kubectl get mnp` shows), only where it differs from what the
    /// object holds, so the agents of a cluster, which all compile the same
    /// verdict, write it once between them. Returns how many were written;
    /// failures are logged and retried on the next pass.
    pub async fn write_status(&self, problems: &[PolicyProblem]) -> usize {
        let verdict = |kind: &str, id: &str| -> PolicyStatus {
            // The object's own rule and, for Cilium's, each of its `specs`.
            let whole = format!("{kind} {id}");
            let several = format!("{whole} specs[");
            let mine: Vec<&PolicyProblem> = problems
                .iter()
                .filter(|p| p.policy == whole || p.policy.starts_with(&several))
                .collect();
            let refused = !mine.is_empty();
            let message = mine
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            PolicyStatus {
                valid: Some(if refused { "false" } else { "true" }.to_string()),
                message: (!message.is_empty()).then_some(message),
            }
        };
        let mut written = 0;
        for p in self.namespaced.0.state() {
            let (Some(ns), Some(name)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
            else {
                continue;
            };
            let want = verdict("MeshNetworkPolicy", &format!("{ns}/{name}"));
            if p.status.as_ref() != Some(&want) {
                let api: Api<MeshNetworkPolicy> = Api::namespaced(self.client.clone(), ns);
                written += patch_status(&api, name, &want).await;
            }
        }
        for p in self.clusterwide.0.state() {
            let Some(name) = p.metadata.name.as_deref() else {
                continue;
            };
            let want = verdict("MeshClusterwideNetworkPolicy", name);
            if p.status.as_ref() != Some(&want) {
                let api: Api<MeshClusterwideNetworkPolicy> = Api::all(self.client.clone());
                written += patch_status(&api, name, &want).await;
            }
        }
        if let Some(c) = &self.cilium {
            for p in c.namespaced.0.state() {
                let (Some(ns), Some(name)) =
                    (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
                else {
                    continue;
                };
                let want = verdict("CiliumNetworkPolicy", &format!("{ns}/{name}"));
                if p.status.as_ref() != Some(&want) {
                    let api: Api<CiliumNetworkPolicy> = Api::namespaced(self.client.clone(), ns);
                    written += patch_status(&api, name, &want).await;
                }
            }
            for p in c.clusterwide.0.state() {
                let Some(name) = p.metadata.name.as_deref() else {
                    continue;
                };
                let want = verdict("CiliumClusterwideNetworkPolicy", name);
                if p.status.as_ref() != Some(&want) {
                    let api: Api<CiliumClusterwideNetworkPolicy> = Api::all(self.client.clone());
                    written += patch_status(&api, name, &want).await;
                }
            }
        }
        written
    }

    /// Resolves on the next change (or watch error) of either kind.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}
