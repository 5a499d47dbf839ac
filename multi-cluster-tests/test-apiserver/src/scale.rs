//! The `/scale` subresource (`autoscaling/v1 Scale`) of Deployments and
//! ReplicaSets, which `kubectl scale` reads and patches: a view of the
//! parent's `spec.replicas` and status, written back through the store.

use serde_json::{Value, json};

use crate::apps::{replicas, status_count};
use crate::patch;
use crate::registry::ResourceType;
use crate::selector::format_selector;
use crate::status::{ApiError, ApiResult, FieldCause};
use crate::store::Store;

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
                    vec![FieldCause::new(
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
                    patch::strategic_merge(&mut doc, &decode("strategic merge patch")?, true)
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
                            vec![FieldCause::new(
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
