//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>` and labelled with that hash; the
//! ReplicaSet of the current template is the "new" one, the others "old".
//!
//! Its decisions follow kube-controller-manager's:
//! - scaling (`spec.replicas` changed, no template change): the only active
//!   ReplicaSet takes the new count at once; several active ones share it in
//!   proportion to their size;
//! - RollingUpdate (a template change): the new ReplicaSet grows while the
//!   total stays within `replicas + maxSurge`, old ones shrink only while
//!   `replicas - maxUnavailable` pods stay available, so old pods go only as
//!   new ones become Ready (defaults 25 % / 25 %, rounded up / down);
//! - Recreate: old ReplicaSets go to zero, and the new one grows once their
//!   pods are gone;
//! - history: old ReplicaSets at zero beyond `revisionHistoryLimit` are
//!   deleted once a rollout is complete; revisions count up in the
//!   `deployment.kubernetes.io/revision` annotation;
//! - status: replicas, updatedReplicas, readyReplicas, availableReplicas,
//!   unavailableReplicas, observedGeneration and the Available and
//!   Progressing conditions `kubectl rollout status` reads.
//!
//! One pass takes one step (create, grow, shrink); the ReplicaSet changes it
//! causes bring the next pass. Not done: the progress deadline, paused
//! rollouts beyond scaling, adoption of ReplicaSets by selector.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{
    self, DESIRED_REPLICAS, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION, status_count,
    surge_and_unavailable,
};
use crate::registry::ResourceType;
use crate::store::defaulting::strip_nulls;
use crate::store::{Store, StoredEvent};

/// What a Deployment needs, given the ReplicaSets it controls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// A ReplicaSet to create (the new one).
    pub create: Option<Value>,
    /// ReplicaSets to write back (replicas or annotations changed).
    pub update: Vec<Value>,
    /// Old ReplicaSets to delete (beyond the revision history).
    pub delete: Vec<String>,
    /// The Deployment's revision annotation, when it changes.
    pub revision: Option<String>,
    /// The status to write, when it differs from the current one.
    pub status: Option<Value>,
}

fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn annotation_i64(rs: &Value, key: &str) -> Option<i64> {
    rs.pointer("/metadata/annotations")?
        .get(key)?
        .as_str()?
        .parse()
        .ok()
}

/// JSON with object keys sorted, so equal templates hash equally whatever
/// order their fields were written in.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The pod-template-hash of a template: FNV-1a (32 bit) of the template
/// and the collision count, its decimal digits mapped to the alphabet kube
/// uses for generated names (so it looks like kube's: `7c5ddbdf54`).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut text = String::new();
    canonical(&without_hash(template), &mut text);
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(text.as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// A template without its pod-template-hash label.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    strip_nulls(&mut t);
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            t["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("labels");
        }
    }
    t
}

/// Whether ReplicaSet `rs` runs Deployment `d`'s current template.
pub fn runs_template(rs: &Value, d: &Value) -> bool {
    let (Some(a), Some(b)) = (rs.pointer("/spec/template"), d.pointer("/spec/template")) else {
        return false;
    };
    without_hash(a) == without_hash(b)
}

fn created(obj: &Value) -> (String, String) {
    (
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        name(obj).to_string(),
    )
}

/// The new ReplicaSet Deployment `d` would create (revision `revision`,
/// `replicas` pods).
pub fn new_replicaset(d: &Value, hash: &str, revision: i64, replicas: i64) -> Value {
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let (surge, _) = surge_and_unavailable(d);
    let want = apps::replicas(d);
    let mut spec = json!({
        "replicas": replicas,
        "selector": selector,
        "template": template.clone(),
    });
    if let Some(m) = d.pointer("/spec/minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", name(d)),
            "namespace": d.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "labels": template["metadata"]["labels"].clone(),
            "annotations": {
                REVISION: revision.to_string(),
                DESIRED_REPLICAS: want.to_string(),
                MAX_REPLICAS: (want + surge).to_string(),
            },
            "ownerReferences": [apps::controller_ref(d, "Deployment")],
        },
        "spec": spec,
    })
}

/// `rs` scaled to `replicas`, its annotations recording the Deployment's
/// size; None when nothing would change.
fn scaled(rs: &Value, replicas: i64, d: &Value) -> Option<Value> {
    let (surge, _) = surge_and_unavailable(d);
    let want = apps::replicas(d);
    let unchanged = apps::replicas(rs) == replicas
        && annotation_i64(rs, DESIRED_REPLICAS) == Some(want)
        && annotation_i64(rs, MAX_REPLICAS) == Some(want + surge);
    if unchanged {
        return None;
    }
    let mut next = rs.clone();
    next["spec"]["replicas"] = json!(replicas.max(0));
    if !next["metadata"]["annotations"].is_object() {
        next["metadata"]["annotations"] = json!({});
    }
    next["metadata"]["annotations"][DESIRED_REPLICAS] = json!(want.to_string());
    next["metadata"]["annotations"][MAX_REPLICAS] = json!((want + surge).to_string());
    Some(next)
}

/// How many replicas the new ReplicaSet may have during a rolling update.
fn rolling_new_replicas(d: &Value, new: i64, all: i64) -> i64 {
    let want = apps::replicas(d);
    let (surge, _) = surge_and_unavailable(d);
    let max_total = want + surge;
    if all >= max_total {
        return new;
    }
    new + (max_total - all).min(want - new).max(0)
}

/// The sizes old ReplicaSets shrink to during a rolling update: first their
/// unavailable pods, then available ones while `replicas - maxUnavailable`
/// stay available. `old` is sorted oldest first.
pub fn rolling_scale_down(d: &Value, new: &Value, old: &[&Value]) -> Vec<i64> {
    let mut sizes: Vec<i64> = old.iter().map(|rs| apps::replicas(rs)).collect();
    if sizes.iter().sum::<i64>() == 0 {
        return sizes;
    }
    let want = apps::replicas(d);
    let (_, max_unavailable) = surge_and_unavailable(d);
    let min_available = want - max_unavailable;
    let all: i64 = sizes.iter().sum::<i64>() + apps::replicas(new);
    let new_unavailable = apps::replicas(new) - status_count(new, "availableReplicas");
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return sizes;
    }
    // Unhealthy old pods go first: they serve nothing.
    let mut cleaned = 0;
    for (i, rs) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = sizes[i] - status_count(rs, "availableReplicas");
        if sizes[i] == 0 || unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down - cleaned);
        sizes[i] -= down;
        cleaned += down;
    }
    let available: i64 = old
        .iter()
        .map(|rs| status_count(rs, "availableReplicas"))
        .sum::<i64>()
        + status_count(new, "availableReplicas");
    if available <= min_available {
        return sizes;
    }
    let mut budget = available - min_available;
    for size in sizes.iter_mut() {
        if budget == 0 {
            break;
        }
        let down = (*size).min(budget);
        *size -= down;
        budget -= down;
    }
    sizes
}

/// Proportional scaling of several active ReplicaSets to Deployment `d`'s
/// size (as kube does when a Deployment is scaled mid-rollout). `active`
/// holds (ReplicaSet, is the newest) pairs; returns their new sizes.
pub fn proportional_sizes(d: &Value, active: &[&Value], status_replicas: i64) -> Vec<i64> {
    let want = apps::replicas(d);
    let (surge, _) = surge_and_unavailable(d);
    let current: Vec<i64> = active.iter().map(|rs| apps::replicas(rs)).collect();
    let total: i64 = current.iter().sum();
    let allowed = if want > 0 { want + surge } else { 0 };
    let to_add = allowed - total;
    if to_add == 0 || active.is_empty() {
        return current;
    }
    // Bigger first; ties: newer first when growing, older first when shrinking.
    let mut order: Vec<usize> = (0..active.len()).collect();
    order.sort_by(|&a, &b| {
        current[b].cmp(&current[a]).then_with(|| {
            let (ca, cb) = (created(active[a]), created(active[b]));
            if to_add > 0 { cb.cmp(&ca) } else { ca.cmp(&cb) }
        })
    });
    let mut sizes = current.clone();
    let mut added = 0;
    for &i in &order {
        let rs = active[i];
        if current[i] == 0 || added == to_add {
            continue;
        }
        let fraction = if want == 0 {
            -current[i]
        } else {
            let annotated = annotation_i64(rs, MAX_REPLICAS)
                .filter(|a| *a > 0)
                .unwrap_or(status_replicas.max(1));
            let scaled = (current[i] * allowed) as f64 / annotated as f64;
            scaled.round() as i64 - current[i]
        };
        let allowed_now = to_add - added;
        let proportion = if to_add > 0 {
            fraction.min(allowed_now)
        } else {
            fraction.max(allowed_now)
        };
        sizes[i] += proportion;
        added += proportion;
    }
    // The rounding leftover goes to the biggest.
    let first = order[0];
    sizes[first] = (sizes[first] + to_add - added).max(0);
    sizes
}

fn condition(ty: &str, status: bool, reason: &str, message: String, now: &str) -> Value {
    json!({
        "type": ty,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    })
}

/// Merges condition `c` into `conds`, keeping the times of an unchanged one.
fn set_condition(conds: &mut Vec<Value>, mut c: Value) {
    match conds.iter_mut().find(|x| x["type"] == c["type"]) {
        Some(old) => {
            if old["status"] == c["status"] {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
                if old["reason"] == c["reason"] && old["message"] == c["message"] {
                    c["lastUpdateTime"] = old["lastUpdateTime"].clone();
                }
            }
            *old = c;
        }
        None => conds.push(c),
    }
}

/// The Deployment's status given its ReplicaSets (after this pass's
/// changes to their sizes), the new one named `new`.
fn status(d: &Value, all: &[&Value], new: Option<&Value>, created_new: bool, now: &str) -> Value {
    let want = apps::replicas(d);
    let (_, max_unavailable) = surge_and_unavailable(d);
    let sum = |f: &str| all.iter().map(|rs| status_count(rs, f)).sum::<i64>();
    let spec_total: i64 = all.iter().map(|rs| apps::replicas(rs)).sum();
    let available = sum("availableReplicas");
    let updated = new.map_or(0, |n| status_count(n, "replicas"));
    let replicas = sum("replicas");
    let mut st = d.get("status").cloned().unwrap_or(json!({}));
    if !st.is_object() {
        st = json!({});
    }
    let counts = [
        (
            "observedGeneration",
            d.pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
        ),
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", sum("readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", (spec_total - available).max(0)),
    ];
    for (k, v) in counts {
        if v == 0 {
            st.as_object_mut().expect("object").remove(k);
        } else {
            st[k] = json!(v);
        }
    }
    let mut conds: Vec<Value> = st
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let min_ok = available >= want - max_unavailable;
    set_condition(
        &mut conds,
        if min_ok {
            condition(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            )
        } else {
            condition(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            )
        },
    );
    if let Some(n) = new {
        let complete = updated == want
            && replicas == want
            && available == want
            && status_count(n, "availableReplicas") == want;
        let rs = name(n);
        let progressing = if complete {
            condition(
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs}\" has successfully progressed."),
                now,
            )
        } else if created_new {
            condition(
                "Progressing",
                true,
                "NewReplicaSetCreated",
                format!("Created new replica set \"{rs}\""),
                now,
            )
        } else {
            condition(
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs}\" is progressing."),
                now,
            )
        };
        set_condition(&mut conds, progressing);
    }
    // Available first, as kube lists them.
    conds.sort_by_key(|c| c["type"] != json!("Available"));
    st["conditions"] = json!(conds);
    st
}

/// Decides what Deployment `d` needs, given the ReplicaSets it controls, at
/// time `now` (RFC 3339, for condition times).
pub fn plan(d: &Value, owned: &[&Value], now: &str) -> Plan {
    let mut plan = Plan::default();
    let want = apps::replicas(d);
    let collisions = d.pointer("/status/collisionCount").and_then(Value::as_i64);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut sorted: Vec<&Value> = owned.to_vec();
    sorted.sort_by_key(|rs| created(rs));
    let new = sorted.iter().copied().find(|rs| runs_template(rs, d));
    let old: Vec<&Value> = sorted
        .iter()
        .copied()
        .filter(|rs| Some(name(rs)) != new.map(name))
        .collect();
    let max_old_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let deleting = d.pointer("/metadata/deletionTimestamp").is_some();
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");

    let mut created_new = false;
    let mut writes: Vec<Value> = Vec::new();
    if !deleting {
        match new {
            None if paused => {}
            None => {
                let hash = template_hash(&template, collisions);
                let all: i64 = old.iter().map(|rs| apps::replicas(rs)).sum();
                let old_pods = old
                    .iter()
                    .any(|rs| status_count(rs, "replicas") > 0 || apps::replicas(rs) > 0);
                let replicas = match (recreate, old_pods) {
                    (true, true) => 0,
                    (true, false) => want,
                    (false, _) => rolling_new_replicas(d, 0, all),
                };
                let rs = new_replicaset(d, &hash, max_old_revision + 1, replicas);
                plan.revision = Some((max_old_revision + 1).to_string());
                plan.create = Some(rs);
                created_new = true;
            }
            Some(n) => {
                // The new ReplicaSet always has the highest revision (a
                // rollback to an old template makes it new again).
                let mut n = n.clone();
                let bumped = revision(&n) <= max_old_revision;
                if bumped {
                    if !n["metadata"]["annotations"].is_object() {
                        n["metadata"]["annotations"] = json!({});
                    }
                    n["metadata"]["annotations"][REVISION] =
                        json!((max_old_revision + 1).to_string());
                }
                let rev = revision(&n).to_string();
                let d_rev = d
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(REVISION))
                    .and_then(Value::as_str);
                if d_rev != Some(rev.as_str()) {
                    plan.revision = Some(rev);
                }
                step(d, &n, &old, paused, recreate, &mut |next| writes.push(next));
                if bumped && !writes.iter().any(|w| name(w) == name(&n)) {
                    writes.push(n.clone());
                }
                if writes.is_empty() && !paused {
                    plan.delete = history_to_delete(d, &n, &old);
                }
            }
        }
    }
    // The ReplicaSets as they are after this pass: the status counts them.
    let mut view: Vec<Value> = sorted.iter().map(|rs| (*rs).clone()).collect();
    for w in &writes {
        if let Some(v) = view.iter_mut().find(|v| name(v) == name(w)) {
            *v = w.clone();
        }
    }
    plan.update = writes;
    let view_refs: Vec<&Value> = view.iter().collect();
    let new_view = match (&plan.create, new) {
        (Some(c), _) => Some(c),
        (None, Some(n)) => view.iter().find(|v| name(v) == name(n)),
        (None, None) => None,
    };
    let st = status(d, &view_refs, new_view, created_new, now);
    if d.get("status") != Some(&st) {
        plan.status = Some(st);
    }
    plan
}

/// One step of the rollout with the new ReplicaSet `new` existing.
fn step(
    d: &Value,
    new: &Value,
    old: &[&Value],
    paused: bool,
    recreate: bool,
    put: &mut dyn FnMut(Value),
) {
    let want = apps::replicas(d);
    let active: Vec<&Value> = std::iter::once(new)
        .chain(old.iter().copied())
        .filter(|rs| apps::replicas(rs) > 0)
        .collect();
    let scaling = active
        .iter()
        .any(|rs| annotation_i64(rs, DESIRED_REPLICAS).is_some_and(|a| a != want));
    if scaling || paused {
        match active.len() {
            0 => {
                if let Some(next) = scaled(new, want, d) {
                    put(next);
                }
            }
            1 => {
                if let Some(next) = scaled(active[0], want, d) {
                    put(next);
                }
            }
            _ => {
                let status_replicas = d
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let sizes = proportional_sizes(d, &active, status_replicas);
                for (rs, size) in active.iter().zip(sizes) {
                    if let Some(next) = scaled(rs, size, d) {
                        put(next);
                    }
                }
            }
        }
        return;
    }
    if recreate {
        let running: Vec<&&Value> = old.iter().filter(|rs| apps::replicas(rs) > 0).collect();
        if !running.is_empty() {
            for rs in running {
                if let Some(next) = scaled(rs, 0, d) {
                    put(next);
                }
            }
            return;
        }
        if old.iter().any(|rs| status_count(rs, "replicas") > 0) {
            return;
        }
        if let Some(next) = scaled(new, want, d) {
            put(next);
        }
        return;
    }
    let new_size = apps::replicas(new);
    let all: i64 = new_size + old.iter().map(|rs| apps::replicas(rs)).sum::<i64>();
    let target = if new_size > want {
        want
    } else {
        rolling_new_replicas(d, new_size, all)
    };
    if target != new_size {
        if let Some(next) = scaled(new, target, d) {
            put(next);
        }
        return;
    }
    let sizes = rolling_scale_down(d, new, old);
    let mut any = false;
    for (rs, size) in old.iter().zip(sizes) {
        if size != apps::replicas(rs)
            && let Some(next) = scaled(rs, size, d)
        {
            put(next);
            any = true;
        }
    }
    if !any && let Some(next) = scaled(new, new_size, d) {
        // Only the annotations are stale (e.g. after a scale mid-rollout).
        put(next);
    }
}

/// Old ReplicaSets beyond `revisionHistoryLimit` to delete (oldest
/// revisions first, only empty ones, only once the rollout is complete).
fn history_to_delete(d: &Value, new: &Value, old: &[&Value]) -> Vec<String> {
    let want = apps::replicas(d);
    let complete = apps::replicas(new) == want
        && status_count(new, "availableReplicas") == want
        && old
            .iter()
            .all(|rs| apps::replicas(rs) == 0 && status_count(rs, "replicas") == 0);
    if !complete {
        return Vec::new();
    }
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let mut cleanable: Vec<&&Value> = old
        .iter()
        .filter(|rs| rs.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    if cleanable.len() <= limit {
        return Vec::new();
    }
    cleanable.sort_by_key(|rs| (revision(rs), created(rs)));
    let excess = cleanable.len() - limit;
    cleanable[..excess]
        .iter()
        .filter(|rs| {
            let observed = rs
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            let generation = rs.pointer("/metadata/generation").and_then(Value::as_i64);
            observed >= generation
        })
        .map(|rs| name(rs).to_string())
        .collect()
}

/// The controller over the store.
#[derive(Debug)]
pub struct DeploymentController {
    store: Arc<Store>,
    deployments: ResourceType,
    replicasets: ResourceType,
}

impl DeploymentController {
    /// A controller over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        let reg = store.registry();
        let get = |p: &str| reg.get("apps", "v1", p).cloned().expect("built-in type");
        DeploymentController {
            deployments: get("deployments"),
            replicasets: get("replicasets"),
            store,
        }
    }

    fn affected(batch: &[Arc<StoredEvent>]) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for ev in batch.iter().filter(|e| e.group == "apps") {
            match ev.plural.as_str() {
                "deployments" => {
                    out.insert((ev.namespace.clone(), name(&ev.object).to_string()));
                }
                "replicasets" => {
                    for obj in std::iter::once(&ev.object).chain(ev.old.as_ref()) {
                        if let Some(owner) = super::replicaset::owner_name(obj, "Deployment") {
                            out.insert((ev.namespace.clone(), owner.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn sync(&self, ns: &str, d_name: &str) -> Option<Duration> {
        let d = self.store.get(&self.deployments, ns, d_name).ok()?;
        let uid = d.pointer("/metadata/uid").and_then(Value::as_str)?;
        let mut owned = Vec::new();
        self.store.scan(&self.replicasets, ns, |rs| {
            if apps::controller_uid(rs) == Some(uid) {
                owned.push(rs.clone());
            }
        });
        let refs: Vec<&Value> = owned.iter().collect();
        let plan = plan(&d, &refs, &crate::meta::now_rfc3339());
        let retry = Some(Duration::from_millis(200));
        let mut again = None;
        let mut collided = false;
        if let Some(rs) = plan.create {
            match self.store.create(&self.replicasets, ns, rs) {
                Ok(_) => {}
                Err(e) if e.code == 409 => collided = true,
                Err(e) => {
                    tracing::warn!(namespace = ns, deployment = d_name, error = %e.message, "replicaset create failed");
                    again = retry;
                }
            }
        }
        for rs in plan.update {
            match self
                .store
                .update(&self.replicasets, ns, name(&rs), rs.clone(), false)
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => again = retry,
                Err(e) => {
                    tracing::warn!(namespace = ns, replicaset = name(&rs), error = %e.message, "replicaset update failed");
                }
            }
        }
        for rs in plan.delete {
            if let Err(e) = self.store.delete(&self.replicasets, ns, &rs, None)
                && e.code != 404
            {
                tracing::warn!(namespace = ns, replicaset = rs, error = %e.message, "replicaset delete failed");
            }
        }
        if plan.revision.is_some() || plan.status.is_some() || collided {
            let Ok(mut cur) = self.store.get(&self.deployments, ns, d_name) else {
                return again;
            };
            if let Some(rev) = &plan.revision
                && !collided
            {
                if !cur["metadata"]["annotations"].is_object() {
                    cur["metadata"]["annotations"] = json!({});
                }
                cur["metadata"]["annotations"][REVISION] = json!(rev);
                match self
                    .store
                    .update(&self.deployments, ns, d_name, cur.clone(), false)
                {
                    Ok(updated) => cur = updated,
                    Err(_) => return retry,
                }
            }
            if let Some(st) = plan
                .status
                .or_else(|| collided.then(|| cur["status"].clone()))
            {
                cur["status"] = st;
                if collided {
                    // The name `<deployment>-<hash>` is taken by another
                    // template: hash again with the next collision count.
                    let n = d
                        .pointer("/status/collisionCount")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    cur["status"]["collisionCount"] = json!(n + 1);
                }
                if let Err(e) = self.store.update(&self.deployments, ns, d_name, cur, true)
                    && e.code == 409
                {
                    again = retry;
                }
            }
        }
        again
    }
}

impl super::Reconcile for DeploymentController {
    fn reconcile(&mut self, batch: Option<&[Arc<StoredEvent>]>) -> Option<Duration> {
        let targets: BTreeSet<(String, String)> = match batch {
            Some(b) => Self::affected(b),
            None => self
                .store
                .all(&self.deployments, None)
                .iter()
                .map(|d| {
                    (
                        d.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name(d).to_string(),
                    )
                })
                .collect(),
        };
        targets.iter().filter_map(|(ns, n)| self.sync(ns, n)).min()
    }
}

#[cfg(test)]
mod tests;
