//! The in-memory object store: one global resourceVersion counter (like
//! etcd's revision), a bounded event history for watch resumption, and the
//! API semantics of reads and writes.
//!
//! This file holds the state and the one place a change is committed
//! (`Store::commit`: new revision, history, broadcast). The paths over it
//! are split by seam: `read` (get, list, watch, selectors), `write`
//! (create, update, patch), `delete` (finalizers, namespaces, CRDs) and
//! `propagation` (deletion policies); the per-type rules a write applies are
//! pure functions in `defaulting` and `admission`, and `events` converts
//! Events between the two APIs that serve them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::allocator::ServiceAllocator;
use crate::meta::{meta_mut, meta_str};
use crate::registry::{Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};

pub mod admission;
pub mod defaulting;
mod delete;
pub mod events;
#[cfg(test)]
mod fixtures;
mod propagation;
mod read;
mod write;

pub use propagation::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Propagation};

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct StoredEvent {
    /// The revision of this change.
    pub rv: u64,
    /// API group of the object.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (the last state for deletes).
    pub object: Value,
    /// The object before the change (updates only).
    pub old: Option<Value>,
}

/// Options of a list request.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// What a watch starts with.
#[derive(Debug)]
pub struct WatchStart {
    /// Synthetic ADDED objects (watch without a resourceVersion, or sendInitialEvents).
    pub initial: Vec<Value>,
    /// Stored events after the requested resourceVersion.
    pub backlog: Vec<Arc<StoredEvent>>,
    /// Live events from here on.
    pub live: broadcast::Receiver<Arc<StoredEvent>>,
    /// Revision at the start.
    pub rv: u64,
    /// Fires when the server asks all watches to end.
    pub closer: watch::Receiver<u64>,
}

/// How the store is configured.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Events kept for resuming watches; older resourceVersions get 410.
    pub history: usize,
    /// Allocator of Service ClusterIPs and NodePorts.
    pub services: ServiceAllocator,
}

type TypeKey = (String, String);
type ObjKey = (String, String);

#[derive(Clone)]
struct Inner {
    rv: u64,
    registry: Registry,
    objects: BTreeMap<TypeKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    compacted: u64,
    applied: HashMap<(String, String, String, String, String), Value>,
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    closer: watch::Sender<u64>,
    config: StoreConfig,
    gone_sent: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("rv", &self.rv).finish()
    }
}

impl Store {
    /// A store with the built-in namespaces (`default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`).
    pub fn new(config: StoreConfig) -> Arc<Self> {
        let (events, _) = broadcast::channel(config.history.max(1024) * 2);
        let (closer, _) = watch::channel(0);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 0,
                registry: Registry::new(),
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                applied: HashMap::new(),
            }),
            events,
            closer,
            config,
            gone_sent: AtomicU64::new(0),
        });
        let ns = store
            .registry()
            .get("", "v1", "namespaces")
            .cloned()
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(&ns, "", json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } }))
                .expect("built-in namespace");
        }
        store
    }

    /// A private copy of the current state for a dry run: writes to it are
    /// validated and answered like real ones, and then thrown away.
    pub fn scratch_copy(&self) -> Arc<Store> {
        let inner = self.lock().clone();
        let (events, _) = broadcast::channel(16);
        let (closer, _) = watch::channel(0);
        Arc::new(Store {
            inner: Mutex::new(inner),
            events,
            closer,
            config: self.config.clone(),
            gone_sent: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the served types.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// A number that changes whenever the served types change (CRDs).
    pub fn registry_revision(&self) -> u64 {
        let inner = self.lock();
        inner
            .objects
            .get(&(
                "apiextensions.k8s.io".to_string(),
                "customresourcedefinitions".to_string(),
            ))
            .map(|m| {
                m.values()
                    .filter_map(|o| meta_str(o, "resourceVersion")?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
                    .wrapping_mul(31)
                    .wrapping_add(m.len() as u64)
            })
            .unwrap_or(0)
    }

    /// Current revision.
    pub fn revision(&self) -> u64 {
        self.lock().rv
    }

    /// Subscribes to every committed change (used by the controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// Ends every open watch stream (clients then resume, like after a
    /// dropped connection).
    pub fn close_watches(&self) {
        self.closer.send_modify(|g| *g += 1);
    }

    /// How many `410 Gone` watch errors were sent.
    pub fn gone_sent(&self) -> u64 {
        self.gone_sent.load(Ordering::Relaxed)
    }

    /// Records that a watch was answered with 410.
    pub fn note_gone(&self) {
        self.gone_sent.fetch_add(1, Ordering::Relaxed);
    }

    fn ns_key(rt: &ResourceType, ns: &str) -> String {
        if rt.namespaced {
            ns.to_string()
        } else {
            String::new()
        }
    }

    /// Commits one change under the lock: the next revision, stamped on
    /// the object (or its last state, for a delete), kept in the history
    /// and sent to every subscriber.
    fn commit(
        &self,
        inner: &mut Inner,
        type_key: &TypeKey,
        key: ObjKey,
        new: Option<Value>,
        kind: EventType,
        deleted: Option<Value>,
    ) -> Value {
        inner.rv += 1;
        let rv = inner.rv;
        let old = inner
            .objects
            .get(type_key)
            .and_then(|m| m.get(&key))
            .cloned();
        let object = match new {
            Some(mut obj) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                inner
                    .objects
                    .entry(type_key.clone())
                    .or_default()
                    .insert(key.clone(), obj.clone());
                obj
            }
            None => {
                if let Some(m) = inner.objects.get_mut(type_key) {
                    m.remove(&key);
                }
                inner.applied.retain(|(g, p, n, name, _), _| {
                    !(g == &type_key.0 && p == &type_key.1 && n == &key.0 && name == &key.1)
                });
                let mut obj = deleted.unwrap_or_else(|| old.clone().unwrap_or(Value::Null));
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                obj
            }
        };
        let event = Arc::new(StoredEvent {
            rv,
            group: type_key.0.clone(),
            plural: type_key.1.clone(),
            namespace: key.0,
            kind,
            object: object.clone(),
            old: if kind == EventType::Modified {
                old
            } else {
                None
            },
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > self.config.history {
            if let Some(e) = inner.history.pop_front() {
                inner.compacted = e.rv;
            }
        }
        let _ = self.events.send(event);
        object
    }
}

#[cfg(test)]
mod tests;
