//! The agent's local API: HTTP/JSON on a unix socket (for mesh-cni and
//! meshctl), and Prometheus `/metrics` on a TCP address.
//!
//! | method | path | |
//! | --- | --- | --- |
//! | GET | `/healthz` | `ok` |
//! | GET | `/v1/status` | [`AgentStatus`] |
//! | GET | `/v1/endpoints` | list of [`Endpoint`] |
//! | POST | `/v1/endpoints` | register an [`EndpointRegistration`]; 201 + the endpoint |
//! | DELETE | `/v1/endpoints/{container_id}/{ifname}` | 200 + the endpoint, 404 when unknown |
//! | GET | `/v1/services` | the service frontends + backends the datapath holds |
//! | PUT | `/v1/services` | replace the services of the `local-api` source ([`ServiceEntry`] list) |
//! | GET | `/v1/ipcache` | the ipcache entries the datapath holds |
//! | PUT | `/v1/ipcache` | replace the ipcache entries of the `local-api` source |
//! | GET | `/v1/flows` | recent [`FlowRecord`]s matching a [`FlowFilter`] (query parameters); `follow=true` streams NDJSON |
//! | GET | `/v1/nodes` | the nodes of every cluster the mesh feed holds (`NodeRecord`s) |
//! | GET | `/v1/policies` | the compiled policy of every endpoint ([`EndpointPolicyReport`]) |
//! | GET | `/v1/encryption` | [`EncryptionReport`]: mode, device, key, peers with last handshake |
//! | POST | `/v1/encryption/rotate-key` | new WireGuard key, published on the Node by the node controller ([`RotatedKey`], once its first attempt is done); 409 when encryption is off |
//!
//! The `local-api` source is how desired state gets in before the
//! Kubernetes and mesh feeds exist (and for tests and debugging); it goes
//! through the same reconciler as every other source.
//!
//! Errors are JSON `{"error": <message>, "reason": <kebab-case word>}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use ipnet::IpNet;

use crate::config::AgentConfig;
use crate::datapath::{IpcacheEntry, ServiceEntry};
use crate::endpoint::{Endpoint, EndpointRegistration};
use crate::error::Error;
use crate::flows::{FlowFilter, FlowLog, FlowRecord};
use crate::metrics::Metrics;
use crate::node_controller::annotations::{Outcome, Wanted};
use crate::reconcile::ReconcileReport;
use crate::shared_manager::SharedManager;
use crate::status::StatusFeeds;

/// The shapes this API serves (crate mesh-agent-api, which clients use).
pub use crate::status::{
    AgentStatus, ApplyReport, EncryptionReport, EndpointPolicyReport, RotatedKey,
};

/// How long `rotate-key` waits for the node controller's first attempt to
/// publish the new key before answering.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared state of the API handlers: the endpoint manager (shared with the
/// controllers) and what the controllers publish.
pub struct AgentState {
    config: AgentConfig,
    shared: Arc<SharedManager>,
    status: StatusFeeds,
    metrics_address: Mutex<Option<SocketAddr>>,
    flows: Arc<FlowLog>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AgentState {
    /// State over the shared endpoint manager and the controllers' state.
    pub fn new(config: AgentConfig, shared: Arc<SharedManager>, status: StatusFeeds) -> Arc<Self> {
        Arc::new(AgentState {
            config,
            shared,
            status,
            metrics_address: Mutex::new(None),
            flows: Arc::new(FlowLog::new(crate::flows::DEFAULT_CAPACITY)),
        })
    }

    /// The log of recent flows (`/v1/flows`).
    pub fn flows(&self) -> &Arc<FlowLog> {
        &self.flows
    }

    /// What names flow addresses right now: the local endpoints and every
    /// node the mesh feed knows (plus this node's pod CIDR).
    pub fn flow_resolver(&self) -> crate::flows::Resolver {
        let node = self.config.node_name.to_string();
        let cluster = self.config.cluster_name.to_string();
        let pods = self
            .shared
            .lock()
            .list()
            .into_iter()
            .flat_map(|ep| {
                let r = ep.registration;
                r.ips
                    .into_iter()
                    .map(move |ip| (ip, r.pod_namespace.clone(), r.pod_name.clone()))
            })
            .collect();
        let mut cidrs: Vec<(IpNet, String, String)> = self
            .config
            .pod_cidr
            .map(|c| (c, cluster.clone(), node.clone()))
            .into_iter()
            .collect();
        if let Some(mesh) = &self.status.mesh {
            for n in mesh.nodes() {
                for c in &n.pod_cidrs {
                    cidrs.push((*c, n.cluster.to_string(), n.name.to_string()));
                }
            }
        }
        crate::flows::Resolver {
            node,
            cluster,
            pods,
            cidrs,
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        self.shared.metrics()
    }

    /// Records where `/metrics` ended up listening.
    pub fn set_metrics_address(&self, addr: SocketAddr) {
        *self.metrics_address.lock().expect("lock") = Some(addr);
    }

    /// The controllers' state.
    pub fn status_feeds(&self) -> &StatusFeeds {
        &self.status
    }

    fn status(&self) -> AgentStatus {
        let feeds = &self.status;
        let pod_cidr = self.config.pod_cidr;
        let (datapath, endpoints) = {
            let mgr = self.shared.lock();
            (mgr.datapath().kind().to_string(), mgr.list().len())
        };
        AgentStatus {
            cluster_name: self.config.cluster_name.to_string(),
            cluster_id: self.config.cluster_id.get(),
            node_name: self.config.node_name.to_string(),
            pod_cidr,
            datapath,
            endpoints,
            metrics_address: *self.metrics_address.lock().expect("lock"),
            version: env!("CARGO_PKG_VERSION").to_string(),
            mesh_feed: feeds.mesh.as_ref().map(|m| m.status()),
            routing: feeds.routing(),
            encryption: feeds.encryption().map(|e| e.status()),
            policy: feeds.policy(),
            mtu: feeds.mtu,
        }
    }
}

/// An API error: status, reason word, message.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.2, "reason": self.1 });
        (self.0, Json(body)).into_response()
    }
}

fn api_error(state: &AgentState, err: &Error) -> ApiError {
    let (status, reason) = match err {
        Error::InvalidEndpoint { .. } => (StatusCode::BAD_REQUEST, "invalid-endpoint"),
        Error::EndpointIdsExhausted { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "endpoint-ids-exhausted")
        }
        Error::Datapath { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "datapath"),
        Error::DeviceStopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "device-stopped"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "state"),
    };
    state.metrics().error(reason);
    ApiError(status, reason, err.to_string())
}

/// The router of the unix-socket API.
pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route("/v1/endpoints", get(list).post(register))
        .route("/v1/endpoints/{container_id}/{ifname}", delete(deregister))
        .route("/v1/services", get(services).put(put_services))
        .route("/v1/ipcache", get(ipcache).put(put_ipcache))
        .route("/v1/flows", get(flows))
        .route("/v1/policies", get(policies))
        .route("/v1/nodes", get(nodes))
        .route("/v1/encryption", get(encryption))
        .route("/v1/encryption/rotate-key", axum::routing::post(rotate_key))
        .with_state(state)
}

/// The router of the metrics listener.
pub fn metrics_router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn status(State(state): State<Arc<AgentState>>) -> Json<AgentStatus> {
    Json(state.status())
}

async fn list(State(state): State<Arc<AgentState>>) -> Json<Vec<Endpoint>> {
    Json(state.shared.lock().list())
}

async fn register(
    State(state): State<Arc<AgentState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    let reg: EndpointRegistration = decode(&state, "an endpoint registration", &body)?;
    let result = state.shared.lock().register(reg.clone());
    match result {
        Ok(ep) => {
            state.metrics().registration();
            state.shared.endpoints_changed();
            tracing::info!(
                container = %reg.container_id, ifname = %reg.ifname, id = ep.id, ips = ?reg.ips,
                pod = ?reg.pod_name, namespace = ?reg.pod_namespace, "endpoint registered"
            );
            Ok((StatusCode::CREATED, Json(ep)))
        }
        Err(e) => {
            tracing::warn!(container = %reg.container_id, error = %e, "endpoint registration refused");
            Err(api_error(&state, &e))
        }
    }
}

async fn deregister(
    State(state): State<Arc<AgentState>>,
    Path((container_id, ifname)): Path<(String, String)>,
) -> Result<Json<Endpoint>, ApiError> {
    let result = state.shared.lock().deregister(&container_id, &ifname);
    match result {
        Ok(Some(ep)) => {
            state.metrics().deregistration();
            state.shared.endpoints_changed();
            tracing::info!(container = %container_id, %ifname, id = ep.id, "endpoint deregistered");
            Ok(Json(ep))
        }
        Ok(None) => Err(ApiError(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("endpoint {container_id}/{ifname} is not registered"),
        )),
        Err(e) => Err(api_error(&state, &e)),
    }
}

/// The source name of desired state set through this API.
pub const LOCAL_API_SOURCE: &str = "local-api";

impl From<&ReconcileReport> for ApplyReport {
    fn from(r: &ReconcileReport) -> Self {
        ApplyReport {
            upserted: r.upserted.iter().map(ToString::to_string).collect(),
            removed: r.removed.iter().map(ToString::to_string).collect(),
            failed: r.failed.iter().map(|(o, e)| format!("{o}: {e}")).collect(),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    state: &AgentState,
    what: &str,
    body: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        state.metrics().error("bad-request");
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("body is not {what}: {e}"),
        )
    })
}

fn invalid(state: &AgentState, message: String) -> ApiError {
    state.metrics().error("invalid-service");
    ApiError(StatusCode::BAD_REQUEST, "invalid-service", message)
}

async fn services(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<Vec<ServiceEntry>>, ApiError> {
    let mgr = state.shared.lock();
    mgr.datapath()
        .services()
        .map(Json)
        .map_err(|e| api_error(&state, &e))
}

async fn put_services(
    State(state): State<Arc<AgentState>>,
    body: axum::body::Bytes,
) -> Result<Json<ApplyReport>, ApiError> {
    let services: Vec<ServiceEntry> =
        decode(&state, "a list of services (frontend, backends)", &body)?;
    let mut seen = std::collections::BTreeSet::new();
    for s in &services {
        let fe = &s.frontend;
        let name = format!("service {}:{}/{}", fe.ip, fe.port, fe.protocol);
        if fe.port == 0 {
            return Err(invalid(
                &state,
                format!("{name}: port 0 is not a service port; use 1-65535"),
            ));
        }
        if !seen.insert(*fe) {
            return Err(invalid(
                &state,
                format!("{name} is listed twice; give each frontend once"),
            ));
        }
        if let Some(b) = s.backends.iter().find(|b| b.port == 0) {
            return Err(invalid(
                &state,
                format!("{name}: backend {} has port 0; use 1-65535", b.ip),
            ));
        }
    }
    let mut mgr = state.shared.lock();
    mgr.reconciler().set_services(LOCAL_API_SOURCE, services);
    let start = std::time::Instant::now();
    let report = mgr.reconcile();
    state.metrics().reconcile(start.elapsed());
    Ok(Json(ApplyReport::from(&report)))
}

async fn ipcache(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<Vec<IpcacheEntry>>, ApiError> {
    let mgr = state.shared.lock();
    mgr.datapath()
        .ipcache()
        .map(Json)
        .map_err(|e| api_error(&state, &e))
}

async fn put_ipcache(
    State(state): State<Arc<AgentState>>,
    body: axum::body::Bytes,
) -> Result<Json<ApplyReport>, ApiError> {
    let entries: Vec<IpcacheEntry> = decode(&state, "a list of ipcache entries", &body)?;
    let mut mgr = state.shared.lock();
    mgr.reconciler().set_ipcache(LOCAL_API_SOURCE, entries);
    let start = std::time::Instant::now();
    let report = mgr.reconcile();
    state.metrics().reconcile(start.elapsed());
    Ok(Json(ApplyReport::from(&report)))
}

async fn flows(
    State(state): State<Arc<AgentState>>,
    query: Result<axum::extract::Query<FlowFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = match query {
        Ok(q) => q.0,
        Err(e) => {
            state.metrics().error("bad-request");
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!(
                    "bad flow filter ({e}); parameters: namespace, pod, identity (number), verdict ({}), cluster, since (ms since the epoch), last (number), follow (true/false)",
                    crate::flows::Verdict::ALL.map(|v| v.name()).join(", ")
                ),
            ));
        }
    };
    if !filter.follow {
        return Ok(Json(state.flows.query(&filter)).into_response());
    }
    // Subscribe before reading the backlog: a flow pushed in between is
    // sent twice rather than lost.
    let rx = state.flows.subscribe();
    let backlog = if filter.last.is_some() {
        state.flows.query(&filter)
    } else {
        Vec::new()
    };
    let line = |f: &FlowRecord| {
        let mut v = serde_json::to_vec(f).expect("flow serializes");
        v.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(v))
    };
    let head = futures::stream::iter(backlog.iter().map(line).collect::<Vec<_>>());
    let live = futures::stream::unfold((rx, filter), move |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(f) if filter.matches(&f) => return Some((line(&f), (rx, filter))),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "a flow follower fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt as _;
    Ok((
        [("content-type", "application/x-ndjson")],
        axum::body::Body::from_stream(head.chain(live)),
    )
        .into_response())
}

async fn nodes(State(state): State<Arc<AgentState>>) -> Json<Vec<mesh_api::NodeRecord>> {
    Json(
        state
            .status
            .mesh
            .as_ref()
            .map(|m| m.nodes())
            .unwrap_or_default(),
    )
}

async fn policies(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<Vec<EndpointPolicyReport>>, ApiError> {
    let names: std::collections::BTreeMap<u32, String> = state
        .status
        .policy
        .borrow()
        .rules
        .iter()
        .map(|r| (r.id, r.to_string()))
        .collect();
    let mgr = state.shared.lock();
    let mut held = mgr
        .datapath()
        .policies()
        .map_err(|e| api_error(&state, &e))?;
    let reports = mgr
        .list()
        .into_iter()
        .map(|ep| {
            let policy = held.remove(&ep.id).unwrap_or_default();
            let rules = policy
                .allow
                .iter()
                .chain(&policy.deny)
                .filter_map(|a| names.get(&a.rule).map(|n| (a.rule, n.clone())))
                .collect();
            (ep, policy, rules)
        })
        .map(|(ep, policy, rules)| EndpointPolicyReport {
            endpoint_id: ep.id,
            policy,
            rules,
            namespace: ep.registration.pod_namespace,
            pod: ep.registration.pod_name,
            ips: ep.registration.ips,
            identity: ep.identity,
        })
        .collect();
    Ok(Json(reports))
}

async fn encryption(State(state): State<Arc<AgentState>>) -> Json<EncryptionReport> {
    let device = state.status.encryption().map(|e| e.status());
    let strict_mode = state.status.routing.borrow().strict_mode;
    Json(EncryptionReport {
        node: state.config.node_name.to_string(),
        cluster: state.config.cluster_name.to_string(),
        mode: if device.is_some() {
            "wireguard".into()
        } else {
            "off".into()
        },
        strict_mode,
        node_encryption: state.config.node_encryption,
        device,
    })
}

async fn rotate_key(State(state): State<Arc<AgentState>>) -> Result<Json<RotatedKey>, ApiError> {
    let Some(enc) = state.status.encryption() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "encryption-off",
            format!(
                "encryption is off on node {}: nothing to rotate (enable encryption.enabled)",
                state.config.node_name
            ),
        ));
    };
    let (old, new) = tokio::task::spawn_blocking(move || enc.rotate_key())
        .await
        .expect("rotation task")
        .map_err(|e| api_error(&state, &e))?;
    // The node controller publishes the new key (woken by the rotation);
    // the answer says how its first attempt went.
    let publish_error = match state.status.key_annotation.clone() {
        None => Some("no Kubernetes access: the key cannot be published".to_string()),
        Some(mut rx) => {
            let want = Wanted::Set(new.to_string());
            let first = tokio::time::timeout(
                PUBLISH_WAIT,
                rx.wait_for(|s| s.wanted == want && s.outcome != Outcome::Pending),
            )
            .await;
            match first {
                Ok(Ok(s)) => match &s.outcome {
                    Outcome::Failed(e) => Some(e.clone()),
                    Outcome::Pending | Outcome::Written => None,
                },
                Ok(Err(_)) => Some("the node controller stopped: the key is not published".into()),
                Err(_) => Some(format!(
                    "the key is not on the Node after {} s; still retrying",
                    PUBLISH_WAIT.as_secs()
                )),
            }
        }
    };
    Ok(Json(RotatedKey {
        node: state.config.node_name.to_string(),
        old_public_key: old.to_string(),
        new_public_key: new.to_string(),
        published: publish_error.is_none(),
        publish_error,
    }))
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let gauges = {
        let mgr = state.shared.lock();
        let dp = mgr.datapath();
        crate::metrics::Gauges {
            endpoints: mgr.list().len(),
            services: dp.services().map(|v| v.len()).unwrap_or(0),
            ipcache_entries: dp.ipcache().map(|v| v.len()).unwrap_or(0),
            packets: dp.packet_counters().unwrap_or_default(),
            maps: dp.map_usage().unwrap_or_default(),
        }
    };
    let feeds = &state.status;
    let mut text = state.metrics().render(&gauges);
    text.push_str(&crate::metrics::render_feeds(
        feeds.mesh.as_ref().map(|m| m.status()).as_ref(),
        feeds.encryption().map(|e| e.status()).as_ref(),
        &feeds.routing(),
    ));
    text.push_str(&crate::metrics::render_flows(state.flows.total()));
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// Binds the unix socket: creates its directory, and replaces a stale
/// socket file left by a dead agent, but refuses to steal the socket of a
/// live one.
pub fn bind_unix(path: &std::path::Path) -> crate::Result<tokio::net::UnixListener> {
    let listen_err = |source| Error::Listen {
        address: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(listen_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another node-agent is serving this socket; stop it or use another --agent-socket",
            )));
        }
        std::fs::remove_file(path)
            .map_err(Error::io("remove stale socket", PathBuf::from(path)))?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen_err)?;
    // Only root (the CNI plugin, meshctl) may talk to the agent.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("set permissions of", PathBuf::from(path)))?;
    Ok(listener)
}
