//! Deletion with a propagation policy (`DeleteOptions.propagationPolicy`),
//! as kube-apiserver does it: Background removes the object at once and
//! leaves its dependents to the garbage collector; Foreground and Orphan
//! keep it, marked for deletion with the collector's finalizer
//! (`foregroundDeletion`, `orphan`), until the collector has deleted (or
//! released) its dependents.

use super::*;
use crate::meta::now_rfc3339;
use crate::status::{ApiError, ApiResult, FieldCause};

/// Finalizer of an object whose dependents are deleted first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer of an object whose dependents are released, not deleted.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// How the dependents of a deleted object go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents.
    Background,
    /// The dependents go first, then the object.
    Foreground,
    /// The dependents lose their owner reference and stay.
    Orphan,
}

impl Propagation {
    /// From `propagationPolicy` (and the legacy `orphanDependents`); None
    /// when neither is given.
    pub fn parse(policy: Option<&str>, orphan_dependents: Option<bool>) -> ApiResult<Option<Self>> {
        match (policy, orphan_dependents) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![FieldCause {
                    reason: "FieldValueInvalid",
                    field: "propagationPolicy".into(),
                    message: "Invalid value: both orphanDependents and propagationPolicy are set: use propagationPolicy only".into(),
                }],
            )),
            (None, Some(true)) => Ok(Some(Propagation::Orphan)),
            (None, _) => Ok(None),
            (Some("Background"), None) => Ok(Some(Propagation::Background)),
            (Some("Foreground"), None) => Ok(Some(Propagation::Foreground)),
            (Some("Orphan"), None) => Ok(Some(Propagation::Orphan)),
            (Some(other), None) => Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![FieldCause {
                    reason: "FieldValueNotSupported",
                    field: "propagationPolicy".into(),
                    message: format!(
                        "Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
                    ),
                }],
            )),
        }
    }

    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

impl Store {
    /// `delete` with a propagation policy (None: Background, the default of
    /// every type this server serves).
    pub fn delete_propagating(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
        policy: Option<Propagation>,
    ) -> ApiResult<Value> {
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        let Some(fin) = policy
            .and_then(Propagation::finalizer)
            .filter(|_| !is_namespace)
        else {
            return self.delete(rt, ns, name, precondition_rv);
        };
        let mut inner = self.lock();
        let ns = Self::ns_key(rt, ns);
        let cur = Self::current(&inner, rt, &ns, name)?;
        if let Some(rv) = precondition_rv
            && Some(rv) != meta_str(&cur, "resourceVersion")
        {
            return Err(ApiError::conflict(&rt.group, &rt.plural, name));
        }
        let mut marked = cur.clone();
        let meta = meta_mut(&mut marked);
        let mut finalizers: Vec<Value> = meta
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // One policy at a time: the new one replaces the other's finalizer.
        finalizers.retain(|f| f != FOREGROUND_FINALIZER && f != ORPHAN_FINALIZER);
        finalizers.push(json!(fin));
        meta.insert("finalizers".into(), json!(finalizers));
        if !meta.contains_key("deletionTimestamp") {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        if marked == cur {
            return Ok(Self::present(rt, &cur));
        }
        let type_key = rt.storage_key();
        let stored = self.commit(
            &mut inner,
            &type_key,
            (ns, name.to_string()),
            Some(marked),
            EventType::Modified,
            None,
        );
        Ok(Self::present(rt, &stored))
    }
}
