//! The read paths of the store: get, list (selectors, paging with
//! continue tokens), watch (history replay, 410 Gone) and the per-watcher
//! filtering of events, each answering in the requested version's schema.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::events;
use super::{EventType, ListOptions, ObjKey, Store, StoredEvent, WatchStart};
use crate::meta::meta_str;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion {s:?} is not valid: this server's resource versions are decimal integers"
        ))
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl Store {
    /// The object as served at `rt`'s version (an Event through
    /// events.k8s.io in that API's schema).
    pub fn present(rt: &ResourceType, obj: &Value) -> Value {
        if events::is_events_v1(rt) {
            return events::core_to_events_v1(obj);
        }
        let mut o = obj.clone();
        o["apiVersion"] = json!(rt.api_version());
        o["kind"] = json!(rt.kind);
        o
    }

    /// What selectors of a request at `rt` see: the stored object, or its
    /// conversion when `rt` serves it in another schema (so
    /// `regarding.name=web` selects through events.k8s.io).
    fn selectable<'a>(rt: &ResourceType, obj: &'a Value) -> Cow<'a, Value> {
        if events::is_events_v1(rt) {
            Cow::Owned(Self::present(rt, obj))
        } else {
            Cow::Borrowed(obj)
        }
    }

    /// Whether `obj` (as stored) passes a request's selectors.
    pub fn selected(
        rt: &ResourceType,
        obj: &Value,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> bool {
        labels.matches(obj) && (fields.0.is_empty() || fields.matches(&Self::selectable(rt, obj)))
    }

    /// `get`.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        let inner = self.lock();
        inner
            .objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(Self::ns_key(rt, ns), name.to_string())))
            .map(|o| Self::present(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Calls `f` on every object of a type in namespace `ns` (under the
    /// lock: `f` copies only what it needs).
    pub fn scan(&self, rt: &ResourceType, ns: &str, mut f: impl FnMut(&Value)) {
        let inner = self.lock();
        if let Some(m) = inner.objects.get(&rt.storage_key()) {
            let ns = Self::ns_key(rt, ns);
            m.range((ns.clone(), String::new())..)
                .take_while(|((n, _), _)| *n == ns)
                .for_each(|(_, o)| f(o));
        }
    }

    /// Calls `f` on every stored object, with its type's storage key
    /// (group, plural) and its namespace, under one lock: what `f` gathers
    /// is one consistent state (the garbage collector's snapshot).
    pub fn scan_every(&self, mut f: impl FnMut(&str, &str, &str, &Value)) {
        let inner = self.lock();
        for ((group, plural), m) in &inner.objects {
            for ((ns, _), obj) in m {
                f(group, plural, ns, obj);
            }
        }
    }

    /// All objects of a type (optionally one namespace), unfiltered.
    pub fn all(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        let inner = self.lock();
        inner
            .objects
            .get(&rt.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| n == want))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `list`, with selectors and paging.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Value> {
        let inner = self.lock();
        let (list_rv, start) = match &opts.continue_token {
            Some(tok) => {
                let t: ContinueToken = base64::engine::general_purpose::STANDARD
                    .decode(tok)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("continue token {tok:?} is not valid"))
                    })?;
                if t.rv < inner.compacted {
                    return Err(ApiError::expired(format!(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. (token revision {}, oldest kept {})",
                        t.rv, inner.compacted
                    )));
                }
                (t.rv, Some((t.ns, t.name)))
            }
            None => (inner.rv, None),
        };
        let empty = BTreeMap::new();
        let objects = inner.objects.get(&rt.storage_key()).unwrap_or(&empty);
        let range: Box<dyn Iterator<Item = (&ObjKey, &Value)>> = match &start {
            Some(k) => Box::new(objects.range(k.clone()..).filter(move |(key, _)| *key != k)),
            None => Box::new(objects.iter()),
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        for ((n, name), obj) in range {
            if ns.is_some_and(|want| want != n) {
                continue;
            }
            if !Self::selected(rt, obj, &opts.labels, &opts.fields) {
                continue;
            }
            if opts.limit > 0 && items.len() == opts.limit {
                if next.is_none() {
                    next = items.last().map(|last: &Value| {
                        (
                            meta_str(last, "namespace").unwrap_or("").to_string(),
                            meta_str(last, "name").unwrap_or("").to_string(),
                        )
                    });
                }
                remaining += 1;
                let _ = name;
                continue;
            }
            items.push(Self::present(rt, obj));
        }
        let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
        if let Some((ns, name)) = next {
            let tok = serde_json::to_vec(&ContinueToken {
                rv: list_rv,
                ns,
                name,
            })
            .map_err(|e| ApiError::internal(e.to_string()))?;
            metadata["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(tok));
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Starts a watch from `since` (None: current state as ADDED events).
    pub fn watch(
        &self,
        rt: &ResourceType,
        since: Option<&str>,
        send_initial: bool,
    ) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let since = match since {
            Some(s) if !s.is_empty() && s != "0" => Some(parse_rv(s)?),
            _ => None,
        };
        let initial = if since.is_none() || send_initial {
            inner
                .objects
                .get(&rt.storage_key())
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let backlog = match since {
            Some(rv) if !send_initial => {
                if rv < inner.compacted {
                    self.note_gone();
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        inner.compacted
                    )));
                }
                let (g, p) = rt.storage_key();
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && e.group == g && e.plural == p)
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(WatchStart {
            initial,
            backlog,
            live: self.events.subscribe(),
            rv: inner.rv,
            closer: self.closer.subscribe(),
        })
    }

    /// Filters a stored event for one watcher: label/field selector changes
    /// turn MODIFIED into ADDED or DELETED as the real server does.
    pub fn filter_event(
        ev: &StoredEvent,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Option<(EventType, Value)> {
        let (group, plural) = rt.storage_key();
        if ev.group != group || ev.plural != plural {
            return None;
        }
        if ns.is_some_and(|n| n != ev.namespace) {
            return None;
        }
        let matches = |o: &Value| Self::selected(rt, o, labels, fields);
        let now = matches(&ev.object);
        match ev.kind {
            EventType::Added | EventType::Deleted => {
                now.then(|| (ev.kind, Self::present(rt, &ev.object)))
            }
            EventType::Modified => {
                let before = ev.old.as_ref().is_some_and(matches);
                match (before, now) {
                    (true, true) => Some((EventType::Modified, Self::present(rt, &ev.object))),
                    (false, true) => Some((EventType::Added, Self::present(rt, &ev.object))),
                    (true, false) => Some((EventType::Deleted, Self::present(rt, &ev.object))),
                    (false, false) => None,
                }
            }
        }
    }
}
