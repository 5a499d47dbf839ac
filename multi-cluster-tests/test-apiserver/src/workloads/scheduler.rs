//! The scheduler: binds every Pod without `spec.nodeName` (and for the
//! default scheduler) to a Node that can take it, spreading pods: the
//! feasible Node with the fewest pods wins, ties by name. A Node can take a
//! pod when it is Ready, not cordoned, carries the labels of the pod's
//! `nodeSelector` and has no NoSchedule/NoExecute taint the pod does not
//! tolerate. A pod no Node can take keeps `PodScheduled=False` with the
//! reasons, as `kubectl describe pod` shows them, and is tried again when
//! Nodes change. In a cluster without any Node (component tests that play
//! every part themselves) it leaves pods alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::pod_active;
use crate::registry::ResourceType;
use crate::store::{Store, StoredEvent};

/// What the scheduler knows of a Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub cordoned: bool,
    /// Its NoSchedule/NoExecute taints: (key, value, effect).
    pub taints: Vec<(String, String, String)>,
    /// Pods bound to it (not finished).
    pub pods: usize,
}

impl NodeInfo {
    /// From a Node object and its pod count.
    pub fn of(node: &Value, pods: usize) -> NodeInfo {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        NodeInfo {
            name: node
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            labels: node
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            ready: node
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
                }),
            cordoned: node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
            taints: node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .map(|ts| {
                    ts.iter()
                        .map(|t| (s(t, "key"), s(t, "value"), s(t, "effect")))
                        .filter(|(_, _, e)| e == "NoSchedule" || e == "NoExecute")
                        .collect()
                })
                .unwrap_or_default(),
            pods,
        }
    }
}

/// Why a node cannot take a pod (the phrases kube-scheduler uses).
fn unfit(pod: &Value, node: &NodeInfo) -> Option<&'static str> {
    if !node.ready {
        return Some("node(s) were not ready");
    }
    if node.cordoned {
        return Some("node(s) were unschedulable");
    }
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && !sel
            .iter()
            .all(|(k, v)| node.labels.get(k).map(String::as_str) == v.as_str())
    {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    let tolerations: Vec<&Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let tolerated = |(key, value, effect): &(String, String, String)| {
        tolerations.iter().any(|t| {
            let tk = t.get("key").and_then(Value::as_str).unwrap_or("");
            let te = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
            (tk.is_empty() && exists || tk == key)
                && (te.is_empty() || te == effect)
                && (exists || t.get("value").and_then(Value::as_str).unwrap_or("") == value)
        })
    };
    if !node.taints.iter().all(tolerated) {
        return Some("node(s) had untolerated taint");
    }
    None
}

/// The node for `pod`: the feasible one with the fewest pods, ties by
/// name; or the scheduler's message why there is none.
pub fn pick(pod: &Value, nodes: &[NodeInfo]) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut best: Option<&NodeInfo> = None;
    for n in nodes {
        match unfit(pod, n) {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                if best.is_none_or(|b| (n.pods, &n.name) < (b.pods, &b.name)) {
                    best = Some(n);
                }
            }
        }
    }
    best.map(|n| n.name.clone()).ok_or_else(|| {
        let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        format!(
            "0/{} nodes are available: {}.",
            nodes.len(),
            parts.join(", ")
        )
    })
}

/// Places `pending` pods one after the other, each counted on its node
/// before the next is placed (so a batch spreads too).
pub fn assign(pending: &[&Value], nodes: &mut [NodeInfo]) -> Vec<Result<String, String>> {
    pending
        .iter()
        .map(|pod| {
            let r = pick(pod, nodes);
            if let Ok(name) = &r
                && let Some(n) = nodes.iter_mut().find(|n| &n.name == name)
            {
                n.pods += 1;
            }
            r
        })
        .collect()
}

fn unbound(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && pod_active(pod)
        && pod
            .pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .is_none_or(|s| s == "default-scheduler")
}

/// The scheduler over the store.
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<Store>,
    pods: ResourceType,
    nodes: ResourceType,
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        let reg = store.registry();
        let get = |p: &str| reg.get("", "v1", p).cloned().expect("built-in type");
        Scheduler {
            pods: get("pods"),
            nodes: get("nodes"),
            store,
        }
    }

    fn bind(&self, pod: &Value, node: Result<String, String>) -> bool {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let now = crate::meta::now_rfc3339();
        let cond = match &node {
            Ok(_) => {
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now})
            }
            Err(why) => {
                json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": why, "lastProbeTime": null, "lastTransitionTime": now})
            }
        };
        let current = crate::apps::pod_condition(pod, "PodScheduled");
        let same = current.is_some_and(|c| {
            c["status"] == cond["status"] && c.get("message") == cond.get("message")
        });
        let mut next = pod.clone();
        if !same {
            let mut conds: Vec<Value> = next
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c["type"] != json!("PodScheduled"));
            conds.push(cond);
            next["status"]["conditions"] = json!(conds);
            // Condition first: the kubelet sees the pod only once it is bound,
            // and must not have its status overwritten by ours.
            match self.store.update(&self.pods, ns, name, next, true) {
                Ok(updated) => next = updated,
                Err(_) => return false,
            }
        }
        let Ok(node) = node else {
            return true;
        };
        next["spec"]["nodeName"] = json!(node);
        match self.store.update(&self.pods, ns, name, next, false) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(namespace = ns, pod = name, error = %e.message, "bind failed");
                false
            }
        }
    }
}

impl super::Reconcile for Scheduler {
    fn reconcile(&mut self, batch: Option<&[Arc<StoredEvent>]>) -> Option<Duration> {
        let relevant = batch.is_none_or(|b| {
            b.iter().any(|ev| {
                ev.group.is_empty()
                    && (ev.plural == "nodes"
                        || (ev.plural == "pods"
                            && ev.kind != crate::store::EventType::Deleted
                            && unbound(&ev.object)))
            })
        });
        if !relevant {
            return None;
        }
        let pods = self.store.all(&self.pods, None);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &pods {
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str)
                && pod_active(p)
            {
                *counts.entry(n).or_default() += 1;
            }
        }
        let mut nodes: Vec<NodeInfo> = self
            .store
            .all(&self.nodes, None)
            .iter()
            .map(|n| {
                let name = n
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                NodeInfo::of(n, counts.get(name).copied().unwrap_or(0))
            })
            .collect();
        if nodes.is_empty() {
            // No Nodes: nothing runs pods here (component tests that write
            // pods themselves); leave them exactly as written.
            return None;
        }
        let mut pending: Vec<&Value> = pods.iter().filter(|p| unbound(p)).collect();
        // Oldest first, as the scheduling queue orders equal priorities.
        pending.sort_by_key(|p| {
            (
                p.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                p.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        });
        let placed = assign(&pending, &mut nodes);
        let mut lost_race = false;
        for (pod, node) in pending.iter().zip(placed) {
            lost_race |= !self.bind(pod, node);
        }
        // A pod changed under us: its event comes, but look again soon anyway.
        lost_race.then_some(Duration::from_millis(200))
    }
}

#[cfg(test)]
mod tests;
