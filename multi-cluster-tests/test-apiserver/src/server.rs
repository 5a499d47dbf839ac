//! HTTP handling: authentication, routing of Kubernetes API paths, request
//! decoding, and watch streams.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::{EventType, ListOptions, Store, StoredEvent};
use crate::table::IncludeObject;

/// Body type of every response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Per-server request handling state.
#[derive(Debug)]
pub struct App {
    /// The object store.
    pub store: Arc<Store>,
    /// Bearer token clients must present.
    pub token: String,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("static response parts are valid")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

#[derive(Debug, Default)]
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query {
            pairs: q
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    /// A boolean parameter, decoded as kube-apiserver does.
    fn flag(&self, k: &str) -> bool {
        crate::query::kube_bool(self.get(k))
    }
}

/// Where a resource request points.
#[derive(Debug)]
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Handles one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    tracing::debug!(%method, %path, query = req.uri().query().unwrap_or(""), "request");
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"ok")).boxed_unsync())
            .expect("static response"));
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == app.token);
    if !authorized {
        return Ok(error_response(&ApiError::unauthorized()));
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            ))));
        }
    };
    let resp = match route(&app, &method, &path, &query, &content_type, &accept, &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, reason = e.reason, message = %e.message, "request failed");
            error_response(&e)
        }
    };
    Ok(resp)
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-meshwork-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none (mesh-test-apiserver)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

fn route(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    query: &Query,
    content_type: &str,
    accept: &str,
    body: &Bytes,
) -> ApiResult<Response<Body>> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let registry = app.store.registry();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(json_response(200, &version())),
        ["api"] => return Ok(json_response(200, &registry.core_versions())),
        ["apis"] => return Ok(json_response(200, &registry.group_list())),
        ["api", "v1"] => {
            return registry
                .resource_list("", "v1")
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["apis", g] => {
            return registry
                .group(g)
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["apis", g, v] => {
            return registry
                .resource_list(g, v)
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["openapi", "v3"] => {
            return Ok(json_response(
                200,
                &registry.openapi_v3_root(app.store.registry_revision()),
            ));
        }
        ["openapi", "v3", "api", v] => {
            return registry
                .openapi_v3_gv("", v)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["openapi", "v3", "apis", g, v] => {
            return registry
                .openapi_v3_gv(g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let lookup = |plural: &str| registry.get(group, version, plural).cloned();
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|t| t.namespaced) => {
            let rt = lookup(plural).expect("checked above");
            match tail {
                [] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: None,
                    subresource: None,
                },
                [name] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: None,
                },
                [name, sub] => Target {
                    rt,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    subresource: Some(sub.to_string()),
                },
                _ => return Err(ApiError::no_route(path)),
            }
        }
        [plural, tail @ ..] => {
            let rt = lookup(plural).ok_or_else(|| ApiError::no_route(path))?;
            match tail {
                [] => Target {
                    rt,
                    namespace: None,
                    name: None,
                    subresource: None,
                },
                [name] if !rt.namespaced => Target {
                    rt,
                    namespace: None,
                    name: Some(name.to_string()),
                    subresource: None,
                },
                [name, sub] if !rt.namespaced => Target {
                    rt,
                    namespace: None,
                    name: Some(name.to_string()),
                    subresource: Some(sub.to_string()),
                },
                _ => return Err(ApiError::no_route(path)),
            }
        }
        _ => return Err(ApiError::no_route(path)),
    };
    let status = match target.subresource.as_deref() {
        None => false,
        Some("status") if target.rt.status => true,
        Some("finalize") if target.rt.plural == "namespaces" => false,
        Some("scale") if target.rt.is_workload() => false,
        Some(sub) => {
            return Err(ApiError::no_route(&format!(
                "{path} (subresource {sub:?} is not served)"
            )));
        }
    };
    let dry_run = match query.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun {other:?} is not valid: the only allowed value is \"All\""
            )));
        }
    };
    // A dry run acts on a throwaway copy of the state: same validation and
    // defaults, nothing stored, no events.
    let scratch = (dry_run && *method != Method::GET).then(|| app.store.scratch_copy());
    let store = scratch.as_ref().unwrap_or(&app.store);
    let rt = &target.rt;
    let ns = target.namespace.as_deref().unwrap_or("");
    let table = accept.contains("as=Table");
    let include = IncludeObject::parse(query.get("includeObject"));
    let metadata_only = !table && accept.contains("as=PartialObjectMetadata");
    if let (Some("scale"), Some(name)) = (target.subresource.as_deref(), target.name.as_deref()) {
        let scale = crate::scale::serve_scale(store, method, rt, ns, name, content_type, body)?;
        return Ok(json_response(200, &scale));
    }
    match (method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").unwrap_or("")).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse labelSelector: {e}"))
                })?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").unwrap_or("")).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse fieldSelector: {e}"))
                })?;
            let fields = crate::store::events::core_field_selector(rt, fields);
            if query.flag("watch") {
                return watch(
                    app,
                    rt.clone(),
                    target.namespace.clone(),
                    labels,
                    fields,
                    query,
                    if table {
                        Shape::Table(include)
                    } else if metadata_only {
                        Shape::Metadata
                    } else {
                        Shape::Full
                    },
                );
            }
            let limit = match query.get("limit") {
                Some(l) => l
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))?,
                None => 0,
            };
            let opts = ListOptions {
                labels,
                fields,
                limit,
                continue_token: query
                    .get("continue")
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            };
            let list = store.list(rt, target.namespace.as_deref(), &opts)?;
            Ok(json_response(
                200,
                &if table {
                    crate::table::list_table(rt, &list, include)
                } else if metadata_only {
                    crate::table::partial_list(&list)
                } else {
                    list
                },
            ))
        }
        (&Method::GET, Some(name)) => {
            let obj = store.get(rt, ns, name)?;
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(json_response(
                200,
                &if table {
                    crate::table::table(rt, std::slice::from_ref(&obj), &rv, include, true)
                } else if metadata_only {
                    crate::table::partial(&obj)
                } else {
                    obj
                },
            ))
        }
        (&Method::POST, None) => {
            let obj = decode(body, content_type)?;
            Ok(json_response(201, &store.create(rt, ns, obj)?))
        }
        (&Method::PUT, Some(name)) => {
            let obj = decode(body, content_type)?;
            Ok(json_response(
                200,
                &store.update(rt, ns, name, obj, status)?,
            ))
        }
        (&Method::PATCH, Some(name)) => {
            let existed = store.get(rt, ns, name).is_ok();
            let out = store.patch(
                rt,
                ns,
                name,
                content_type,
                body,
                status,
                query.get("fieldManager"),
            )?;
            Ok(json_response(if existed { 200 } else { 201 }, &out))
        }
        (&Method::DELETE, Some(name)) => {
            let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                decode(body, content_type)?
            };
            let precondition = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str);
            let policy = crate::store::Propagation::parse(
                opts.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .or(query.get("propagationPolicy")),
                opts.get("orphanDependents").and_then(Value::as_bool),
            )?;
            Ok(json_response(
                200,
                &store.delete_propagating(rt, ns, name, precondition, policy)?,
            ))
        }
        (&Method::DELETE, None) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").unwrap_or("")).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse labelSelector: {e}"))
                })?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").unwrap_or("")).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse fieldSelector: {e}"))
                })?;
            let fields = crate::store::events::core_field_selector(rt, fields);
            let opts = ListOptions {
                labels,
                fields,
                ..Default::default()
            };
            let list = store.list(rt, target.namespace.as_deref(), &opts)?;
            let mut deleted = Vec::new();
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let item_ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match store.delete(rt, item_ns, name, None) {
                    Ok(o) => deleted.push(o),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let mut out = list;
            out["items"] = json!(deleted);
            Ok(json_response(200, &out))
        }
        _ => Err(ApiError::method_not_allowed(&format!("{method} {path}"))),
    }
}

/// Decodes a JSON or YAML body; malformed input is a 400.
fn decode(body: &Bytes, content_type: &str) -> ApiResult<Value> {
    if content_type.contains("protobuf") {
        return crate::protobuf::decode(body).ok_or_else(|| {
            ApiError::unsupported_media_type(&format!(
                "{content_type}: this test server decodes protobuf only for Namespace, ConfigMap, Secret, ServiceAccount and Deployment (containers with image, command, args, ports, env, resources); send JSON"
            ))
        });
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": obj })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    app: &Arc<App>,
    rt: ResourceType,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &Query,
    shape: Shape,
) -> ApiResult<Response<Body>> {
    let send_initial = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    match app
        .store
        .watch(&rt, query.get("resourceVersion"), send_initial)
    {
        Err(e) if e.code == 410 => {
            // Like the real server: 200, then one ERROR event with the 410 Status.
            let line = event_line("ERROR", &e.to_status());
            let _ = tx.try_send(line);
        }
        Err(e) => return Err(e),
        Ok(start) => {
            let app = app.clone();
            tokio::spawn(async move {
                let w = Watcher {
                    app,
                    rt,
                    ns,
                    labels,
                    fields,
                    bookmarks,
                    tx,
                    shape,
                    columns_sent: AtomicBool::new(false),
                };
                w.run(start, send_initial, timeout).await;
            });
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("static response parts"))
}

struct Watcher {
    app: Arc<App>,
    rt: ResourceType,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
    shape: Shape,
    columns_sent: AtomicBool,
}

/// How watch events carry their objects.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The object.
    Full,
    /// `PartialObjectMetadata`.
    Metadata,
    /// A one-row Table.
    Table(IncludeObject),
}

impl Watcher {
    async fn send(&self, b: Bytes) -> bool {
        self.tx.send(b).await.is_ok()
    }

    async fn deliver(&self, ev: &StoredEvent) -> bool {
        match Store::filter_event(ev, &self.rt, self.ns.as_deref(), &self.labels, &self.fields) {
            Some((kind, obj)) => self.send_object(kind, &obj).await,
            None => true,
        }
    }

    /// Sends an object event, as a one-row Table when the client asked for
    /// tables (column definitions only in the first, as the real server does).
    async fn send_object(&self, kind: EventType, obj: &Value) -> bool {
        let line = match self.shape {
            Shape::Table(include) => {
                let first = !self.columns_sent.swap(true, Ordering::Relaxed);
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                event_line(
                    kind.as_str(),
                    &crate::table::table(&self.rt, std::slice::from_ref(obj), rv, include, first),
                )
            }
            Shape::Metadata => event_line(kind.as_str(), &crate::table::partial(obj)),
            Shape::Full => event_line(kind.as_str(), obj),
        };
        self.send(line).await
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        event_line(
            "BOOKMARK",
            &json!({ "kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta }),
        )
    }

    async fn gone(&self, why: &str) {
        self.app.store.note_gone();
        let _ = self
            .send(event_line(
                "ERROR",
                &ApiError::gone(why.to_string()).to_status(),
            ))
            .await;
    }

    async fn run(self, mut start: crate::store::WatchStart, send_initial: bool, timeout: Duration) {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for obj in &start.initial {
            let in_ns = self.ns.as_deref().is_none_or(|n| {
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    == n
            });
            if in_ns && Store::selected(&self.rt, obj, &self.labels, &self.fields) {
                let shown = Store::present(&self.rt, obj);
                if !self
                    .send(event_line(EventType::Added.as_str(), &shown))
                    .await
                {
                    return;
                }
            }
        }
        if send_initial && self.bookmarks && !self.send(self.bookmark(start.rv, true)).await {
            return;
        }
        let mut seen = start.rv;
        for ev in &start.backlog {
            if !self.deliver(ev).await {
                return;
            }
        }
        let mut ticker = tokio::time::interval(self.app.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = start.live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= start.rv { continue; }
                        seen = seen.max(ev.rv);
                        if !self.deliver(&ev).await { return; }
                    }
                    Err(RecvError::Lagged(n)) => {
                        self.gone(&format!("watch fell behind by {n} events; list again")).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    let now = self.app.store.revision();
                    loop {
                        match start.live.try_recv() {
                            Ok(ev) => {
                                if ev.rv <= start.rv { continue; }
                                seen = seen.max(ev.rv);
                                if !self.deliver(&ev).await { return; }
                            }
                            Err(TryRecvError::Lagged(n)) => {
                                self.gone(&format!("watch fell behind by {n} events; list again")).await;
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    seen = seen.max(now);
                    if !self.send(self.bookmark(seen, false)).await { return; }
                }
                _ = start.closer.changed() => return,
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}
