//! The in-memory object store: one global resourceVersion counter (like
//! etcd's revision), a bounded event history for watch resumption, and the
//! write paths (create, update, patch, delete) with their API semantics.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

use crate::controllers::ServiceAllocator;
use crate::events;
use crate::patch;
use crate::registry::{self, Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldCause};
use crate::validate;

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

/// RFC 3339 UTC time with second precision, as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// The object without metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion {s:?} is not valid: this server's resource versions are decimal integers"
        ))
    })
}

/// `configmaps` or `events.events.k8s.io`, as errors name a resource.
fn qualified_plural(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// Fills a written body's missing `apiVersion` and `kind` from the URL, as
/// kube-apiserver's decoder does (the URL's group, version and kind are its
/// defaults): clients that build bodies from typed models without them,
/// the Python client's among them, are served.
pub fn default_type_from_url(rt: &ResourceType, body: &mut Value) {
    let Some(o) = body.as_object_mut() else {
        return;
    };
    let missing = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if missing(o.get("kind")) {
        o.insert("kind".into(), json!(rt.kind));
    }
    if missing(o.get("apiVersion")) {
        o.insert("apiVersion".into(), json!(rt.api_version()));
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
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

    /// A body written at `rt` in the form the store keeps (events.k8s.io
    /// Events become core Events), and the apiVersion stored with it.
    fn to_storage(rt: &ResourceType, body: Value) -> (Value, String) {
        if events::is_events_v1(rt) {
            (events::events_v1_to_core(&body), "v1".to_string())
        } else {
            (body, rt.api_version())
        }
    }

    fn ns_key(rt: &ResourceType, ns: &str) -> String {
        if rt.namespaced {
            ns.to_string()
        } else {
            String::new()
        }
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

    fn check_body(rt: &ResourceType, ns: &str, body: &Value) -> ApiResult<()> {
        if !body.is_object() {
            return Err(ApiError::bad_request(format!(
                "the object provided is not a JSON object (must be of type {})",
                rt.kind
            )));
        }
        let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        if av.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' or 'apiVersion' is missing in the body (must be apiVersion {} kind {})",
                rt.api_version(),
                rt.kind
            )));
        }
        // kube-apiserver's decoder fails first on a kind it cannot convert
        // to the URL's, then compares the group/version.
        if kind != rt.kind {
            let version = av.rsplit_once('/').map_or(av, |(_, v)| v);
            return Err(ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {}: the body's kind {kind:?} is not the kind of {} (send it to its own resource, or fix its kind)",
                rt.kind,
                qualified_plural(rt)
            )));
        }
        if av != rt.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        if let Some(body_ns) = meta_str(body, "namespace")
            && rt.namespaced
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    fn validate(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
        let name = meta_str(obj, "name").unwrap_or("");
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(FieldCause {
                reason: "FieldValueRequired",
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            });
        } else if let Some(c) = validate::check_name(
            name,
            validate::name_rule(&rt.group, &rt.plural),
            "metadata.name",
        ) {
            causes.push(c);
        }
        if let Some(labels) = obj.pointer("/metadata/labels") {
            match labels.as_object() {
                Some(l) => causes.extend(validate::check_labels(l)),
                None if labels.is_null() => {}
                None => causes.push(FieldCause {
                    reason: "FieldValueInvalid",
                    field: "metadata.labels".into(),
                    message: "Invalid value: must be a map of strings".into(),
                }),
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.group, &rt.kind, name, causes))
        }
    }

    fn namespace_state(inner: &Inner, ns: &str) -> Option<bool> {
        inner
            .objects
            .get(&(String::new(), "namespaces".to_string()))
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
            .map(|o| o.pointer("/metadata/deletionTimestamp").is_some())
    }

    /// `create`. A body without apiVersion or kind gets the URL's.
    pub fn create(&self, rt: &ResourceType, ns: &str, mut body: Value) -> ApiResult<Value> {
        default_type_from_url(rt, &mut body);
        Self::check_body(rt, ns, &body)?;
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
        Self::normalize(rt, &mut body)?;
        Self::validate(rt, &body)?;
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

    fn defaults_on_create(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        body: &mut Value,
    ) -> ApiResult<()> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                body["status"] = json!({ "phase": "Active" });
            }
            ("", "pods") => {
                // As the real server: status is the kubelet's, written through /status.
                body["status"] = json!({ "phase": "Pending", "qosClass": "BestEffort" });
            }
            ("", "services") => {
                body["status"] = json!({ "loadBalancer": {} });
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
            _ if rt.custom && rt.status => {
                // Custom resources with a status subresource start without status.
                if let Some(o) = body.as_object_mut() {
                    o.remove("status");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Conversions the real server does on every write: a Secret's
    /// `stringData` is merged into `data` (base64) and never stored.
    fn normalize(rt: &ResourceType, body: &mut Value) -> ApiResult<()> {
        if rt.group.is_empty() && rt.plural == "secrets" {
            let name = meta_str(body, "name").unwrap_or("").to_string();
            let Some(o) = body.as_object_mut() else {
                return Ok(());
            };
            if let Some(sd) = o.remove("stringData") {
                let Some(sd) = sd.as_object() else {
                    return Err(ApiError::invalid(
                        "",
                        "Secret",
                        &name,
                        vec![FieldCause {
                            reason: "FieldValueInvalid",
                            field: "stringData".into(),
                            message: "Invalid value: must be a map of strings".into(),
                        }],
                    ));
                };
                let data = o.entry("data").or_insert_with(|| json!({}));
                if !data.is_object() {
                    *data = json!({});
                }
                for (k, v) in sd {
                    let text = v.as_str().ok_or_else(|| {
                        ApiError::invalid(
                            "",
                            "Secret",
                            &name,
                            vec![FieldCause {
                                reason: "FieldValueInvalid",
                                field: format!("stringData[{k}]"),
                                message: "Invalid value: must be a string".into(),
                            }],
                        )
                    })?;
                    data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            if o.get("type").is_none_or(Value::is_null) {
                o.insert("type".into(), json!("Opaque"));
            }
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // Every namespace carries its name as a label (selectable by policies).
            let name = meta_str(body, "name").unwrap_or("").to_string();
            let meta = meta_mut(body);
            if !meta.get("labels").is_some_and(Value::is_object) {
                meta.insert("labels".into(), json!({}));
            }
            meta["labels"]["kubernetes.io/metadata.name"] = json!(name);
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
        let types = registry::crd_types(crd).map_err(|msg| {
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
        default_type_from_url(rt, &mut body);
        Self::check_body(rt, ns, &body)?;
        let mut inner = self.lock();
        self.update_locked(&mut inner, rt, ns, name, body, status)
    }

    fn current(inner: &Inner, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        inner
            .objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(Self::ns_key(rt, ns), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    fn update_locked(
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
        Self::normalize(rt, &mut body)?;
        Self::validate(rt, &body)?;
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
                Self::check_body(rt, ns, &applied)?;
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
        Self::check_body(rt, ns, &patched)?;
        self.update_locked(&mut inner, rt, ns, name, patched, status)
    }

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

    fn namespace_is_empty(inner: &Inner, ns: &str) -> bool {
        inner
            .objects
            .values()
            .all(|m| !m.keys().any(|(n, _)| n == ns))
    }

    fn empty_namespace(&self, inner: &mut Inner, ns: &str) {
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

    fn remove_locked(
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
            && let Ok(types) = registry::crd_types(&gone)
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

#[cfg(test)]
mod tests;
