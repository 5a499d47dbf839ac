//! The Kubernetes service feed: kube-proxy replacement.
//!
//! What it is for: watching Services, EndpointSlices and the agent's own
//! Node (kube-rs reflectors) and turning them into [`ServiceEntry`]s
//! ([`super::service_entries::local_entries`]: one per ClusterIP:port, and
//! one per NodePort on each of the node's IPv4 addresses, with the ready
//! backends of the service's EndpointSlices). The entries replace the
//! reconciler's [`SOURCE`] part after every change (debounced), so the
//! datapath only sees differences.
//!
//! Bad input: a Service with an invalid port or a protocol the datapath does
//! not serve is skipped as a whole, with a warning naming it and saying what
//! is allowed; every other service keeps working.
//!
//! Health-check node ports of LoadBalancer Services with
//! `externalTrafficPolicy: Local` are served alongside
//! ([`super::health_check`]).
//!
//! Global services: [`to_datapath`] merges remote clusters' backends (from
//! the mesh feed) into the entries of global Services
//! ([`super::global::merge_entries`]); the feed re-runs on changes of either
//! side.
//!
//! What it is not for: sessionAffinity ClientIP (not implemented by the
//! datapath yet: served without affinity, with a warning).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use mesh_api::ClusterName;
use mesh_export_client::reflect::reflect;
use tokio::sync::Notify;

use super::global::{GlobalInputs, merge_entries};
use super::mesh::MeshFeed;
use super::service_entries::{Warning, local_entries, node_addresses};
use crate::datapath::ServiceEntry;

/// The reconciler source name of this feed.
pub const SOURCE: &str = "kubernetes-services";

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
    let health = super::health_check::HealthCheckServer::new();
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
        health.set(super::health_check::health_checks(&svcs, &sls, &node_name));
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
    state: Arc<crate::shared_manager::SharedManager>,
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
