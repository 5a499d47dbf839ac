//! Defaults the store fills into written objects, as kube-apiserver's
//! defaulting does: `apiVersion`/`kind` from the URL, the initial status of
//! a new object, a Secret's `stringData`, a namespace's name label, and the
//! apps/v1 defaults of Deployments and ReplicaSets (replicas, strategy,
//! revision history, the pod template's defaults). Pure: no store state.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::meta::{meta_mut, meta_str};
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult, FieldCause};

/// Fills a written body's missing `apiVersion` and `kind` from the URL, as
/// kube-apiserver's decoder does (the URL's group, version and kind are its
/// defaults): clients that build bodies from typed models without them,
/// the Python client's among them, are served.
pub fn default_type_from_url(rt: &ResourceType, body: &mut Value) {
    let Some(o) = body.as_object_mut() else {
        return;
    };
    let missing = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if missing(o.get("kind")) {
        o.insert("kind".into(), json!(rt.kind));
    }
    if missing(o.get("apiVersion")) {
        o.insert("apiVersion".into(), json!(rt.api_version()));
    }
}

/// The status a new object starts with: set by the server for namespaces,
/// pods and Services, empty for workloads (it is the controller's, written
/// through `/status`), none for custom resources with a status subresource.
pub fn initial_status(rt: &ResourceType, body: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            body["status"] = json!({ "phase": "Active" });
        }
        ("", "pods") => {
            // As the real server: status is the kubelet's, written through /status.
            body["status"] = json!({ "phase": "Pending", "qosClass": "BestEffort" });
        }
        ("", "services") => {
            body["status"] = json!({ "loadBalancer": {} });
        }
        ("apps", _) if rt.is_workload() => {
            body["status"] = json!({});
        }
        _ if rt.custom && rt.status => {
            // Custom resources with a status subresource start without status.
            if let Some(o) = body.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
}

/// Defaults and conversions the real server applies on every write: a
/// workload's defaults, a Secret's `stringData` merged into `data`
/// (base64, never stored), a namespace's name label.
pub fn normalize(rt: &ResourceType, body: &mut Value) -> ApiResult<()> {
    workload_defaults(rt, body);
    if rt.group.is_empty() && rt.plural == "secrets" {
        let name = meta_str(body, "name").unwrap_or("").to_string();
        let Some(o) = body.as_object_mut() else {
            return Ok(());
        };
        if let Some(sd) = o.remove("stringData") {
            let Some(sd) = sd.as_object() else {
                return Err(ApiError::invalid(
                    "",
                    "Secret",
                    &name,
                    vec![FieldCause {
                        reason: "FieldValueInvalid",
                        field: "stringData".into(),
                        message: "Invalid value: must be a map of strings".into(),
                    }],
                ));
            };
            let data = o.entry("data").or_insert_with(|| json!({}));
            if !data.is_object() {
                *data = json!({});
            }
            for (k, v) in sd {
                let text = v.as_str().ok_or_else(|| {
                    ApiError::invalid(
                        "",
                        "Secret",
                        &name,
                        vec![FieldCause {
                            reason: "FieldValueInvalid",
                            field: format!("stringData[{k}]"),
                            message: "Invalid value: must be a string".into(),
                        }],
                    )
                })?;
                data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
        if o.get("type").is_none_or(Value::is_null) {
            o.insert("type".into(), json!("Opaque"));
        }
    }
    if rt.group.is_empty() && rt.plural == "namespaces" {
        // Every namespace carries its name as a label (selectable by policies).
        let name = meta_str(body, "name").unwrap_or("").to_string();
        let meta = meta_mut(body);
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta.insert("labels".into(), json!({}));
        }
        meta["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    Ok(())
}

/// Defaults of a Deployment or ReplicaSet, on every write.
fn workload_defaults(rt: &ResourceType, body: &mut Value) {
    if !rt.is_workload() {
        return;
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

#[cfg(test)]
mod tests;
