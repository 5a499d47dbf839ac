//! The EndpointSlice controller that runs inside the server, like
//! kube-controller-manager's. (Services get their ClusterIPs and NodePorts
//! from [`crate::allocator`] when they are written.)

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::store::Store;

/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on slices this controller owns.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MAX_ENDPOINTS_PER_SLICE: usize = 100;

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
        })
}

/// The port a Service port targets on one pod (named ports resolved
/// through the pod's container ports); None when the name is not found.
fn resolve_target(svc_port: &Value, pod: &Value) -> Option<u64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(name)) => {
            if let Ok(n) = name.parse::<u64>() {
                return Some(n);
            }
            pod.pointer("/spec/containers")?
                .as_array()?
                .iter()
                .filter_map(|c| c.get("ports")?.as_array())
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort")?.as_u64())
        }
        _ => svc_port.get("port").and_then(Value::as_u64),
    }
}

/// The EndpointSlices a Service should have, given the pods of its namespace.
pub fn desired_slices(svc: &Value, pods: &[Value]) -> Vec<Value> {
    let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    let sel = LabelSelector::from_map(selector);
    let svc_ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut sorted: Vec<&Value> = pods.iter().filter(|p| sel.matches(p)).collect();
    sorted.sort_by_key(|p| {
        p.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    for pod in sorted {
        let Some(ip) = pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
        let ready = pod_ready(pod);
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|sp| {
                let port = resolve_target(sp, pod)?;
                let mut p = json!({ "port": port, "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP")) });
                p["name"] = sp.get("name").cloned().unwrap_or(json!(""));
                if let Some(ap) = sp.get("appProtocol") {
                    p["appProtocol"] = ap.clone();
                }
                Some(p)
            })
            .collect();
        let mut ep = json!({
            "addresses": [ip],
            "conditions": { "ready": ready && !terminating, "serving": ready, "terminating": terminating },
            "targetRef": {
                "kind": "Pod",
                "namespace": pod.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
                "name": pod.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                "uid": pod.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
            },
        });
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            ep["nodeName"] = json!(node);
        }
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = groups.entry(key).or_insert_with(|| (ports, Vec::new()));
        entry.1.push(ep);
    }
    let mut out = Vec::new();
    let svc_name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut labels = svc
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    labels[SERVICE_NAME_LABEL] = json!(svc_name);
    labels[MANAGED_BY_LABEL] = json!(MANAGED_BY);
    let owner = json!([{
        "apiVersion": "v1", "kind": "Service", "name": svc_name,
        "uid": svc.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    let base = |ports: &Vec<Value>, endpoints: Vec<Value>| {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": { "labels": labels.clone(), "ownerReferences": owner.clone() },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    };
    for (ports, eps) in groups.into_values() {
        for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push(base(&ports, chunk.to_vec()));
        }
    }
    if out.is_empty() {
        // A selector Service always has at least one (possibly empty) slice.
        let ports: Vec<Value> = Vec::new();
        out.push(base(&ports, Vec::new()));
    }
    out
}

fn slice_content(s: &Value) -> (Value, Value, Value) {
    (
        s.get("endpoints").cloned().unwrap_or(json!([])),
        s.get("ports").cloned().unwrap_or(json!([])),
        s.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
    )
}

/// Selectors of the selector Services of one namespace, indexed by their
/// first `key=value` pair so a Pod finds its Services through its labels
/// instead of testing every Service.
#[derive(Debug, Default)]
struct SelectorIndex {
    selectors: Vec<(String, LabelSelector)>,
    by_pair: HashMap<(String, String), Vec<usize>>,
}

impl SelectorIndex {
    fn build(services: impl IntoIterator<Item = (String, LabelSelector)>) -> Self {
        let mut idx = SelectorIndex::default();
        for (name, sel) in services {
            let Some(crate::selector::LabelReq::Eq(k, v)) = sel.0.first().cloned() else {
                continue;
            };
            idx.by_pair
                .entry((k, v))
                .or_default()
                .push(idx.selectors.len());
            idx.selectors.push((name, sel));
        }
        idx
    }

    /// Indexes (into `selectors`) of the Services selecting `pod`.
    fn matching(&self, pod: &Value) -> Vec<usize> {
        let Some(labels) = pod.pointer("/metadata/labels").and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in labels {
            let Some(v) = v.as_str() else { continue };
            if let Some(cands) = self.by_pair.get(&(k.clone(), v.to_string())) {
                out.extend(
                    cands
                        .iter()
                        .copied()
                        .filter(|i| self.selectors[*i].1.matches(pod)),
                );
            }
        }
        out
    }
}

fn selector_of(svc: &Value) -> Option<(String, LabelSelector)> {
    let sel = svc.pointer("/spec/selector")?.as_object()?;
    if sel.is_empty() {
        return None;
    }
    let name = svc.pointer("/metadata/name")?.as_str()?.to_string();
    Some((name, LabelSelector::from_map(sel)))
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// The EndpointSlice controller: keeps managed slices of every selector
/// Service equal to [`desired_slices`]; runs until the store is dropped.
#[derive(Debug)]
pub struct EndpointSliceController {
    store: Arc<Store>,
    slices: ResourceType,
    services: ResourceType,
    pods: ResourceType,
    /// Selector of every selector Service, by namespace and name.
    selectors: HashMap<String, BTreeMap<String, LabelSelector>>,
}

impl EndpointSliceController {
    /// A controller over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        let reg = store.registry();
        let get = |g: &str, p: &str| reg.get(g, "v1", p).cloned().expect("built-in type");
        EndpointSliceController {
            slices: get("discovery.k8s.io", "endpointslices"),
            services: get("", "services"),
            pods: get("", "pods"),
            store,
            selectors: HashMap::new(),
        }
    }

    /// Runs the controller: a full pass, then, per batch of changes, a pass
    /// over the Services the changed Pods, Services and slices concern.
    pub async fn run(mut self) {
        let mut rx = self.store.subscribe();
        self.reconcile_all();
        loop {
            let mut batch = Vec::new();
            let mut all = false;
            match rx.recv().await {
                Ok(ev) => batch.push(ev),
                Err(RecvError::Lagged(_)) => all = true,
                Err(RecvError::Closed) => return,
            }
            loop {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => all = true,
                    Err(_) => break,
                }
            }
            if all {
                self.reconcile_all();
                continue;
            }
            for (ns, services) in self.affected(&batch) {
                self.reconcile_namespace(&ns, Some(&services));
            }
        }
    }

    /// The Services (by namespace) whose slices a batch of changes may alter:
    /// changed Services, Services selecting a changed Pod (before or after),
    /// and owners of managed slices someone else changed or deleted.
    fn affected(
        &mut self,
        batch: &[Arc<crate::store::StoredEvent>],
    ) -> BTreeMap<String, HashSet<String>> {
        let mut out: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        // Services first: the index must know them before their pods are looked up.
        for ev in batch
            .iter()
            .filter(|e| e.group.is_empty() && e.plural == "services")
        {
            let Some(name) = ev.object.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let sels = self.selectors.entry(ev.namespace.clone()).or_default();
            match (ev.kind, selector_of(&ev.object)) {
                (crate::store::EventType::Deleted, _) | (_, None) => {
                    sels.remove(name);
                }
                (_, Some((n, sel))) => {
                    sels.insert(n, sel);
                }
            }
            out.entry(ev.namespace.clone())
                .or_default()
                .insert(name.to_string());
        }
        let mut indexes: HashMap<String, SelectorIndex> = HashMap::new();
        for ev in batch {
            if ev.group == "discovery.k8s.io" && ev.plural == "endpointslices" {
                if label(&ev.object, MANAGED_BY_LABEL) == Some(MANAGED_BY)
                    && let Some(svc) = label(&ev.object, SERVICE_NAME_LABEL)
                {
                    out.entry(ev.namespace.clone())
                        .or_default()
                        .insert(svc.to_string());
                }
                continue;
            }
            if !(ev.group.is_empty() && ev.plural == "pods") {
                continue;
            }
            let idx = indexes.entry(ev.namespace.clone()).or_insert_with(|| {
                SelectorIndex::build(
                    self.selectors
                        .get(&ev.namespace)
                        .into_iter()
                        .flatten()
                        .map(|(n, s)| (n.clone(), s.clone())),
                )
            });
            let mut hits = idx.matching(&ev.object);
            if let Some(old) = &ev.old {
                hits.extend(idx.matching(old));
            }
            for i in hits {
                out.entry(ev.namespace.clone())
                    .or_default()
                    .insert(idx.selectors[i].0.clone());
            }
        }
        out
    }

    fn reconcile_all(&mut self) {
        self.selectors.clear();
        let mut namespaces = BTreeSet::new();
        for svc in self.store.all(&self.services, None) {
            let ns = svc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some((name, sel)) = selector_of(&svc) {
                self.selectors
                    .entry(ns.clone())
                    .or_default()
                    .insert(name, sel);
            }
            namespaces.insert(ns);
        }
        for slice in self.store.all(&self.slices, None) {
            if let Some(ns) = slice.pointer("/metadata/namespace").and_then(Value::as_str) {
                namespaces.insert(ns.to_string());
            }
        }
        for ns in namespaces {
            self.reconcile_namespace(&ns, None);
        }
    }

    /// Brings the managed slices of namespace `ns` to the desired state:
    /// of every Service, or of the Services named in `only`. Pods and slices
    /// are read once, and only those of the concerned Services are copied.
    pub fn reconcile_namespace(&self, ns: &str, only: Option<&HashSet<String>>) {
        let wanted = |name: &str| only.is_none_or(|o| o.contains(name));
        let mut services = Vec::new();
        self.store.scan(&self.services, ns, |svc| {
            if svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(wanted)
            {
                services.push(svc.clone());
            }
        });
        let index = SelectorIndex::build(services.iter().filter_map(selector_of));
        let mut pods_of: HashMap<String, Vec<Value>> = HashMap::new();
        self.store.scan(&self.pods, ns, |pod| {
            for i in index.matching(pod) {
                pods_of
                    .entry(index.selectors[i].0.clone())
                    .or_default()
                    .push(pod.clone());
            }
        });
        let mut slices_of: HashMap<String, Vec<Value>> = HashMap::new();
        self.store.scan(&self.slices, ns, |slice| {
            if label(slice, MANAGED_BY_LABEL) == Some(MANAGED_BY)
                && let Some(owner) = label(slice, SERVICE_NAME_LABEL)
                && wanted(owner)
            {
                slices_of
                    .entry(owner.to_string())
                    .or_default()
                    .push(slice.clone());
            }
        });
        let mut keep: HashSet<String> = HashSet::new();
        let no_pods = Vec::new();
        for svc in &services {
            let name = svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if selector_of(svc).is_none() {
                continue;
            }
            let mut have: Vec<&Value> = slices_of
                .get(name)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let want = desired_slices(svc, pods_of.get(name).unwrap_or(&no_pods));
            for desired in want {
                let reuse = have
                    .iter()
                    .position(|h| slice_content(h) == slice_content(&desired))
                    .or(if have.is_empty() { None } else { Some(0) });
                match reuse {
                    Some(i) => {
                        let cur = have.remove(i);
                        let slice_name = cur
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        keep.insert(slice_name.clone());
                        if slice_content(cur) != slice_content(&desired) {
                            let mut next = desired.clone();
                            next["metadata"]["name"] = json!(slice_name);
                            next["metadata"]["resourceVersion"] = cur
                                .pointer("/metadata/resourceVersion")
                                .cloned()
                                .unwrap_or(Value::Null);
                            if let Err(e) =
                                self.store
                                    .update(&self.slices, ns, &slice_name, next, false)
                            {
                                tracing::warn!(namespace = ns, slice = slice_name, error = %e.message, "endpointslice update failed");
                            }
                        }
                    }
                    None => {
                        let mut next = desired.clone();
                        next["metadata"]["generateName"] = json!(format!("{name}-"));
                        match self.store.create(&self.slices, ns, next) {
                            Ok(created) => {
                                if let Some(n) =
                                    created.pointer("/metadata/name").and_then(Value::as_str)
                                {
                                    keep.insert(n.to_string());
                                }
                            }
                            Err(e) => {
                                tracing::warn!(namespace = ns, service = name, error = %e.message, "endpointslice create failed")
                            }
                        }
                    }
                }
            }
        }
        for s in slices_of.values().flatten() {
            let name = s
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !keep.contains(name)
                && let Err(e) = self.store.delete(&self.slices, ns, name, None)
                && e.code != 404
            {
                tracing::warn!(namespace = ns, slice = name, error = %e.message, "endpointslice delete failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
