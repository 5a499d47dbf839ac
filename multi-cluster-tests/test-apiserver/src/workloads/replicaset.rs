//! The ReplicaSet controller: keeps `spec.replicas` pods of the template
//! running, each controlled by the ReplicaSet (an ownerReference with
//! `controller: true`) and named `<replicaset>-<5 random characters>`;
//! deletes the surplus in the order kube-controller-manager does (pods not
//! yet scheduled, pending or not ready go first); reports how many pods it
//! has, how many are ready and how many available (ready for
//! `minReadySeconds`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{self, pod_active, pod_condition, pod_ready};
use crate::registry::ResourceType;
use crate::store::{Store, StoredEvent};

/// Most pods one pass creates or deletes (kube's burstReplicas).
pub const BURST: usize = 500;

/// What a ReplicaSet needs, given the pods it controls.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// How many pods to create from the template.
    pub create: usize,
    /// Names of the pods to delete.
    pub delete: Vec<String>,
    /// The status to write, when it differs from the current one.
    pub status: Option<Value>,
    /// When a ready pod becomes available (minReadySeconds): look again then.
    pub requeue: Option<Duration>,
}

fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn unix(ts: &str) -> Option<i64> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// When the pod last became ready (unix seconds), if it is ready.
fn ready_since(pod: &Value) -> Option<i64> {
    if !pod_ready(pod) {
        return None;
    }
    Some(
        pod_condition(pod, "Ready")
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .and_then(unix)
            .unwrap_or(i64::MIN),
    )
}

/// Seconds until a pod is available (0: it is), None if not ready.
fn until_available(pod: &Value, min_ready: i64, now: i64) -> Option<i64> {
    let since = ready_since(pod)?;
    if min_ready <= 0 || since == i64::MIN {
        return Some(0);
    }
    Some((since + min_ready - now).max(0))
}

/// The order in which surplus pods are deleted: unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before
/// ready, ready for less time first, more restarts first, newer first.
pub fn deletion_order(pods: &mut [&Value]) {
    let phase_rank = |p: &Value| match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts = |p: &Value| -> i64 {
        p.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
            .unwrap_or(0)
    };
    let created = |p: &Value| {
        p.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(unix)
            .unwrap_or(0)
    };
    pods.sort_by(|a, b| {
        let scheduled = |p: &Value| {
            p.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
        };
        scheduled(a)
            .cmp(&scheduled(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(pod_ready(a).cmp(&pod_ready(b)))
            // Ready more recently first.
            .then(ready_since(b).cmp(&ready_since(a)))
            .then(restarts(b).cmp(&restarts(a)))
            .then(created(b).cmp(&created(a)))
            .then(name(a).cmp(name(b)))
    });
}

/// Decides what ReplicaSet `rs` needs, given the pods it controls, at unix
/// time `now`.
pub fn plan(rs: &Value, pods: &[&Value], now: i64) -> Plan {
    let want = apps::replicas(rs).max(0) as usize;
    let min_ready = rs
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut active: Vec<&Value> = pods.iter().copied().filter(|p| pod_active(p)).collect();
    let deleting = rs.pointer("/metadata/deletionTimestamp").is_some();
    let (mut create, mut delete) = (0, Vec::new());
    if !deleting {
        if active.len() < want {
            create = (want - active.len()).min(BURST);
        } else if active.len() > want {
            deletion_order(&mut active);
            delete = active[..(active.len() - want).min(BURST)]
                .iter()
                .map(|p| name(p).to_string())
                .collect();
        }
    }
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let labelled = crate::selector::LabelSelector::from_map(&template_labels);
    let mut available = 0;
    let mut requeue: Option<i64> = None;
    for p in &active {
        match until_available(p, min_ready, now) {
            Some(0) => available += 1,
            Some(wait) => requeue = Some(requeue.map_or(wait, |r| r.min(wait))),
            None => {}
        }
    }
    let mut status = rs.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let counts = [
        ("replicas", active.len() as i64),
        (
            "fullyLabeledReplicas",
            active.iter().filter(|p| labelled.matches(p)).count() as i64,
        ),
        (
            "readyReplicas",
            active.iter().filter(|p| pod_ready(p)).count() as i64,
        ),
        ("availableReplicas", available),
        (
            "observedGeneration",
            rs.pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
        ),
    ];
    for (k, v) in counts {
        // As the real server's output: zero counts are omitted.
        if v == 0 && k != "replicas" {
            status.as_object_mut().expect("object").remove(k);
        } else {
            status[k] = json!(v);
        }
    }
    let changed = rs.get("status") != Some(&status);
    Plan {
        create,
        delete,
        status: changed.then_some(status),
        requeue: requeue.map(|s| Duration::from_secs(s.max(1) as u64)),
    }
}

/// A pod of ReplicaSet `rs`: its template, controlled by it, named by the
/// server from `<rs>-`.
pub fn new_pod(rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.is_object() {
        meta = json!({});
    }
    meta["generateName"] = json!(format!("{}-", name(rs)));
    meta["ownerReferences"] = json!([apps::controller_ref(rs, "ReplicaSet")]);
    if let Some(ns) = rs.pointer("/metadata/namespace") {
        meta["namespace"] = ns.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// The controller over the store.
#[derive(Debug)]
pub struct ReplicaSetController {
    store: Arc<Store>,
    replicasets: ResourceType,
    pods: ResourceType,
}

impl ReplicaSetController {
    /// A controller over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        let reg = store.registry();
        let get = |g: &str, p: &str| reg.get(g, "v1", p).cloned().expect("built-in type");
        ReplicaSetController {
            replicasets: get("apps", "replicasets"),
            pods: get("", "pods"),
            store,
        }
    }

    /// The ReplicaSets (namespace, name) a batch of changes concerns.
    fn affected(batch: &[Arc<StoredEvent>]) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for ev in batch {
            match (ev.group.as_str(), ev.plural.as_str()) {
                ("apps", "replicasets") => {
                    out.insert((ev.namespace.clone(), name(&ev.object).to_string()));
                }
                ("", "pods") => {
                    for obj in std::iter::once(&ev.object).chain(ev.old.as_ref()) {
                        if let Some(owner) = owner_name(obj, "ReplicaSet") {
                            out.insert((ev.namespace.clone(), owner.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn sync(&self, ns: &str, rs_name: &str) -> Option<Duration> {
        let Ok(rs) = self.store.get(&self.replicasets, ns, rs_name) else {
            return None;
        };
        let uid = rs.pointer("/metadata/uid").and_then(Value::as_str)?;
        let mut pods = Vec::new();
        self.store.scan(&self.pods, ns, |p| {
            if apps::controller_uid(p) == Some(uid) {
                pods.push(p.clone());
            }
        });
        let refs: Vec<&Value> = pods.iter().collect();
        let plan = plan(&rs, &refs, time::OffsetDateTime::now_utc().unix_timestamp());
        let mut retry = plan.requeue;
        for _ in 0..plan.create {
            if let Err(e) = self.store.create(&self.pods, ns, new_pod(&rs)) {
                tracing::warn!(namespace = ns, replicaset = rs_name, error = %e.message, "pod create failed");
                retry = Some(Duration::from_secs(1));
                break;
            }
        }
        for pod in &plan.delete {
            if let Err(e) = self.store.delete(&self.pods, ns, pod, None)
                && e.code != 404
            {
                tracing::warn!(namespace = ns, pod, error = %e.message, "pod delete failed");
            }
        }
        if let Some(status) = plan.status {
            let mut next = rs.clone();
            next["status"] = status;
            match self
                .store
                .update(&self.replicasets, ns, rs_name, next, true)
            {
                Ok(_) => {}
                // Someone wrote it meanwhile: the change's event brings us back.
                Err(e) if e.code == 409 || e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(namespace = ns, replicaset = rs_name, error = %e.message, "replicaset status update failed")
                }
            }
        }
        retry
    }
}

/// The name of `obj`'s controller owner when it is of kind `kind`.
pub(crate) fn owner_name<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("kind").and_then(Value::as_str) == Some(kind)
        })?
        .get("name")?
        .as_str()
}

impl super::Reconcile for ReplicaSetController {
    fn reconcile(&mut self, batch: Option<&[Arc<StoredEvent>]>) -> Option<Duration> {
        let targets: BTreeSet<(String, String)> = match batch {
            Some(b) => Self::affected(b),
            None => self
                .store
                .all(&self.replicasets, None)
                .iter()
                .map(|rs| {
                    (
                        rs.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name(rs).to_string(),
                    )
                })
                .collect(),
        };
        targets.iter().filter_map(|(ns, n)| self.sync(ns, n)).min()
    }
}

#[cfg(test)]
mod tests;
