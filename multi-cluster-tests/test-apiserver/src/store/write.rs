//! The write paths of the store: create, update (PUT, of the object or its
//! status) and patch (merge, JSON, strategic merge, server-side apply), with
//! optimistic concurrency, server-owned metadata, `generation`, and the
//! per-type defaulting and admission of every write.

use serde_json::{Value, json};

use super::{EventType, Inner, Store, admission, defaulting, events};
use crate::meta::{meta_mut, meta_str, now_rfc3339, random_suffix, spec_part};
use crate::patch;
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult, FieldCause};

impl Store {
    /// `create`. A body without apiVersion or kind gets the URL's.
    pub fn create(&self, rt: &ResourceType, ns: &str, mut body: Value) -> ApiResult<Value> {
        defaulting::default_type_from_url(rt, &mut body);
        admission::check_body(rt, ns, &body)?;
        let (mut body, stored_api_version) = Self::to_storage(rt, body);
        let mut inner = self.lock();
        let ns = Self::ns_key(rt, ns);
        if rt.namespaced {
            match Self::namespace_state(&inner, &ns) {
                None => return Err(ApiError::not_found("", "namespaces", &ns)),
                Some(true) => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        rt.plural,
                        meta_str(&body, "name").unwrap_or("")
                    )));
                }
                Some(false) => {}
            }
        }
        let meta = meta_mut(&mut body);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            let name = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            meta.remove(f);
        }
        if rt.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        defaulting::normalize(rt, &mut body)?;
        admission::validate(rt, &body)?;
        let name = meta_str(&body, "name").unwrap_or("").to_string();
        let type_key = rt.storage_key();
        let key = (ns.clone(), name.clone());
        if inner
            .objects
            .get(&type_key)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        body["apiVersion"] = json!(stored_api_version);
        self.defaults_on_create(&mut inner, rt, &mut body)?;
        let stored = self.commit(
            &mut inner,
            &type_key,
            key,
            Some(body),
            EventType::Added,
            None,
        );
        Ok(Self::present(rt, &stored))
    }

    /// A body written at `rt` in the form the store keeps (events.k8s.io
    /// Events become core Events), and the apiVersion stored with it.
    pub(super) fn to_storage(rt: &ResourceType, body: Value) -> (Value, String) {
        if events::is_events_v1(rt) {
            (events::events_v1_to_core(&body), "v1".to_string())
        } else {
            (body, rt.api_version())
        }
    }

    /// What the server writes into a new object besides its metadata: the
    /// initial status ([`defaulting::initial_status`]), a Service's
    /// addresses, a CRD's registration (its types are served from now on).
    fn defaults_on_create(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        body: &mut Value,
    ) -> ApiResult<()> {
        defaulting::initial_status(rt, body);
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "services") => {
                let existing = Self::service_objects(inner);
                self.config
                    .services
                    .allocate(body, None, &existing)
                    .map_err(|c| {
                        ApiError::invalid("", "Service", meta_str(body, "name").unwrap_or(""), c)
                    })?;
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                Self::register_crd(inner, body)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn service_objects(inner: &Inner) -> Vec<&Value> {
        inner
            .objects
            .get(&(String::new(), "services".to_string()))
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    fn register_crd(inner: &mut Inner, crd: &mut Value) -> ApiResult<()> {
        let name = meta_str(crd, "name").unwrap_or("").to_string();
        let types = crate::registry::crd_types(crd).map_err(|msg| {
            let (field, message) = msg.split_once(": ").unwrap_or(("spec", msg.as_str()));
            ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                vec![FieldCause {
                    reason: "FieldValueInvalid",
                    field: field.to_string(),
                    message: message.to_string(),
                }],
            )
        })?;
        if types.is_empty() {
            return Err(ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                vec![FieldCause {
                    reason: "FieldValueRequired",
                    field: "spec.versions".into(),
                    message: "Required value: at least one version must be served".into(),
                }],
            ));
        }
        inner.registry.register_crd(types);
        let now = now_rfc3339();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now },
                { "type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now },
            ],
        });
        Ok(())
    }

    /// `update` (PUT), of the main resource or of `status`.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        status: bool,
    ) -> ApiResult<Value> {
        defaulting::default_type_from_url(rt, &mut body);
        admission::check_body(rt, ns, &body)?;
        let mut inner = self.lock();
        self.update_locked(&mut inner, rt, ns, name, body, status)
    }

    pub(super) fn current(
        inner: &Inner,
        rt: &ResourceType,
        ns: &str,
        name: &str,
    ) -> ApiResult<Value> {
        inner
            .objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(Self::ns_key(rt, ns), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    pub(super) fn update_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
    ) -> ApiResult<Value> {
        let ns = Self::ns_key(rt, ns);
        let old = Self::current(inner, rt, &ns, name)?;
        let (mut body, stored_api_version) = Self::to_storage(rt, body);
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta_str(&body, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        if status {
            let mut merged = old.clone();
            merged["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            body = merged;
        } else if rt.status {
            body["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if body["status"].is_null()
                && let Some(o) = body.as_object_mut()
            {
                o.remove("status");
            }
        }
        // Server-owned metadata is kept from the stored object.
        let old_meta = old["metadata"].clone();
        {
            let meta = meta_mut(&mut body);
            meta.insert("name".into(), json!(name));
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => meta.insert(f.into(), v.clone()),
                    None => meta.remove(f),
                };
            }
            if rt.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.remove("managedFields");
        }
        if old.pointer("/metadata/deletionTimestamp").is_some()
            && let Some(added) = body
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
        {
            let before = old
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array);
            if added.iter().any(|f| !before.is_some_and(|b| b.contains(f))) {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is being deleted: no new finalizers can be added",
                    rt.plural
                )));
            }
        }
        defaulting::normalize(rt, &mut body)?;
        admission::validate(rt, &body)?;
        body["apiVersion"] = json!(stored_api_version);
        body["kind"] = json!(rt.kind);
        if spec_part(&body) != spec_part(&old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut body).insert("generation".into(), json!(g + 1));
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "services") => {
                let existing = Self::service_objects(inner);
                self.config
                    .services
                    .allocate(&mut body, Some(&old), &existing)
                    .map_err(|c| ApiError::invalid("", "Service", name, c))?;
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") if !status => {
                Self::register_crd(inner, &mut body)?;
            }
            ("apps", _) => admission::check_update(rt, &old, &body)?,
            _ => {}
        }
        let finalizers_empty = body
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        let type_key = rt.storage_key();
        let key = (ns.clone(), name.to_string());
        if body.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty {
            let gone = self.remove_locked(inner, rt, &ns, name, Some(body));
            return Ok(Self::present(rt, &gone));
        }
        if body == old {
            return Ok(Self::present(rt, &old));
        }
        let stored = self.commit(inner, &type_key, key, Some(body), EventType::Modified, None);
        Ok(Self::present(rt, &stored))
    }

    /// `patch` of any supported type; `apply` creates when absent.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        status: bool,
        field_manager: Option<&str>,
    ) -> ApiResult<Value> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let mut inner = self.lock();
        let current = Self::current(&inner, rt, ns, name);
        let patched = match ct {
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("error decoding merge patch: {e}"))
                })?;
                let mut doc = Self::present(rt, &current?);
                json_patch::merge(&mut doc, &p);
                doc
            }
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("error decoding JSON patch: {e}"))
                })?;
                let mut doc = Self::present(rt, &current?);
                json_patch::patch(&mut doc, &p).map_err(|e| {
                    ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        name,
                        vec![FieldCause {
                            reason: "FieldValueInvalid",
                            field: "patch".into(),
                            message: format!("the JSON patch cannot be applied: {e}"),
                        }],
                    )
                })?;
                doc
            }
            "application/strategic-merge-patch+json" => {
                if rt.custom {
                    return Err(ApiError::unsupported_media_type(ct));
                }
                let p: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("error decoding strategic merge patch: {e}"))
                })?;
                let mut doc = Self::present(rt, &current?);
                patch::strategic_merge(&mut doc, &p, true);
                doc
            }
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                let manager = field_manager.filter(|m| !m.is_empty()).ok_or_else(|| {
                    ApiError::bad_request("fieldManager is required for apply requests (set the fieldManager query parameter)")
                })?;
                let applied: Value = serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                admission::check_body(rt, ns, &applied)?;
                if let Some(n) = meta_str(&applied, "name")
                    && n != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                let (group, plural) = rt.storage_key();
                let akey = (
                    group,
                    plural,
                    Self::ns_key(rt, ns),
                    name.to_string(),
                    manager.to_string(),
                );
                match current {
                    Err(e) if e.code == 404 && !status => {
                        let mut obj = applied.clone();
                        meta_mut(&mut obj).insert("name".into(), json!(name));
                        drop(inner);
                        let created = self.create(rt, ns, obj)?;
                        self.lock().applied.insert(akey, applied);
                        return Ok(created);
                    }
                    Err(e) => return Err(e),
                    Ok(cur) => {
                        let mut doc = Self::present(rt, &cur);
                        let prev = inner.applied.get(&akey).cloned();
                        let mut applied_clean = applied.clone();
                        meta_mut(&mut applied_clean).remove("resourceVersion");
                        patch::server_side_apply(&mut doc, &applied_clean, prev.as_ref());
                        if let Some(rv) = meta_str(&applied, "resourceVersion") {
                            meta_mut(&mut doc).insert("resourceVersion".into(), json!(rv));
                        }
                        let out = self.update_locked(&mut inner, rt, ns, name, doc, status)?;
                        inner.applied.insert(akey, applied);
                        return Ok(out);
                    }
                }
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        admission::check_body(rt, ns, &patched)?;
        self.update_locked(&mut inner, rt, ns, name, patched, status)
    }
}
