//! `meta.k8s.io/v1 Table` responses for `kubectl get`: the columns kubectl
//! users expect for the core types, NAME and AGE for everything else.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn col(name: &str, ty: &str, format: &str, priority: u8) -> Value {
    json!({ "name": name, "type": ty, "format": format, "description": "", "priority": priority })
}

/// Kubernetes' short human durations ("5s", "3m2s", "4h", "12d").
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rem = s % 60;
        if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let rem = m % 60;
        if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let rem = h % 24;
        if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    since(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    )
}

/// How long ago `ts` (RFC 3339, with or without fractions) was.
fn since(ts: Option<&str>) -> String {
    let Some(ts) = ts.filter(|t| !t.is_empty()) else {
        return "<unknown>".into();
    };
    match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_age((time::OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<invalid>".into(),
    }
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.to_string()
    }
}

fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col("Name", "string", "name", 0);
    let age = col("Age", "string", "", 0);
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => vec![
            name,
            col("Ready", "string", "", 0),
            col("Status", "string", "", 0),
            col("Restarts", "string", "", 0),
            age,
            col("IP", "string", "", 1),
            col("Node", "string", "", 1),
        ],
        ("", "services") => vec![
            name,
            col("Type", "string", "", 0),
            col("Cluster-IP", "string", "", 0),
            col("External-IP", "string", "", 0),
            col("Port(s)", "string", "", 0),
            age,
            col("Selector", "string", "", 1),
        ],
        ("", "nodes") => vec![
            name,
            col("Status", "string", "", 0),
            col("Roles", "string", "", 0),
            age,
            col("Version", "string", "", 0),
            col("Internal-IP", "string", "", 1),
        ],
        ("", "namespaces") => vec![name, col("Status", "string", "", 0), age],
        ("discovery.k8s.io", "endpointslices") => vec![
            name,
            col("AddressType", "string", "", 0),
            col("Ports", "string", "", 0),
            col("Endpoints", "string", "", 0),
            age,
        ],
        ("", "events") | ("events.k8s.io", "events") => event_columns(),
        ("apps", "deployments") => vec![
            name,
            col("Ready", "string", "", 0),
            col("Up-to-date", "string", "", 0),
            col("Available", "string", "", 0),
            age,
            col("Containers", "string", "", 1),
            col("Images", "string", "", 1),
            col("Selector", "string", "", 1),
        ],
        ("apps", "replicasets") => vec![
            name,
            col("Desired", "string", "", 0),
            col("Current", "string", "", 0),
            col("Ready", "string", "", 0),
            age,
            col("Containers", "string", "", 1),
            col("Images", "string", "", 1),
            col("Selector", "string", "", 1),
        ],
        _ => vec![name, age],
    }
}

/// CONTAINERS, IMAGES and SELECTOR of a workload (`kubectl get -o wide`).
fn workload_wide(obj: &Value) -> [Value; 3] {
    let containers: Vec<&Value> = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    let selector =
        crate::selector::format_selector(obj.pointer("/spec/selector").unwrap_or(&Value::Null));
    [
        json!(names.join(",")),
        json!(images.join(",")),
        json!(or_none(&selector)),
    ]
}

fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let terminating = obj.pointer("/metadata/deletionTimestamp").is_some();
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |c| {
                c.iter().filter(|c| c["ready"] == json!(true)).count()
            });
            let restarts: u64 = statuses.map_or(0, |c| {
                c.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
            });
            let status = if terminating {
                "Terminating"
            } else {
                s(obj, "/status/phase")
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(or_none(status)),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(or_none(s(obj, "/status/podIP"))),
                json!(or_none(s(obj, "/spec/nodeName"))),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_u64() {
                                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                None => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let selector: Vec<String> = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            // As kube-apiserver prints it: spec.externalIPs, and for a
            // LoadBalancer its ingress addresses first, `<pending>` while
            // it has none.
            let strings = |path: &str, field: Option<&str>| -> Vec<String> {
                obj.pointer(path)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| match field {
                        Some(f) => v[f].as_str().map(String::from),
                        None => v.as_str().map(String::from),
                    })
                    .collect()
            };
            let mut external = Vec::new();
            if s(obj, "/spec/type") == "LoadBalancer" {
                external.extend(strings("/status/loadBalancer/ingress", Some("ip")));
                external.extend(strings("/status/loadBalancer/ingress", Some("hostname")));
            }
            external.extend(strings("/spec/externalIPs", None));
            let external = match (external.is_empty(), s(obj, "/spec/type")) {
                (true, "LoadBalancer") => "<pending>".to_string(),
                (true, _) => "<none>".to_string(),
                (false, _) => external.join(","),
            };
            vec![
                name,
                json!(s(obj, "/spec/type")),
                json!(or_none(s(obj, "/spec/clusterIP"))),
                json!(external),
                json!(or_none(&ports.join(","))),
                json!(age(obj)),
                json!(or_none(&selector.join(","))),
            ]
        }
        ("", "nodes") => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == json!("Ready")))
                .map(|c| c["status"] == json!("True"));
            let status = match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            };
            let ip = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|a| a["type"] == json!("InternalIP")))
                .and_then(|a| a["address"].as_str())
                .unwrap_or("");
            vec![
                name,
                json!(status),
                json!("<none>"),
                json!(age(obj)),
                json!(or_none(s(obj, "/status/nodeInfo/kubeletVersion"))),
                json!(or_none(ip)),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        ("discovery.k8s.io", "endpointslices") => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["port"].as_u64())
                        .map(|p| p.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let addrs: Vec<&str> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|es| {
                    es.iter()
                        .filter_map(|e| e.pointer("/addresses/0")?.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(or_none(&shown)),
                json!(age(obj)),
            ]
        }
        ("", "events") => event_cells(obj),
        ("events.k8s.io", "events") => event_cells(&crate::store::events::events_v1_to_core(obj)),
        ("apps", "deployments") => {
            let n = |f: &str| crate::apps::status_count(obj, f);
            let [c, i, sel] = workload_wide(obj);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n("readyReplicas"),
                    crate::apps::replicas(obj)
                )),
                json!(n("updatedReplicas")),
                json!(n("availableReplicas")),
                json!(age(obj)),
                c,
                i,
                sel,
            ]
        }
        ("apps", "replicasets") => {
            let n = |f: &str| crate::apps::status_count(obj, f);
            let [c, i, sel] = workload_wide(obj);
            vec![
                name,
                json!(crate::apps::replicas(obj)),
                json!(n("replicas")),
                json!(n("readyReplicas")),
                json!(age(obj)),
                c,
                i,
                sel,
            ]
        }
        _ => vec![name, json!(age(obj))],
    }
}

/// kube-apiserver's Event columns (one printer for both Event APIs).
fn event_columns() -> Vec<Value> {
    vec![
        col("Last Seen", "string", "", 0),
        col("Type", "string", "", 0),
        col("Reason", "string", "", 0),
        col("Object", "string", "", 0),
        col("Subobject", "string", "", 1),
        col("Source", "string", "", 1),
        col("Message", "string", "", 0),
        col("First Seen", "string", "", 1),
        col("Count", "string", "", 1),
        col("Name", "string", "name", 1),
    ]
}

/// The cells of a core/v1 Event: times fall back from the legacy
/// timestamps to `eventTime` and the series, as kube-apiserver prints.
fn event_cells(ev: &Value) -> Vec<Value> {
    let ts = |p: &str| {
        ev.pointer(p)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let first = match ts("/firstTimestamp") {
        Some(t) => since(Some(t)),
        None => since(ts("/eventTime")),
    };
    let mut last = match ts("/lastTimestamp") {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = ev["count"].as_i64().unwrap_or(0);
    if ev.get("series").is_some_and(Value::is_object) {
        last = since(ts("/series/lastObservedTime"));
        count = ev
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
    } else if count == 0 {
        // Singleton events carry no count in the new API.
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let target = match s(ev, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let either = |a: &str, b: &str| {
        let a = s(ev, a);
        if a.is_empty() {
            s(ev, b).to_string()
        } else {
            a.to_string()
        }
    };
    let component = either("/source/component", "/reportingComponent");
    let instance = either("/source/host", "/reportingInstance");
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(ev, "/type")),
        json!(s(ev, "/reason")),
        json!(target),
        json!(s(ev, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(ev, "/message").trim()),
        json!(first),
        json!(count),
        json!(s(ev, "/metadata/name")),
    ]
}

fn row(rt: &ResourceType, obj: &Value, include: IncludeObject) -> Value {
    let mut r = json!({ "cells": cells(rt, obj) });
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => r["object"] = obj.clone(),
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    r
}

/// A Table of the objects in `objects` (list or single object);
/// `with_columns` false leaves the column definitions out (later watch events).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": if with_columns { columns(rt) } else { Vec::new() },
        "rows": objects.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    })
}

/// Table of a list response (keeps its continue token).
pub fn list_table(rt: &ResourceType, list: &Value, include: IncludeObject) -> Value {
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut t = table(
        rt,
        &items,
        s(list, "/metadata/resourceVersion"),
        include,
        true,
    );
    if let Some(c) = list.pointer("/metadata/continue") {
        t["metadata"]["continue"] = c.clone();
    }
    t
}

#[cfg(test)]
mod tests;

/// `meta.k8s.io/v1 PartialObjectMetadata` of an object (metadata-only requests).
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// `PartialObjectMetadataList` of a list response.
pub fn partial_list(list: &Value) -> Value {
    let items: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .map(|i| i.iter().map(partial).collect())
        .unwrap_or_default();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list.get("metadata").cloned().unwrap_or(json!({})),
        "items": items,
    })
}
