//! The protobuf body of `kubectl create deployment` (typed clients send
//! protobuf): a Deployment whose pod template has containers with image,
//! command, args, ports, env and resources. Go's encoder writes every
//! non-pointer field even when empty, so an unknown field is skipped when it
//! carries nothing and refuses the whole body (415) when it carries a
//! value, rather than dropping what a client asked for.

use serde_json::{Map, Value, json};

use super::{Wire, fields, map_entry, object_meta, string};

/// Whether a field's value is empty: zero, an empty string, or a message
/// whose fields are all empty (Go's encoding of an unset struct).
fn empty(v: &Wire<'_>) -> bool {
    match v {
        Wire::Varint(n) => *n == 0,
        Wire::Fixed => false,
        Wire::Bytes(b) => {
            b.is_empty() || fields(b).is_some_and(|fs| fs.iter().all(|(_, v)| empty(v)))
        }
    }
}

/// Calls `f` on every field; an unknown field (`f` returns None) with a
/// value refuses the message.
fn each<'a>(b: &'a [u8], mut f: impl FnMut(u64, &Wire<'a>) -> Option<Option<()>>) -> Option<()> {
    for (n, v) in fields(b)? {
        match f(n, &v) {
            Some(Some(())) => {}
            Some(None) => return None,
            None if empty(&v) => {}
            None => return None,
        }
    }
    Some(())
}

fn bytes<'a>(v: &Wire<'a>) -> Option<&'a [u8]> {
    match v {
        Wire::Bytes(b) => Some(b),
        _ => None,
    }
}

fn varint(v: &Wire<'_>) -> Option<u64> {
    match v {
        Wire::Varint(n) => Some(*n),
        _ => None,
    }
}

/// A protobuf int32/int64 (negative numbers are 10-byte varints).
fn int(v: &Wire<'_>) -> Option<Value> {
    varint(v).map(|n| json!(n as i64))
}

fn put_str(m: &mut Map<String, Value>, k: &str, v: &Wire<'_>) -> Option<Option<()>> {
    let s = string(bytes(v)?)?;
    if s != json!("") {
        m.insert(k.into(), s);
    }
    Some(Some(()))
}

fn push_str(list: &mut Vec<Value>, v: &Wire<'_>) -> Option<Option<()>> {
    list.push(string(bytes(v)?)?);
    Some(Some(()))
}

fn int_or_string(b: &[u8]) -> Option<Value> {
    let (mut ty, mut i, mut s) = (0, 0i64, String::new());
    each(b, |n, v| match n {
        1 => {
            ty = varint(v)?;
            Some(Some(()))
        }
        2 => {
            i = varint(v)? as i64;
            Some(Some(()))
        }
        3 => {
            s = std::str::from_utf8(bytes(v)?).ok()?.to_string();
            Some(Some(()))
        }
        _ => None,
    })?;
    Some(if ty == 1 { json!(s) } else { json!(i) })
}

fn label_selector(b: &[u8]) -> Option<Value> {
    let mut labels = Map::new();
    let mut exprs = Vec::new();
    each(b, |n, v| match n {
        1 => {
            let (k, val) = map_entry(bytes(v)?, false)?;
            labels.insert(k, val);
            Some(Some(()))
        }
        2 => {
            let mut e = Map::new();
            let mut values = Vec::new();
            each(bytes(v)?, |n, v| match n {
                1 => put_str(&mut e, "key", v),
                2 => put_str(&mut e, "operator", v),
                3 => push_str(&mut values, v),
                _ => None,
            })?;
            if !values.is_empty() {
                e.insert("values".into(), Value::Array(values));
            }
            exprs.push(Value::Object(e));
            Some(Some(()))
        }
        _ => None,
    })?;
    let mut out = Map::new();
    if !labels.is_empty() {
        out.insert("matchLabels".into(), Value::Object(labels));
    }
    if !exprs.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Some(Value::Object(out))
}

/// `map<string, Quantity>` entries of ResourceRequirements.
fn quantity_entry(b: &[u8]) -> Option<(String, Value)> {
    let (mut k, mut q) = (String::new(), String::new());
    each(b, |n, v| match n {
        1 => {
            k = std::str::from_utf8(bytes(v)?).ok()?.to_string();
            Some(Some(()))
        }
        2 => each(bytes(v)?, |n, v| match n {
            1 => {
                q = std::str::from_utf8(bytes(v)?).ok()?.to_string();
                Some(Some(()))
            }
            _ => None,
        })
        .map(Some),
        _ => None,
    })?;
    Some((k, json!(q)))
}

fn container(b: &[u8]) -> Option<Value> {
    let mut c = Map::new();
    let (mut command, mut args, mut ports, mut env) = (vec![], vec![], vec![], vec![]);
    let mut resources = Map::new();
    each(b, |n, v| match n {
        1 => put_str(&mut c, "name", v),
        2 => put_str(&mut c, "image", v),
        3 => push_str(&mut command, v),
        4 => push_str(&mut args, v),
        5 => put_str(&mut c, "workingDir", v),
        6 => {
            let mut p = Map::new();
            each(bytes(v)?, |n, v| match n {
                1 => put_str(&mut p, "name", v),
                2 | 3 => {
                    let port = varint(v)?;
                    if port != 0 {
                        let k = if n == 2 { "hostPort" } else { "containerPort" };
                        p.insert(k.into(), json!(port));
                    }
                    Some(Some(()))
                }
                4 => put_str(&mut p, "protocol", v),
                5 => put_str(&mut p, "hostIP", v),
                _ => None,
            })?;
            ports.push(Value::Object(p));
            Some(Some(()))
        }
        7 => {
            let mut e = Map::new();
            each(bytes(v)?, |n, v| match n {
                1 => put_str(&mut e, "name", v),
                2 => put_str(&mut e, "value", v),
                _ => None,
            })?;
            env.push(Value::Object(e));
            Some(Some(()))
        }
        8 => {
            let (mut limits, mut requests) = (Map::new(), Map::new());
            each(bytes(v)?, |n, v| match n {
                1 | 2 => {
                    let (k, q) = quantity_entry(bytes(v)?)?;
                    if n == 1 {
                        limits.insert(k, q);
                    } else {
                        requests.insert(k, q);
                    }
                    Some(Some(()))
                }
                _ => None,
            })?;
            if !limits.is_empty() {
                resources.insert("limits".into(), Value::Object(limits));
            }
            if !requests.is_empty() {
                resources.insert("requests".into(), Value::Object(requests));
            }
            Some(Some(()))
        }
        13 => put_str(&mut c, "terminationMessagePath", v),
        14 => put_str(&mut c, "imagePullPolicy", v),
        20 => put_str(&mut c, "terminationMessagePolicy", v),
        _ => None,
    })?;
    for (k, list) in [
        ("command", command),
        ("args", args),
        ("ports", ports),
        ("env", env),
    ] {
        if !list.is_empty() {
            c.insert(k.into(), Value::Array(list));
        }
    }
    c.insert("resources".into(), Value::Object(resources));
    Some(Value::Object(c))
}

fn pod_spec(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    let mut containers = Vec::new();
    let mut node_selector = Map::new();
    each(b, |n, v| match n {
        2 => {
            containers.push(container(bytes(v)?)?);
            Some(Some(()))
        }
        3 => put_str(&mut s, "restartPolicy", v),
        4 => {
            s.insert("terminationGracePeriodSeconds".into(), int(v)?);
            Some(Some(()))
        }
        6 => put_str(&mut s, "dnsPolicy", v),
        7 => {
            let (k, val) = map_entry(bytes(v)?, false)?;
            node_selector.insert(k, val);
            Some(Some(()))
        }
        8 => put_str(&mut s, "serviceAccountName", v),
        10 => put_str(&mut s, "nodeName", v),
        19 => put_str(&mut s, "schedulerName", v),
        _ => None,
    })?;
    s.insert("containers".into(), Value::Array(containers));
    if !node_selector.is_empty() {
        s.insert("nodeSelector".into(), Value::Object(node_selector));
    }
    Some(Value::Object(s))
}

fn pod_template(b: &[u8]) -> Option<Value> {
    let mut t = Map::new();
    each(b, |n, v| match n {
        1 => {
            t.insert("metadata".into(), object_meta(bytes(v)?)?);
            Some(Some(()))
        }
        2 => {
            t.insert("spec".into(), pod_spec(bytes(v)?)?);
            Some(Some(()))
        }
        _ => None,
    })?;
    Some(Value::Object(t))
}

fn strategy(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    each(b, |n, v| match n {
        1 => put_str(&mut s, "type", v),
        2 => {
            let mut ru = Map::new();
            each(bytes(v)?, |n, v| match n {
                1 | 2 => {
                    let k = if n == 1 { "maxUnavailable" } else { "maxSurge" };
                    ru.insert(k.into(), int_or_string(bytes(v)?)?);
                    Some(Some(()))
                }
                _ => None,
            })?;
            s.insert("rollingUpdate".into(), Value::Object(ru));
            Some(Some(()))
        }
        _ => None,
    })?;
    Some(Value::Object(s))
}

fn deployment_spec(b: &[u8]) -> Option<Value> {
    let mut s = Map::new();
    each(b, |n, v| {
        let (k, val) = match n {
            1 => ("replicas", int(v)?),
            2 => ("selector", label_selector(bytes(v)?)?),
            3 => ("template", pod_template(bytes(v)?)?),
            4 => ("strategy", strategy(bytes(v)?)?),
            5 if varint(v)? == 0 => return Some(Some(())),
            5 => ("minReadySeconds", int(v)?),
            6 => ("revisionHistoryLimit", int(v)?),
            7 if varint(v)? == 0 => return Some(Some(())),
            7 => ("paused", json!(true)),
            9 => ("progressDeadlineSeconds", int(v)?),
            _ => return None,
        };
        s.insert(k.into(), val);
        Some(Some(()))
    })?;
    Some(Value::Object(s))
}

/// The `spec` of a protobuf Deployment (field 2 of the object); the status
/// (field 3) is the controller's and ignored, as the server ignores it.
pub(super) fn deployment(obj: &mut Value, field: u64, v: &Wire<'_>) -> Option<()> {
    match field {
        2 => obj["spec"] = deployment_spec(bytes(v)?)?,
        3 => {}
        _ if empty(v) => {}
        _ => return None,
    }
    Some(())
}
