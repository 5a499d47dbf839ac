//! Decoding of the Kubernetes protobuf request bodies kubectl sends for the
//! typed `kubectl create namespace|configmap|secret|serviceaccount|deployment`
//! commands. Only those kinds and the common ObjectMeta fields are known;
//! anything else is refused with 415 so the caller can send JSON instead.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// One protobuf field value.
#[derive(Debug, Clone)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Splits a message into (field number, value) pairs.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (field, wt) = (key >> 3, key & 7);
        let v = match wt {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                Wire::Fixed
            }
            _ => return None,
        };
        out.push((field, v));
    }
    Some(out)
}

fn string(b: &[u8]) -> Option<Value> {
    std::str::from_utf8(b).ok().map(|s| json!(s))
}

/// A map<string, string|bytes> entry list.
fn map_entry(b: &[u8], bytes_values: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = json!("");
    for (f, v) in fields(b)? {
        if let Wire::Bytes(x) = v {
            match f {
                1 => key = std::str::from_utf8(x).ok()?.to_string(),
                2 if bytes_values => {
                    value = json!(base64::engine::general_purpose::STANDARD.encode(x))
                }
                2 => value = string(x)?,
                _ => {}
            }
        }
    }
    Some((key, value))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (f, v) in fields(b)? {
        let Wire::Bytes(x) = v else { continue };
        // Go's encoder writes unset strings as empty ones: they say nothing.
        if x.is_empty() && matches!(f, 1 | 2 | 3 | 6) {
            continue;
        }
        match f {
            1 => {
                m.insert("name".into(), string(x)?);
            }
            2 => {
                m.insert("generateName".into(), string(x)?);
            }
            3 => {
                m.insert("namespace".into(), string(x)?);
            }
            6 => {
                m.insert("resourceVersion".into(), string(x)?);
            }
            11 => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(string(x)?),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(m))
}

/// Decodes a `k8s\0`-enveloped protobuf body into the JSON object, or None
/// when the body or its kind is not one this server knows.
pub fn decode(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (f, v) in fields(unknown)? {
        match (f, v) {
            (1, Wire::Bytes(tm)) => {
                for (tf, tv) in fields(tm)? {
                    if let Wire::Bytes(s) = tv {
                        let s = std::str::from_utf8(s).ok()?.to_string();
                        match tf {
                            1 => api_version = s,
                            2 => kind = s,
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = json!({ "apiVersion": api_version, "kind": kind });
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut string_data = Map::new();
    for (f, v) in fields(raw)? {
        match (kind.as_str(), f, v) {
            (_, 1, Wire::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            ("Namespace", 2, Wire::Bytes(spec)) => {
                let fins: Vec<Value> = fields(spec)?
                    .into_iter()
                    .filter_map(|(f, v)| match (f, v) {
                        (1, Wire::Bytes(s)) => string(s),
                        _ => None,
                    })
                    .collect();
                obj["spec"] = json!({ "finalizers": fins });
            }
            ("Namespace", _, _) => {}
            ("ConfigMap", 2, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e, false)?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e, true)?;
                binary.insert(k, v);
            }
            ("ConfigMap" | "Secret", 4 | 5, Wire::Varint(b))
                if (kind == "ConfigMap") == (f == 4) =>
            {
                obj["immutable"] = json!(b != 0);
            }
            ("ConfigMap", _, _) => {}
            ("Secret", 2, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Wire::Bytes(t)) => obj["type"] = string(t)?,
            ("Secret", 4, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e, false)?;
                string_data.insert(k, v);
            }
            ("Secret", _, _) => {}
            ("ServiceAccount", 4, Wire::Varint(b)) => {
                obj["automountServiceAccountToken"] = json!(b != 0)
            }
            ("ServiceAccount", _, _) => {}
            ("Deployment", f, v) => workload::deployment(&mut obj, f, &v)?,
            _ => return None,
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    Some(obj)
}

mod workload;

#[cfg(test)]
mod tests;
