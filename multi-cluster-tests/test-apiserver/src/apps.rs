//! What the workload controllers share about apps/v1 objects: the labels
//! and annotations of a rollout, controller references, replica counts,
//! pod readiness, and a Deployment's surge and unavailability budget.
//!
//! The API's own rules for these objects (defaults, validation, the
//! immutable selector) are the store's, in `store::defaulting` and
//! `store::admission`; the `/scale` subresource is [`crate::scale`].

use serde_json::{Value, json};

use crate::intstr::int_or_percent;

/// Label the Deployment controller puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation with the Deployment's replicas when it last scaled the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with replicas + maxSurge when it last scaled the ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The uid of the controller owner of `obj` (the ownerReference with
/// `controller: true`).
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
}

/// An ownerReference naming `owner` (of kind `kind`) as the controller.
pub fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": owner.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c["status"] == json!("True"))
}

/// A pod's condition of type `ty`.
pub fn pod_condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a Value> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == json!(ty))
}

/// Whether a pod counts for its ReplicaSet: not being deleted, not finished.
pub fn pod_active(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && phase != "Succeeded"
        && phase != "Failed"
}

/// `spec.replicas`, defaulted to 1.
pub fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// An integer field of `status` (0 when absent).
pub fn status_count(obj: &Value, field: &str) -> i64 {
    obj.get("status")
        .and_then(|s| s.get(field))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// maxSurge and maxUnavailable of a Deployment, resolved against its
/// replicas (both 0 would stall a rollout: maxUnavailable then counts 1).
pub fn surge_and_unavailable(d: &Value) -> (i64, i64) {
    let want = replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let get = |k: &str, round_up: bool| {
        let v = ru.and_then(|r| r.get(k)).cloned().unwrap_or(json!("25%"));
        int_or_percent(&v, want, round_up).unwrap_or(0)
    };
    let surge = get("maxSurge", true);
    let unavailable = get("maxUnavailable", false).min(want);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

#[cfg(test)]
mod tests;
