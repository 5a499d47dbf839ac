//! The garbage collector: objects go with their owners, as
//! kube-controller-manager's collector does it.
//!
//! - An object whose owners (by `ownerReferences` uid) are all gone is
//!   deleted (Background propagation: `kubectl delete deployment` removes the
//!   Deployment, then this removes its ReplicaSets, then their Pods); owner
//!   references to objects that are gone are dropped while another owner
//!   remains.
//! - An owner deleted with Foreground propagation (finalizer
//!   `foregroundDeletion`) has its dependents deleted first (in the
//!   foreground too when they own objects themselves); it goes once no
//!   dependent with `blockOwnerDeletion` remains.
//! - An owner deleted with Orphan propagation (finalizer `orphan`) has its
//!   references removed from its dependents, which stay; then it goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::{
    EventType, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Propagation, Store, StoredEvent,
};

/// An owner reference as the collector needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's uid.
    pub uid: String,
    /// `blockOwnerDeletion`: a foreground deletion of the owner waits for it.
    pub block: bool,
}

/// Where an object is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// API group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// An object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GcObject {
    /// Where it is.
    pub key: Key,
    /// Its uid.
    pub uid: String,
    /// Its owners.
    pub owners: Vec<Owner>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// It carries the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// It carries the `orphan` finalizer.
    pub orphan: bool,
}

impl GcObject {
    /// The collector's view of `obj`, or None when it has nothing to do
    /// with it (no owners, none of its finalizers).
    pub fn of(group: &str, plural: &str, ns: &str, obj: &Value) -> Option<GcObject> {
        let owners: Vec<Owner> = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| {
                        Some(Owner {
                            uid: r.get("uid")?.as_str()?.to_string(),
                            block: r.get("blockOwnerDeletion").and_then(Value::as_bool)
                                == Some(true),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let has = |f: &str| {
            obj.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|fs| fs.iter().any(|x| x == f))
        };
        let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
        let (foreground, orphan) = (has(FOREGROUND_FINALIZER), has(ORPHAN_FINALIZER));
        if owners.is_empty() && !(deleting && (foreground || orphan)) {
            return None;
        }
        Some(GcObject {
            key: Key {
                group: group.to_string(),
                plural: plural.to_string(),
                namespace: ns.to_string(),
                name: obj.pointer("/metadata/name")?.as_str()?.to_string(),
            },
            uid: obj.pointer("/metadata/uid")?.as_str()?.to_string(),
            owners,
            deleting,
            foreground,
            orphan,
        })
    }
}

/// One thing the collector does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the object (in the foreground when it owns objects itself and
    /// its owner waits for it).
    Delete {
        /// The object.
        key: Key,
        /// Foreground propagation.
        foreground: bool,
    },
    /// Remove these owner references from the object.
    DropOwners {
        /// The object.
        key: Key,
        /// The owners' uids.
        uids: Vec<String>,
    },
    /// Remove the collector's finalizer: the object may go.
    Finish {
        /// The object.
        key: Key,
        /// The finalizer.
        finalizer: &'static str,
    },
}

/// What the collector does, given every uid that exists and the objects it
/// may act on.
pub fn plan(uids: &HashSet<String>, objects: &[GcObject]) -> Vec<Action> {
    let mut dependents: HashMap<&str, Vec<&GcObject>> = HashMap::new();
    for o in objects {
        for owner in &o.owners {
            dependents.entry(owner.uid.as_str()).or_default().push(o);
        }
    }
    let mut out = Vec::new();
    for o in objects {
        let deps = dependents
            .get(o.uid.as_str())
            .map_or(&[][..], Vec::as_slice);
        if o.deleting && o.orphan {
            for d in deps {
                out.push(Action::DropOwners {
                    key: d.key.clone(),
                    uids: vec![o.uid.clone()],
                });
            }
            out.push(Action::Finish {
                key: o.key.clone(),
                finalizer: ORPHAN_FINALIZER,
            });
            continue;
        }
        if o.deleting && o.foreground {
            for d in deps.iter().filter(|d| !d.deleting) {
                out.push(Action::Delete {
                    key: d.key.clone(),
                    foreground: dependents.contains_key(d.uid.as_str()),
                });
            }
            let blocked = deps.iter().any(|d| {
                d.owners
                    .iter()
                    .any(|owner| owner.uid == o.uid && owner.block)
            });
            if !blocked {
                out.push(Action::Finish {
                    key: o.key.clone(),
                    finalizer: FOREGROUND_FINALIZER,
                });
            }
        }
        if o.owners.is_empty() || o.deleting {
            continue;
        }
        let gone: Vec<String> = o
            .owners
            .iter()
            .filter(|owner| !uids.contains(&owner.uid))
            .map(|owner| owner.uid.clone())
            .collect();
        if gone.len() == o.owners.len() {
            out.push(Action::Delete {
                key: o.key.clone(),
                foreground: false,
            });
        } else if !gone.is_empty() {
            out.push(Action::DropOwners {
                key: o.key.clone(),
                uids: gone,
            });
        }
    }
    out
}

/// Whether a change may give the collector work.
fn concerns(ev: &StoredEvent) -> bool {
    let refs = |o: &Value| o.pointer("/metadata/ownerReferences").cloned();
    match ev.kind {
        EventType::Deleted => true,
        EventType::Added => refs(&ev.object).is_some(),
        EventType::Modified => {
            GcObject::of(&ev.group, &ev.plural, &ev.namespace, &ev.object)
                .is_some_and(|o| o.deleting && (o.foreground || o.orphan))
                || ev.old.as_ref().map(refs) != Some(refs(&ev.object))
        }
    }
}

/// The collector over the store.
#[derive(Debug)]
pub struct GarbageCollector {
    store: Arc<Store>,
}

impl GarbageCollector {
    /// A collector over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        GarbageCollector { store }
    }

    /// Applies one action; false when it lost a race (look again).
    fn apply(&self, action: &Action) -> bool {
        let reg = self.store.registry();
        let key = match action {
            Action::Delete { key, .. }
            | Action::DropOwners { key, .. }
            | Action::Finish { key, .. } => key,
        };
        let Some(rt) = reg.any_version(&key.group, &key.plural) else {
            return true;
        };
        let result = match action {
            Action::Delete { foreground, .. } => self
                .store
                .delete_propagating(
                    rt,
                    &key.namespace,
                    &key.name,
                    None,
                    foreground.then_some(Propagation::Foreground),
                )
                .map(|_| ()),
            Action::DropOwners { uids, .. } => self
                .store
                .get(rt, &key.namespace, &key.name)
                .and_then(|mut obj| {
                    let refs: Vec<Value> = obj
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter(|r| {
                                    !r.get("uid")
                                        .and_then(Value::as_str)
                                        .is_some_and(|u| uids.iter().any(|x| x == u))
                                })
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    if refs.is_empty() {
                        obj["metadata"]
                            .as_object_mut()
                            .expect("metadata")
                            .remove("ownerReferences");
                    } else {
                        obj["metadata"]["ownerReferences"] = json!(refs);
                    }
                    self.store
                        .update(rt, &key.namespace, &key.name, obj, false)
                        .map(|_| ())
                }),
            Action::Finish { finalizer, .. } => self
                .store
                .get(rt, &key.namespace, &key.name)
                .and_then(|mut obj| {
                    if let Some(fs) = obj
                        .pointer_mut("/metadata/finalizers")
                        .and_then(Value::as_array_mut)
                    {
                        fs.retain(|f| f != finalizer);
                    }
                    self.store
                        .update(rt, &key.namespace, &key.name, obj, false)
                        .map(|_| ())
                }),
        };
        match result {
            Ok(()) => true,
            Err(e) if e.code == 404 => true,
            Err(e) if e.code == 409 => false,
            Err(e) => {
                tracing::warn!(?action, error = %e.message, "garbage collection failed");
                true
            }
        }
    }
}

/// What the collector works from, read under one lock so it is consistent:
/// every object's uid, and the objects it may act on (those with owner
/// references, and those being deleted with its finalizers).
fn snapshot(store: &Store) -> (HashSet<String>, Vec<GcObject>) {
    let mut uids = HashSet::new();
    let mut objects = Vec::new();
    store.scan_every(|group, plural, ns, obj| {
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            uids.insert(uid.to_string());
        }
        if let Some(o) = GcObject::of(group, plural, ns, obj) {
            objects.push(o);
        }
    });
    (uids, objects)
}

impl super::Reconcile for GarbageCollector {
    fn reconcile(&mut self, batch: Option<&[Arc<StoredEvent>]>) -> Option<Duration> {
        if batch.is_some_and(|b| !b.iter().any(|ev| concerns(ev))) {
            return None;
        }
        let (uids, objects) = snapshot(&self.store);
        let mut again = false;
        for action in plan(&uids, &objects) {
            again |= !self.apply(&action);
        }
        again.then_some(Duration::from_millis(200))
    }
}

#[cfg(test)]
mod tests;
