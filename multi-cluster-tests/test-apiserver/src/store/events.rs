//! Events are one store served through two APIs, as in kube-apiserver:
//! core/v1 `events` (what `kubectl get events` and `kubectl describe` read)
//! and `events.k8s.io/v1` `events` (what kube-rs' `Recorder` and client-go's
//! new event recorder write). An Event written through either is read,
//! listed and watched through both.
//!
//! Objects are stored in the core/v1 form; this module converts between the
//! two schemas the way kube-apiserver's conversion through its internal
//! type does: seven fields are renamed (`involvedObject` ↔ `regarding`,
//! `message` ↔ `note`, `reportingComponent` ↔ `reportingController`,
//! `source`, `firstTimestamp`, `lastTimestamp`, `count` ↔ their
//! `deprecated*` names), the rest keep their names, fields the target schema
//! does not have are dropped, and absent fields come out as Go's JSON
//! encoding writes the zero value of each (`"eventTime": null`,
//! `"regarding": {}`, `"reportingComponent": ""`, or omitted).

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::selector::FieldSelector;

/// How Go's encoding writes a field whose value is the zero value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zero {
    /// `omitempty` on a string, number or pointer: left out.
    Omit,
    /// A time (`metav1.Time`, `MicroTime`): `null`.
    Null,
    /// A struct (`omitempty` does not apply to structs): `{}`.
    Object,
    /// A string without `omitempty`: `""`.
    EmptyString,
}

/// One field of an Event: its core/v1 name and zero rule, its
/// events.k8s.io/v1 name and zero rule.
struct Field {
    core: &'static str,
    core_zero: Zero,
    events: &'static str,
    events_zero: Zero,
}

const fn f(core: &'static str, core_zero: Zero, events: &'static str, events_zero: Zero) -> Field {
    Field {
        core,
        core_zero,
        events,
        events_zero,
    }
}

/// Every field of both schemas, in the order kube-apiserver writes them
/// (serde_json sorts keys anyway; the order only helps the reader).
const FIELDS: &[Field] = &[
    f("metadata", Zero::Object, "metadata", Zero::Object),
    f("eventTime", Zero::Null, "eventTime", Zero::Null),
    f("series", Zero::Omit, "series", Zero::Omit),
    f(
        "reportingComponent",
        Zero::EmptyString,
        "reportingController",
        Zero::Omit,
    ),
    f(
        "reportingInstance",
        Zero::EmptyString,
        "reportingInstance",
        Zero::Omit,
    ),
    f("action", Zero::Omit, "action", Zero::Omit),
    f("reason", Zero::Omit, "reason", Zero::Omit),
    f("involvedObject", Zero::Object, "regarding", Zero::Object),
    f("related", Zero::Omit, "related", Zero::Omit),
    f("message", Zero::Omit, "note", Zero::Omit),
    f("type", Zero::Omit, "type", Zero::Omit),
    f("source", Zero::Object, "deprecatedSource", Zero::Object),
    f(
        "firstTimestamp",
        Zero::Null,
        "deprecatedFirstTimestamp",
        Zero::Null,
    ),
    f(
        "lastTimestamp",
        Zero::Null,
        "deprecatedLastTimestamp",
        Zero::Null,
    ),
    f("count", Zero::Omit, "deprecatedCount", Zero::Omit),
];

/// The two schemas of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Core,
    Events,
}

/// Whether `rt` is `events.k8s.io` Events (served from the core store).
pub fn is_events_v1(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

/// Whether `rt` is core/v1 Events.
pub fn is_core_events(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "events"
}

/// The zero value Go's encoding leaves out (`omitempty`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        _ => false,
    }
}

fn convert(obj: &Value, from: Schema, to: Schema) -> Value {
    let src = obj.as_object();
    let mut out = Map::new();
    for field in FIELDS {
        let (from_name, (to_name, zero)) = match (from, to) {
            (Schema::Core, Schema::Core) => (field.core, (field.core, field.core_zero)),
            (Schema::Core, Schema::Events) => (field.core, (field.events, field.events_zero)),
            (Schema::Events, Schema::Core) => (field.events, (field.core, field.core_zero)),
            (Schema::Events, Schema::Events) => (field.events, (field.events, field.events_zero)),
        };
        let value = src.and_then(|m| m.get(from_name)).filter(|v| !v.is_null());
        let written = match (value, zero) {
            (Some(v), Zero::Omit) if is_empty(v) => None,
            (Some(v), _) => Some(v.clone()),
            (None, Zero::Omit) => None,
            (None, Zero::Null) => Some(Value::Null),
            (None, Zero::Object) => Some(json!({})),
            (None, Zero::EmptyString) => Some(json!("")),
        };
        if let Some(v) = written {
            out.insert(to_name.to_string(), v);
        }
    }
    let (api_version, kind) = match to {
        Schema::Core => ("v1", "Event"),
        Schema::Events => ("events.k8s.io/v1", "Event"),
    };
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    Value::Object(out)
}

/// A stored (core/v1) Event as `events.k8s.io/v1` serves it.
pub fn core_to_events_v1(core: &Value) -> Value {
    convert(core, Schema::Core, Schema::Events)
}

/// An `events.k8s.io/v1` Event in the core/v1 form the store keeps.
pub fn events_v1_to_core(event: &Value) -> Value {
    convert(event, Schema::Events, Schema::Core)
}

/// The core/v1 field selectors kube-apiserver gives Events that are not
/// plain paths: `source` is `source.component`.
pub fn core_field_selector(rt: &ResourceType, mut fields: FieldSelector) -> FieldSelector {
    if is_core_events(rt) {
        for (path, _, _) in &mut fields.0 {
            if path == "source" {
                *path = "source.component".into();
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests;
