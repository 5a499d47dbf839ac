//! The `apps/v1` workload API as kube-apiserver serves it: Deployments and
//! ReplicaSets get their defaults (replicas, strategy, revision history, the
//! pod template's defaults) and validation (selector against template labels,
//! containers, strategy), and the `/scale` subresource (`autoscaling/v1
//! Scale`) that `kubectl scale` reads and patches.
//!
//! Also the helpers the workload controllers share: label selectors of
//! `spec.selector`, controller references, pod readiness.

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::selector::{LabelReq, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldCause};
use crate::store::Store;

/// Label the Deployment controller puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation with the Deployment's replicas when it last scaled the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with replicas + maxSurge when it last scaled the ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Whether `rt` is a Deployment or a ReplicaSet.
pub fn is_workload(rt: &ResourceType) -> bool {
    rt.group == "apps" && matches!(rt.plural.as_str(), "deployments" | "replicasets")
}

/// The discovery entry of `<plural>/scale` for the types that have one.
pub fn scale_discovery(rt: &ResourceType) -> Option<Value> {
    is_workload(rt).then(|| {
        json!({
            "name": format!("{}/scale", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        })
    })
}

fn cause(reason: &'static str, field: &str, message: impl Into<String>) -> FieldCause {
    FieldCause {
        reason,
        field: field.to_string(),
        message: message.into(),
    }
}

/// `spec.selector` (matchLabels and matchExpressions) as a [`LabelSelector`].
pub fn label_selector(sel: &Value) -> Result<LabelSelector, String> {
    let mut reqs = Vec::new();
    if let Some(labels) = sel.get("matchLabels") {
        let labels = labels
            .as_object()
            .ok_or("matchLabels must be a map of strings")?;
        for (k, v) in labels {
            let v = v.as_str().ok_or("matchLabels values must be strings")?;
            reqs.push(LabelReq::Eq(k.clone(), v.to_string()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e
            .get("key")
            .and_then(Value::as_str)
            .ok_or("matchExpressions[].key: Required value")?
            .to_string();
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        reqs.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => LabelReq::In(key, values),
            Some("NotIn") => LabelReq::NotIn(key, values),
            Some("Exists") => LabelReq::Exists(key),
            Some("DoesNotExist") => LabelReq::NotExists(key),
            other => {
                return Err(format!(
                    "matchExpressions[].operator: Unsupported value: {other:?}: supported values: \"DoesNotExist\", \"Exists\", \"In\", \"NotIn\""
                ));
            }
        });
    }
    Ok(LabelSelector(reqs))
}

/// `metav1.FormatLabelSelector`: what `Scale.status.selector` and
/// `kubectl describe` show (`app=web,tier in (a,b)`).
pub fn format_selector(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

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

/// Resolves an IntOrString (`3`, `"25%"`) against `total`, rounding a
/// percentage up or down as the Deployment controller does.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("Invalid value: {n}: must be greater than or equal to 0")),
        Value::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    format!("Invalid value: {s:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')")
                })?;
            let scaled = total * pct;
            Ok(if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            })
        }
        other => Err(format!(
            "Invalid value: {other}: must be an integer or a percentage"
        )),
    }
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

fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), v);
    }
}

/// The defaults kube-apiserver fills into a pod template's spec.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for c in spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(c) = c.as_object_mut() else { continue };
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        // As the real defaulting: no tag or `:latest` means Always.
        let tagged = image
            .rsplit_once(':')
            .is_some_and(|(_, tag)| !tag.contains('/') && tag != "latest");
        let policy = if tagged || image.contains('@') {
            "IfNotPresent"
        } else {
            "Always"
        };
        set_default(c, "imagePullPolicy", json!(policy));
        for p in c
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = p.as_object_mut() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Removes null members of objects, recursively.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Defaults and validation of a Deployment or ReplicaSet, on every write.
pub fn normalize(rt: &ResourceType, body: &mut Value) -> ApiResult<()> {
    if !is_workload(rt) {
        return Ok(());
    }
    let deployment = rt.plural == "deployments";
    if !body.get("spec").is_some_and(Value::is_object) {
        body["spec"] = json!({});
    }
    let spec = body["spec"].as_object_mut().expect("spec is an object");
    set_default(spec, "replicas", json!(1));
    if deployment {
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        set_default(spec, "strategy", json!({}));
        if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
            set_default(st, "type", json!("RollingUpdate"));
            if st.get("type") == Some(&json!("RollingUpdate")) {
                set_default(st, "rollingUpdate", json!({}));
                if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    set_default(ru, "maxSurge", json!("25%"));
                    set_default(ru, "maxUnavailable", json!("25%"));
                }
            }
        }
    }
    // Typed clients send unset fields as null (`creationTimestamp: null`
    // in a template): for the server they are absent, and two templates
    // that differ only there are the same template.
    if let Some(t) = spec.get_mut("template") {
        strip_nulls(t);
    }
    if let Some(ps) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default_pod_spec(ps);
    }
    let causes = validate(body, deployment);
    if causes.is_empty() {
        Ok(())
    } else {
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(ApiError::invalid("apps", &rt.kind, name, causes))
    }
}

fn validate(body: &Value, deployment: bool) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let spec = &body["spec"];
    match spec.get("replicas").map(Value::as_i64) {
        Some(Some(n)) if n >= 0 => {}
        Some(_) => causes.push(cause(
            "FieldValueInvalid",
            "spec.replicas",
            format!(
                "Invalid value: {}: must be greater than or equal to 0",
                spec["replicas"]
            ),
        )),
        None => {}
    }
    let selector = match spec.get("selector") {
        None | Some(Value::Null) => {
            causes.push(cause(
                "FieldValueRequired",
                "spec.selector",
                "Required value",
            ));
            None
        }
        Some(s) => match label_selector(s) {
            Ok(sel) if sel.0.is_empty() => {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.selector",
                    format!(
                        "Invalid value: {s}: empty selector is invalid for {}",
                        if deployment {
                            "deployment"
                        } else {
                            "replicaset"
                        }
                    ),
                ));
                None
            }
            Ok(sel) => Some(sel),
            Err(e) => {
                causes.push(cause("FieldValueInvalid", "spec.selector", e));
                None
            }
        },
    };
    let template = &spec["template"];
    if let Some(sel) = selector
        && !sel.matches(template)
    {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                template
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}))
            ),
        ));
    }
    if let Some(l) = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        for mut c in crate::validate::check_labels(l) {
            c.field = format!("spec.template.{}", c.field);
            causes.push(c);
        }
    }
    match template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
    {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                for f in ["name", "image"] {
                    if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                        causes.push(cause(
                            "FieldValueRequired",
                            &format!("spec.template.spec.containers[{i}].{f}"),
                            "Required value",
                        ));
                    }
                }
            }
        }
        _ => causes.push(cause(
            "FieldValueRequired",
            "spec.template.spec.containers",
            "Required value",
        )),
    }
    let restart = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if restart != "Always" {
        causes.push(cause(
            "FieldValueNotSupported",
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: {restart:?}: supported values: \"Always\""),
        ));
    }
    if deployment {
        let st = &spec["strategy"];
        match st.get("type").and_then(Value::as_str) {
            Some("RollingUpdate") => {
                let ru = st.get("rollingUpdate").cloned().unwrap_or(json!({}));
                let mut zero = 0;
                for k in ["maxSurge", "maxUnavailable"] {
                    let v = ru.get(k).cloned().unwrap_or(json!("25%"));
                    match int_or_percent(&v, 100, true) {
                        Ok(n) => {
                            if n == 0 {
                                zero += 1;
                            }
                            if k == "maxUnavailable" && v.is_string() && n > 100 {
                                causes.push(cause(
                                    "FieldValueInvalid",
                                    "spec.strategy.rollingUpdate.maxUnavailable",
                                    format!("Invalid value: {v}: must not be greater than 100%"),
                                ));
                            }
                        }
                        Err(e) => causes.push(cause(
                            "FieldValueInvalid",
                            &format!("spec.strategy.rollingUpdate.{k}"),
                            e,
                        )),
                    }
                }
                if zero == 2 {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
            Some("Recreate") => {
                if st.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                    causes.push(cause(
                        "FieldValueForbidden",
                        "spec.strategy.rollingUpdate",
                        "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            other => causes.push(cause(
                "FieldValueNotSupported",
                "spec.strategy.type",
                format!(
                    "Unsupported value: {}: supported values: \"Recreate\", \"RollingUpdate\"",
                    other.map_or("\"\"".to_string(), |o| format!("{o:?}"))
                ),
            )),
        }
    }
    causes
}

/// What a create keeps of a workload's status: nothing (it is the
/// controller's, written through `/status`).
pub fn on_create(rt: &ResourceType, body: &mut Value) {
    if is_workload(rt) {
        body["status"] = json!({});
    }
}

/// Update rules: `spec.selector` is immutable in apps/v1.
pub fn check_update(rt: &ResourceType, old: &Value, new: &Value) -> ApiResult<()> {
    if !is_workload(rt) || old.pointer("/spec/selector") == new.pointer("/spec/selector") {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Err(ApiError::invalid(
        "apps",
        &rt.kind,
        name,
        vec![cause(
            "FieldValueInvalid",
            "spec.selector",
            format!(
                "Invalid value: {}: field is immutable",
                new.pointer("/spec/selector")
                    .cloned()
                    .unwrap_or(Value::Null)
            ),
        )],
    ))
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut m = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            m[k] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": { "replicas": replicas(obj) },
        "status": {
            "replicas": status_count(obj, "replicas"),
            "selector": format_selector(obj.pointer("/spec/selector").unwrap_or(&Value::Null)),
        },
    })
}

/// Serves `GET|PUT|PATCH <workload>/scale`: reads the Scale, or changes the
/// parent's `spec.replicas` to the Scale's. A write without a
/// resourceVersion is retried when a controller wrote the parent meanwhile,
/// as the real server's update loop does.
pub fn serve_scale(
    store: &Store,
    method: &http::Method,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Value> {
    let mut attempts = 0;
    loop {
        let current = store.get(rt, ns, name)?;
        let Some((wanted, precondition)) =
            scale_request(method, rt, name, &current, content_type, body)?
        else {
            return Ok(scale_of(&current));
        };
        let n = match wanted.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![cause(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {v}: must be greater than or equal to 0"),
                    )],
                )
            })?,
        };
        let mut next = current;
        next["spec"]["replicas"] = json!(n);
        if let Some(rv) = &precondition {
            next["metadata"]["resourceVersion"] = json!(rv);
        }
        match store.update(rt, ns, name, next, false) {
            Ok(updated) => return Ok(scale_of(&updated)),
            Err(e) if e.code == 409 && precondition.is_none() && attempts < 10 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The Scale a write asks for and the resourceVersion it requires (None:
/// any), or None for a read.
fn scale_request(
    method: &http::Method,
    rt: &ResourceType,
    name: &str,
    current: &Value,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Option<(Value, Option<String>)>> {
    let scale = scale_of(current);
    match *method {
        http::Method::GET => Ok(None),
        http::Method::PUT => {
            let s: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))?;
            let rv = s
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| !rv.is_empty())
                .map(str::to_string);
            Ok(Some((s, rv)))
        }
        http::Method::PATCH => {
            let mut doc = scale;
            let ct = content_type.split(';').next().unwrap_or("").trim();
            let decode = |what: &str| {
                serde_json::from_slice::<Value>(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding {what}: {e}")))
            };
            match ct {
                "application/merge-patch+json" => {
                    json_patch::merge(&mut doc, &decode("merge patch")?)
                }
                "application/strategic-merge-patch+json" => {
                    crate::patch::strategic_merge(&mut doc, &decode("strategic merge patch")?, true)
                }
                "application/json-patch+json" => {
                    let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                        ApiError::bad_request(format!("error decoding JSON patch: {e}"))
                    })?;
                    json_patch::patch(&mut doc, &p).map_err(|e| {
                        ApiError::invalid(
                            "autoscaling",
                            "Scale",
                            name,
                            vec![cause(
                                "FieldValueInvalid",
                                "patch",
                                format!("the JSON patch cannot be applied: {e}"),
                            )],
                        )
                    })?;
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            // A patch carrying a resourceVersion is a precondition.
            let rv = doc
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| {
                    Some(*rv)
                        != current
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                })
                .map(str::to_string);
            Ok(Some((doc, rv)))
        }
        _ => Err(ApiError::method_not_allowed(&format!(
            "{method} {}/{name}/scale",
            rt.plural
        ))),
    }
}

#[cfg(test)]
mod tests;
