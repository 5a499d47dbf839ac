//! Deletion in the store: finalizers hold an object (marked with
//! `deletionTimestamp`) until they are removed; a namespace empties itself
//! and goes with its last object; a CRD takes its custom resources and its
//! served types with it.

use serde_json::{Value, json};

use super::{EventType, Inner, ObjKey, Store};
use crate::meta::{meta_mut, meta_str, now_rfc3339};
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};

impl Store {
    /// `delete`: sets deletionTimestamp while finalizers remain, else removes.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let ns = Self::ns_key(rt, ns);
        let cur = Self::current(&inner, rt, &ns, name)?;
        if let Some(rv) = precondition_rv
            && Some(rv) != meta_str(&cur, "resourceVersion")
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        let has_finalizers = cur
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if !has_finalizers && !is_namespace {
            let gone = self.remove_locked(&mut inner, rt, &ns, name, None);
            return Ok(Self::present(rt, &gone));
        }
        let mut marked = cur.clone();
        if cur.pointer("/metadata/deletionTimestamp").is_none() {
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if is_namespace {
                marked["status"] = json!({ "phase": "Terminating" });
            }
            let type_key = rt.storage_key();
            marked = self.commit(
                &mut inner,
                &type_key,
                (ns.clone(), name.to_string()),
                Some(marked),
                EventType::Modified,
                None,
            );
        }
        if is_namespace {
            self.empty_namespace(&mut inner, name);
            if !has_finalizers
                && Self::namespace_state(&inner, name).is_some()
                && Self::namespace_is_empty(&inner, name)
            {
                let gone = self.remove_locked(&mut inner, rt, "", name, None);
                return Ok(Self::present(rt, &gone));
            }
        }
        Ok(Self::present(rt, &marked))
    }

    pub(super) fn namespace_state(inner: &Inner, ns: &str) -> Option<bool> {
        inner
            .objects
            .get(&(String::new(), "namespaces".to_string()))
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
            .map(|o| o.pointer("/metadata/deletionTimestamp").is_some())
    }

    pub(super) fn namespace_is_empty(inner: &Inner, ns: &str) -> bool {
        inner
            .objects
            .values()
            .all(|m| !m.keys().any(|(n, _)| n == ns))
    }

    pub(super) fn empty_namespace(&self, inner: &mut Inner, ns: &str) {
        let mut victims = Vec::new();
        for ((g, p), m) in &inner.objects {
            for ((n, name), obj) in m {
                if n == ns {
                    let finalized = obj
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty());
                    victims.push((g.clone(), p.clone(), name.clone(), finalized, obj.clone()));
                }
            }
        }
        for (g, p, name, finalized, obj) in victims {
            let Some(rt) = inner.registry.any_version(&g, &p).cloned() else {
                continue;
            };
            if finalized {
                if obj.pointer("/metadata/deletionTimestamp").is_none() {
                    let mut marked = obj;
                    meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    self.commit(
                        inner,
                        &(g, p),
                        (ns.to_string(), name),
                        Some(marked),
                        EventType::Modified,
                        None,
                    );
                }
            } else {
                self.remove_locked(inner, &rt, ns, &name, None);
            }
        }
    }

    pub(super) fn remove_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Value {
        let type_key = rt.storage_key();
        let gone = self.commit(
            inner,
            &type_key,
            (ns.to_string(), name.to_string()),
            None,
            EventType::Deleted,
            last,
        );
        if rt.group == "apiextensions.k8s.io"
            && rt.plural == "customresourcedefinitions"
            && let Ok(types) = crate::registry::crd_types(&gone)
            && let Some(t) = types.first()
        {
            let key = t.storage_key();
            let victims: Vec<ObjKey> = inner
                .objects
                .get(&key)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for k in victims {
                self.commit(inner, &key, k, None, EventType::Deleted, None);
            }
            inner.registry.unregister(&key.0, &key.1);
        }
        // A terminating namespace goes away with its last object.
        if !ns.is_empty()
            && Self::namespace_state(inner, ns) == Some(true)
            && Self::namespace_is_empty(inner, ns)
        {
            let ns_key = (String::new(), "namespaces".to_string());
            let ns_obj = inner
                .objects
                .get(&ns_key)
                .and_then(|m| m.get(&(String::new(), ns.to_string())))
                .cloned();
            if ns_obj.is_some_and(|o| {
                o.pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|f| f.is_empty())
            }) {
                self.commit(
                    inner,
                    &ns_key,
                    (String::new(), ns.to_string()),
                    None,
                    EventType::Deleted,
                    None,
                );
            }
        }
        gone
    }
}
