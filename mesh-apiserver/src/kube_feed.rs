//! The Kubernetes feed: translation of Nodes, Pods, Services and
//! EndpointSlices into mesh records (pure functions, tested with
//! k8s-openapi objects), identity allocation in the store, and the kube-rs
//! watchers that drive them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use mesh_api::clustermesh::RefusedObject;
use mesh_api::{
    Backend, ClusterName, EndpointRecord, Identity, IdentityRecord, Kind, LabelSet, NamedPort,
    NodeName, NodeRecord, Protocol, Record, ServicePort, ServiceRecord, WireGuardKey,
};
use mesh_export_client::reflect::reflect;
use tokio::sync::{Notify, watch};

use crate::error::{Error, Result};
use crate::export::LocalCluster;
use crate::state::{Writer, record_key};
use crate::store::{Condition, Op, Store};

/// A problem with one object; it is skipped (or treated as not global) and
/// nothing else is affected.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// `Kind namespace/name`.
    pub object: String,
    /// What is wrong and what is allowed.
    pub message: String,
    /// The object, for the Kubernetes Event that reports the problem.
    pub reference: Box<k8s_openapi::api::core::v1::ObjectReference>,
}

impl Warning {
    /// A problem with `obj`.
    pub fn on<K: kube::Resource<DynamicType = ()>>(obj: &K, message: String) -> Warning {
        let ns = obj.meta().namespace.as_deref();
        let name = obj.meta().name.clone().unwrap_or_default();
        Warning {
            object: match ns {
                Some(ns) => format!("{} {ns}/{name}", K::kind(&())),
                None => format!("{} {name}", K::kind(&())),
            },
            message,
            reference: Box::new(obj.object_ref(&())),
        }
    }
}

/// Node → NodeRecord: InternalIP first, then other addresses; pod CIDRs
/// from `spec.podCIDRs` (or `spec.podCIDR`); the WireGuard key from the
/// `network.meshwork.io/wg-pub-key` annotation (a malformed key is a warning
/// and the node is exported without one).
pub fn node_record(
    cluster: &ClusterName,
    node: &Node,
) -> std::result::Result<(NodeRecord, Option<Warning>), Warning> {
    let name = NodeName::new(node.name_any()).map_err(|e| Warning::on(node, e.to_string()))?;
    let mut addrs: Vec<(u8, IpAddr)> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter_map(|a| {
                    let rank = match a.type_.as_str() {
                        "InternalIP" => 0,
                        "ExternalIP" => 1,
                        _ => return None,
                    };
                    a.address.parse().ok().map(|ip| (rank, ip))
                })
                .collect()
        })
        .unwrap_or_default();
    addrs.sort_by_key(|(rank, _)| *rank);
    let mut ips: Vec<IpAddr> = Vec::new();
    for (_, ip) in addrs {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let spec = node.spec.clone().unwrap_or_default();
    let cidr_texts = spec
        .pod_cidrs
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| spec.pod_cidr.clone().map(|c| vec![c]))
        .unwrap_or_default();
    let pod_cidrs = cidr_texts
        .iter()
        .map(|c| mesh_api::cidr::parse_cidr("spec.podCIDRs", c))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Warning::on(node, e.to_string()))?;
    let mut warning = None;
    let wireguard_key = match node.annotations().get(mesh_api::annotations::WG_PUB_KEY) {
        None => None,
        Some(k) => match k.parse::<WireGuardKey>() {
            Ok(k) => Some(k),
            Err(e) => {
                warning = Some(Warning::on(
                    node,
                    format!(
                        "annotation {}: {e}; exported without a key",
                        mesh_api::annotations::WG_PUB_KEY
                    ),
                ));
                None
            }
        },
    };
    Ok((
        NodeRecord {
            cluster: cluster.clone(),
            name,
            ips,
            pod_cidrs,
            wireguard_key,
        },
        warning,
    ))
}

/// The identity labels of a pod.
pub fn pod_labels(cluster: &ClusterName, pod: &Pod) -> std::result::Result<LabelSet, Warning> {
    LabelSet::for_pod(cluster, &pod.namespace().unwrap_or_default(), pod.labels())
        .map_err(|e| Warning::on(pod, e.to_string()))
}

/// A pod that has addresses and a node, as an endpoint with `identity`;
/// `None` for pods without an IP, unscheduled, finished, or on the host
/// network (they are the node's).
pub fn endpoint_record(
    cluster: &ClusterName,
    pod: &Pod,
    identity: Identity,
) -> Option<EndpointRecord> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .as_ref()
        .map(|v| v.iter().filter_map(|p| p.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_ref().and_then(|p| p.parse().ok())
    {
        ips.push(ip);
    }
    if ips.is_empty() {
        return None;
    }
    let node = NodeName::new(spec.node_name.clone()?).ok()?;
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.container_port).ok().filter(|p| *p != 0)?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
            })
        })
        .collect();
    Some(EndpointRecord {
        cluster: cluster.clone(),
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        ips,
        identity,
        node,
        ports,
    })
}

/// A Service and its EndpointSlices → a ServiceRecord when the Service is
/// global. A malformed mesh annotation gives a warning naming the Service
/// and the allowed values, and the Service is treated as not global.
pub fn service_record(
    cluster: &ClusterName,
    service: &Service,
    slices: &[&EndpointSlice],
    compat_cilium: bool,
) -> (Option<ServiceRecord>, Option<Warning>) {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let object = format!("Service {namespace}/{name}");
    let options =
        match mesh_api::annotations::service_mesh_options(service.annotations(), compat_cilium) {
            Ok(o) => o,
            Err(e) => {
                return (
                    None,
                    Some(Warning::on(
                        service,
                        format!("{e}; the Service is treated as not global"),
                    )),
                );
            }
        };
    if !options.global {
        return (None, None);
    }
    let spec = service.spec.clone().unwrap_or_default();
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Ok(port) =
            mesh_api::records::port(format!("{object} port {:?}", p.name), i64::from(p.port))
        else {
            return (
                None,
                Some(Warning::on(
                    service,
                    format!("port {} is not 1-65535; the Service is skipped", p.port),
                )),
            );
        };
        let target_port = match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                u16::try_from(*n).unwrap_or(0)
            }
            Some(_) => 0,
            None => port,
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol: p
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .parse()
                .unwrap_or(Protocol::Tcp),
            target_port,
        });
    }
    let mut backends: BTreeMap<IpAddr, Backend> = BTreeMap::new();
    for slice in slices {
        let slice_ports: Vec<NamedPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port?).ok().filter(|p| *p != 0)?,
                    protocol: p.protocol.as_deref().unwrap_or("TCP").parse().ok()?,
                })
            })
            .collect();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                backends.entry(ip).or_insert_with(|| Backend {
                    ip,
                    ports: slice_ports.clone(),
                    ready,
                    node: ep.node_name.clone().and_then(|n| NodeName::new(n).ok()),
                    zone: ep.zone.clone(),
                });
            }
        }
    }
    (
        Some(ServiceRecord {
            cluster: cluster.clone(),
            namespace,
            name,
            cluster_ips,
            ports,
            backends: backends.into_values().collect(),
            options,
        }),
        None,
    )
}

/// The EndpointSlices of a Service (label `kubernetes.io/service-name`).
pub fn slices_of<'a>(
    service: &Service,
    slices: &'a [Arc<EndpointSlice>],
) -> Vec<&'a EndpointSlice> {
    let ns = service.namespace();
    let name = service.name_any();
    slices
        .iter()
        .filter(|s| {
            s.namespace() == ns && s.labels().get("kubernetes.io/service-name") == Some(&name)
        })
        .map(AsRef::as_ref)
        .collect()
}

/// Allocates identities per (cluster, label set), atomically in the store,
/// and frees unused ones after a grace period.
#[derive(Debug)]
pub struct IdentityAllocator {
    writer: Writer,
    cluster_id: mesh_api::ClusterId,
    grace: Duration,
    unused_since: HashMap<u32, Instant>,
    /// Label-set index key → identity, as read or allocated by this
    /// allocator while it leads: every reconcile asks for every pod's
    /// identity, and a store round trip per pod made each change cost
    /// O(pods). Entries go when this allocator frees them, all of them when
    /// leadership is lost (another leader may free meanwhile).
    known: std::sync::Mutex<HashMap<String, Identity>>,
}

fn index_key(cluster: &str, labels: &LabelSet) -> String {
    let canon: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "meshwork/internal/{cluster}/identity-labels/{}",
        canon.join(";")
    )
}

impl IdentityAllocator {
    /// An allocator for the writer's cluster.
    pub fn new(writer: Writer, cluster_id: mesh_api::ClusterId, grace: Duration) -> Self {
        IdentityAllocator {
            writer,
            cluster_id,
            grace,
            unused_since: HashMap::new(),
            known: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Identity>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every identity known without asking the store (call when
    /// leadership was lost and regained).
    pub fn forget(&self) {
        self.known().clear();
    }

    /// The identity of `labels`, allocating it if needed. Safe against
    /// concurrent allocators on the same store (compare-and-swap).
    pub async fn allocate(&self, labels: &LabelSet) -> Result<Identity> {
        if !self.writer.leadership().is_leader() {
            return Err(Error::NotLeader);
        }
        let store: &dyn Store = self.writer.store().as_ref();
        let cluster = self.writer.cluster().as_str();
        let index = index_key(cluster, labels);
        if let Some(id) = self.known().get(&index) {
            return Ok(*id);
        }
        for _ in 0..32 {
            if let Some(kv) = store.get(&index).await? {
                let id = String::from_utf8_lossy(&kv.value)
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| Identity::from_u32(n).ok());
                if let Some(id) = id {
                    self.known().insert(index, id);
                    return Ok(id);
                }
            }
            let used: BTreeSet<u16> = self
                .writer
                .list(Kind::Identity)
                .await?
                .into_iter()
                .filter_map(|(_, r)| match r {
                    Record::Identity(i) => Some(i.id.local()),
                    _ => None,
                })
                .collect();
            let Some(local) = (256..=u16::MAX).find(|n| !used.contains(n)) else {
                return Err(Error::IdentitiesExhausted {
                    cluster: cluster.to_string(),
                });
            };
            let id =
                Identity::new(self.cluster_id, local).map_err(|e| Error::domain("identity", e))?;
            let record = Record::Identity(IdentityRecord {
                cluster: self.writer.cluster().clone(),
                id,
                labels: labels.clone(),
            });
            let id_key = record_key(cluster, Kind::Identity, &id.get().to_string());
            let won = self
                .writer
                .txn(
                    vec![
                        Condition::Absent(index.clone()),
                        Condition::Absent(id_key.clone()),
                    ],
                    vec![
                        Op::put(&index, id.get().to_string().into_bytes()),
                        Op::put(&id_key, crate::state::encode(&record)),
                    ],
                )
                .await?;
            if won.is_some() {
                tracing::info!(identity = id.get(), ?labels, "identity allocated");
                self.known().insert(index, id);
                return Ok(id);
            }
        }
        Err(Error::IdentitiesExhausted {
            cluster: cluster.to_string(),
        })
    }

    /// Frees identities not in `in_use` for longer than the grace period;
    /// returns the ones freed.
    pub async fn collect_garbage(&mut self, in_use: &BTreeSet<u32>) -> Result<Vec<u32>> {
        if !self.writer.leadership().is_leader() {
            return Err(Error::NotLeader);
        }
        let store = self.writer.store().clone();
        let cluster = self.writer.cluster().to_string();
        let mut freed = Vec::new();
        let now = Instant::now();
        let records = self.writer.list(Kind::Identity).await?;
        self.unused_since.retain(|id, _| !in_use.contains(id));
        for (_, r) in records {
            let Record::Identity(i) = r else { continue };
            let n = i.id.get();
            if in_use.contains(&n) {
                continue;
            }
            let since = *self.unused_since.entry(n).or_insert(now);
            if now.duration_since(since) < self.grace {
                continue;
            }
            let id_key = record_key(&cluster, Kind::Identity, &n.to_string());
            let index = index_key(&cluster, &i.labels);
            self.known().remove(&index);
            let Some(kv) = store.get(&id_key).await? else {
                continue;
            };
            let done = self
                .writer
                .txn(
                    vec![Condition::ModRevision(id_key.clone(), kv.mod_revision)],
                    vec![Op::Delete(id_key), Op::Delete(index)],
                )
                .await?;
            if done.is_some() {
                tracing::info!(identity = n, "unused identity freed after the grace period");
                self.unused_since.remove(&n);
                freed.push(n);
            }
        }
        Ok(freed)
    }
}

/// Everything the feed wants stored, from the current objects.
#[derive(Debug, Default)]
pub struct Desired {
    /// Records by kind and key.
    pub records: BTreeMap<(Kind, String), Record>,
    /// Identities in use.
    pub identities: BTreeSet<u32>,
    /// Problems found.
    pub warnings: Vec<Warning>,
    /// Objects this cluster cannot own and does not export (a Node whose
    /// pod CIDRs lie outside the cluster's): each also a Warning Event.
    pub refused: Vec<Warning>,
}

/// Computes the desired records (identities allocated on the way).
pub async fn desired(
    local: &LocalCluster,
    allocator: &IdentityAllocator,
    compat: bool,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Result<Desired> {
    let c = &local.name;
    let mut d = Desired::default();
    for n in nodes {
        match node_record(c, n) {
            Ok((r, w)) => {
                d.warnings.extend(w);
                if let Err(refusal) =
                    mesh_api::trust::check_own_node_cidrs(c, &local.pod_cidrs, &r.pod_cidrs)
                {
                    d.refused.push(Warning::on(n.as_ref(), refusal.detail));
                    continue;
                }
                d.records.insert((Kind::Node, r.key()), Record::Node(r));
            }
            Err(w) => d.warnings.push(w),
        }
    }
    for p in pods {
        let labels = match pod_labels(c, p) {
            Ok(l) => l,
            Err(w) => {
                d.warnings.push(w);
                continue;
            }
        };
        let placeholder = Identity::from_u32(u32::from(local.id.get()) << 16 | 256)
            .map_err(|e| Error::domain("identity", e))?;
        if endpoint_record(c, p, placeholder).is_none() {
            continue;
        }
        let id = allocator.allocate(&labels).await?;
        if let Some(e) = endpoint_record(c, p, id) {
            d.identities.insert(id.get());
            d.records
                .insert((Kind::Endpoint, e.key()), Record::Endpoint(e));
        }
    }
    for s in services {
        let (r, w) = service_record(c, s, &slices_of(s, slices), compat);
        d.warnings.extend(w);
        if let Some(r) = r {
            d.records
                .insert((Kind::Service, r.key()), Record::Service(r));
        }
    }
    Ok(d)
}

/// Makes the store hold exactly `desired` for the feed's kinds. One list
/// per kind tells what is stored; only records that differ are written, so
/// a change costs writes in proportion to what changed.
pub async fn apply_desired(writer: &Writer, desired: &Desired) -> Result<()> {
    for kind in [Kind::Node, Kind::Endpoint, Kind::Service] {
        let current: BTreeMap<String, Record> = writer.list(kind).await?.into_iter().collect();
        for key in current.keys() {
            if !desired.records.contains_key(&(kind, key.clone())) {
                writer.delete(kind, key).await?;
            }
        }
        for ((k, key), r) in desired.records.range((kind, String::new())..) {
            if *k != kind {
                break;
            }
            if current.get(key) != Some(r) {
                writer.upsert(r).await?;
            }
        }
    }
    for kind in Kind::ALL {
        writer.mark_synced(kind).await?;
    }
    Ok(())
}

/// The kube-rs watchers feeding the store (leader only).
#[derive(Debug)]
pub struct KubeFeed {
    writer: Writer,
    local: LocalCluster,
    compat: bool,
    grace: Duration,
    refused: Arc<std::sync::Mutex<Vec<RefusedObject>>>,
}

impl KubeFeed {
    /// A feed writing through `writer`; the objects it refuses to export
    /// are kept in `refused` (the status document's `refused_exports`).
    pub fn new(
        writer: Writer,
        local: LocalCluster,
        compat: bool,
        grace: Duration,
        refused: Arc<std::sync::Mutex<Vec<RefusedObject>>>,
    ) -> Self {
        KubeFeed {
            writer,
            local,
            compat,
            grace,
            refused,
        }
    }

    /// Watches Nodes, Pods, Services and EndpointSlices and reconciles the
    /// store after every change (debounced).
    pub async fn run(self) -> Result<()> {
        let client = Client::try_default().await.map_err(|e| Error::Kube {
            what: "client from the environment".into(),
            source: Box::new(e),
        })?;
        let notify = Arc::new(Notify::new());
        let nodes = reflect::<Node>(Api::all(client.clone()), notify.clone());
        let pods = reflect::<Pod>(Api::all(client.clone()), notify.clone());
        let services = reflect::<Service>(Api::all(client.clone()), notify.clone());
        let slices = reflect::<EndpointSlice>(Api::all(client.clone()), notify.clone());
        let recorder = kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "mesh-apiserver".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        // Problems already reported (object, message): each is logged and
        // sent as an Event once, and again only after it went away.
        let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
        let _ = nodes.0.wait_until_ready().await;
        let _ = pods.0.wait_until_ready().await;
        let _ = services.0.wait_until_ready().await;
        let _ = slices.0.wait_until_ready().await;
        let mut allocator = IdentityAllocator::new(self.writer.clone(), self.local.id, self.grace);
        let mut leadership = self.writer.leadership().clone();
        loop {
            // Only the leader allocates and writes.
            if !leadership.is_leader() {
                allocator.forget();
            }
            leadership.wait_leader().await;
            if self.writer.store().revision().await.is_ok() {
                match desired(
                    &self.local,
                    &allocator,
                    self.compat,
                    &nodes.0.state(),
                    &pods.0.state(),
                    &services.0.state(),
                    &slices.0.state(),
                )
                .await
                {
                    Ok(d) => {
                        let now: BTreeSet<(String, String)> = d
                            .warnings
                            .iter()
                            .chain(&d.refused)
                            .map(|w| (w.object.clone(), w.message.clone()))
                            .collect();
                        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = d
                            .refused
                            .iter()
                            .map(|w| RefusedObject {
                                object: w.object.clone(),
                                reason: w.message.clone(),
                            })
                            .collect();
                        for w in d.warnings.iter().chain(&d.refused) {
                            if reported.contains(&(w.object.clone(), w.message.clone())) {
                                continue;
                            }
                            tracing::warn!(object = %w.object, "{}", w.message);
                            report_event(&recorder, w).await;
                        }
                        reported = now;
                        match apply_desired(&self.writer, &d).await {
                            Ok(()) => {
                                if let Err(e) = allocator.collect_garbage(&d.identities).await {
                                    tracing::warn!(error = %e, "identity garbage collection");
                                }
                            }
                            Err(Error::NotLeader) => {}
                            Err(e) => tracing::warn!(error = %e, "writing the Kubernetes state"),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "computing the Kubernetes state"),
                }
            }
            tokio::select! {
                () = notify.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                () = tokio::time::sleep(self.grace.min(Duration::from_secs(30))) => {}
            }
        }
    }
}

/// Sends `w` as a Warning Event on its object (`kubectl describe` shows it).
/// A failure is logged: the Event is a courtesy, the log line has been
/// written already.
async fn report_event(recorder: &kube::runtime::events::Recorder, w: &Warning) {
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "MeshworkInvalidConfig".into(),
        note: Some(w.message.chars().take(1000).collect()),
        action: "Export".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &w.reference).await {
        tracing::warn!(object = %w.object, error = %e, "cannot record the Event");
    }
}

/// The `meshwork-clustermesh` Secret as a config feed (data key → text).
pub async fn secret_feed(
    namespace: &str,
    name: &str,
) -> Result<watch::Receiver<BTreeMap<String, String>>> {
    let client = Client::try_default().await.map_err(|e| Error::Kube {
        what: "client from the environment".into(),
        source: Box::new(e),
    })?;
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let (tx, rx) = watch::channel(BTreeMap::new());
    let tx = Arc::new(tx);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (reader, writer) = reflector::store::<Secret>();
    let stream = reflector(writer, watcher(api, config).default_backoff());
    let publish = {
        let (reader, tx) = (reader.clone(), tx.clone());
        move || {
            let data: BTreeMap<String, String> = reader
                .state()
                .first()
                .and_then(|s| s.data.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            tx.send_if_modified(|cur| {
                let changed = *cur != data;
                *cur = data;
                changed
            });
        }
    };
    let on_event = publish.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "watching the clustermesh Secret");
                continue;
            }
            on_event();
        }
    });
    // The first value is the Secret as first listed (or its absence),
    // never the empty placeholder: see `ConfigFeed`.
    reader.wait_until_ready().await.map_err(|e| Error::Config {
        key: "clustermesh-secret".into(),
        value: name.to_string(),
        reason: format!("the watch of Secret {namespace}/{name} ended before its first list: {e}"),
    })?;
    publish();
    let mut rx = rx;
    rx.borrow_and_update();
    Ok(rx)
}

#[cfg(test)]
mod tests;
