//! Admission of written objects, as kube-apiserver's decoding and
//! validation refuse them: a body that does not fit its URL, a bad name or
//! labels, the apps/v1 rules of Deployments and ReplicaSets (selector
//! against template labels, containers, strategy) and their immutable
//! selector. Pure: the errors are the API's `400` and `422` answers.

use serde_json::{Value, json};

use crate::intstr::int_or_percent;
use crate::meta::meta_str;
use crate::registry::ResourceType;
use crate::selector::label_selector;
use crate::status::{ApiError, ApiResult, FieldCause};
use crate::validate;

/// `configmaps` or `events.events.k8s.io`, as errors name a resource.
fn qualified_plural(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// Checks a written body against the URL it was sent to: a JSON object of
/// the URL's kind and apiVersion, in the URL's namespace.
pub fn check_body(rt: &ResourceType, ns: &str, body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is not a JSON object (must be of type {})",
            rt.kind
        )));
    }
    let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' or 'apiVersion' is missing in the body (must be apiVersion {} kind {})",
            rt.api_version(),
            rt.kind
        )));
    }
    // kube-apiserver's decoder fails first on a kind it cannot convert
    // to the URL's, then compares the group/version.
    if kind != rt.kind {
        let version = av.rsplit_once('/').map_or(av, |(_, v)| v);
        return Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {}: the body's kind {kind:?} is not the kind of {} (send it to its own resource, or fix its kind)",
            rt.kind,
            qualified_plural(rt)
        )));
    }
    if av != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(body_ns) = meta_str(body, "namespace")
        && rt.namespaced
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Validation of every written object (after defaulting): a workload's
/// apps/v1 rules, then the name and labels every object has.
pub fn validate(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    check_workload(rt, obj)?;
    let name = meta_str(obj, "name").unwrap_or("");
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(FieldCause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else if let Some(c) = validate::check_name(
        name,
        validate::name_rule(&rt.group, &rt.plural),
        "metadata.name",
    ) {
        causes.push(c);
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        match labels.as_object() {
            Some(l) => causes.extend(validate::check_labels(l)),
            None if labels.is_null() => {}
            None => causes.push(FieldCause {
                reason: "FieldValueInvalid",
                field: "metadata.labels".into(),
                message: "Invalid value: must be a map of strings".into(),
            }),
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, name, causes))
    }
}

/// Update rules: `spec.selector` is immutable in apps/v1.
pub fn check_update(rt: &ResourceType, old: &Value, new: &Value) -> ApiResult<()> {
    if !rt.is_workload() || old.pointer("/spec/selector") == new.pointer("/spec/selector") {
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
        vec![FieldCause::new(
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

/// Validation of a Deployment or ReplicaSet, on every write (after
/// [`defaulting::normalize`](super::defaulting::normalize)).
fn check_workload(rt: &ResourceType, body: &Value) -> ApiResult<()> {
    if !rt.is_workload() {
        return Ok(());
    }
    let deployment = rt.plural == "deployments";
    let causes = validate_workload(body, deployment);
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

fn validate_workload(body: &Value, deployment: bool) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let spec = &body["spec"];
    match spec.get("replicas").map(Value::as_i64) {
        Some(Some(n)) if n >= 0 => {}
        Some(_) => causes.push(FieldCause::new(
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
            causes.push(FieldCause::new(
                "FieldValueRequired",
                "spec.selector",
                "Required value",
            ));
            None
        }
        Some(s) => match label_selector(s) {
            Ok(sel) if sel.0.is_empty() => {
                causes.push(FieldCause::new(
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
                causes.push(FieldCause::new("FieldValueInvalid", "spec.selector", e));
                None
            }
        },
    };
    let template = &spec["template"];
    if let Some(sel) = selector
        && !sel.matches(template)
    {
        causes.push(FieldCause::new(
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
        for mut c in validate::check_labels(l) {
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
                        causes.push(FieldCause::new(
                            "FieldValueRequired",
                            &format!("spec.template.spec.containers[{i}].{f}"),
                            "Required value",
                        ));
                    }
                }
            }
        }
        _ => causes.push(FieldCause::new(
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
        causes.push(FieldCause::new(
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
                                causes.push(FieldCause::new(
                                    "FieldValueInvalid",
                                    "spec.strategy.rollingUpdate.maxUnavailable",
                                    format!("Invalid value: {v}: must not be greater than 100%"),
                                ));
                            }
                        }
                        Err(e) => causes.push(FieldCause::new(
                            "FieldValueInvalid",
                            &format!("spec.strategy.rollingUpdate.{k}"),
                            e,
                        )),
                    }
                }
                if zero == 2 {
                    causes.push(FieldCause::new(
                        "FieldValueInvalid",
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
            Some("Recreate") => {
                if st.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                    causes.push(FieldCause::new(
                        "FieldValueForbidden",
                        "spec.strategy.rollingUpdate",
                        "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            other => causes.push(FieldCause::new(
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

#[cfg(test)]
mod tests;
