//! Patch semantics: JSON merge patch, JSON patch, the part of strategic merge
//! patch kubectl uses for the core types, and server-side apply.

use serde_json::{Map, Value};

/// The merge key of a list field in strategic merge patch, decided by the
/// field's name (and, for `ports`, by which key its elements carry).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Primitive lists whose strategy is "merge" (set union).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch. With `delete_nulls` false the patch is an
/// applied configuration (server-side apply): nulls are values, no directives.
pub fn strategic_merge(doc: &mut Value, patch: &Value, delete_nulls: bool) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if delete_nulls && p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        if let Some(o) = replacement.as_object_mut() {
            o.remove("$patch");
        }
        *doc = replacement;
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(d) = doc.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if delete_nulls && k.starts_with('$') {
            continue;
        }
        if delete_nulls
            && (k.starts_with("$setElementOrder/") || k.starts_with("$deleteFromPrimitiveList/"))
        {
            continue;
        }
        if v.is_null() && delete_nulls {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(cur, v, delete_nulls)
            }
            (Some(Value::Array(cur)), Value::Array(new)) => {
                if let Some(key) = merge_key(k, new.first().or(cur.first())) {
                    merge_keyed_list(cur, new, key, delete_nulls);
                } else if merges_primitives(k) {
                    for item in new {
                        if !cur.contains(item) {
                            cur.push(item.clone());
                        }
                    }
                } else {
                    *cur = new.clone();
                }
            }
            _ => {
                let mut fresh = v.clone();
                if delete_nulls {
                    strip_directives(&mut fresh);
                }
                d.insert(k.clone(), fresh);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|k, _| !k.starts_with('$'));
            o.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => {
            a.retain(|e| e.get("$patch").and_then(Value::as_str) != Some("delete"));
            a.iter_mut().for_each(strip_directives);
        }
        _ => {}
    }
}

fn merge_keyed_list(cur: &mut Vec<Value>, new: &[Value], key: &str, delete_nulls: bool) {
    for item in new {
        let Some(id) = item.get(key) else {
            cur.push(item.clone());
            continue;
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(id));
        let delete = delete_nulls && item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut cur[i], item, delete_nulls),
            (None, false) => {
                let mut fresh = item.clone();
                if delete_nulls {
                    strip_directives(&mut fresh);
                }
                cur.push(fresh);
            }
        }
    }
}

/// Server-side apply: merges `applied` into `live`, and removes the fields
/// this field manager applied last time but no longer applies (at map
/// level). Conflicts between managers are not detected.
pub fn server_side_apply(live: &mut Value, applied: &Value, previous: Option<&Value>) {
    if let Some(prev) = previous {
        remove_dropped(live, prev, applied);
    }
    strategic_merge(live, applied, false);
}

fn remove_dropped(live: &mut Value, prev: &Value, new: &Value) {
    let (Some(l), Some(p)) = (live.as_object_mut(), prev.as_object()) else {
        return;
    };
    for (k, pv) in p {
        match new.get(k) {
            None => {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    l.remove(k);
                }
            }
            Some(nv) => {
                if let Some(lv) = l.get_mut(k) {
                    remove_dropped(lv, pv, nv);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
