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
use axum::routing::{delete, get, post};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::datapath::{Datapath, IpcacheEntry, ServiceEntry};
use crate::endpoint::{Endpoint, EndpointManager, EndpointRegistration};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::reconcile::ReconcileReport;

/// What `GET /v1/status` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster id.
    pub cluster_id: u8,
    /// Node name.
    pub node_name: String,
    /// The node's pod CIDR (what mesh-cni allocates from), if known.
    pub pod_cidr: Option<IpNet>,
    /// Which datapath implementation is attached ("memory": no eBPF yet).
    pub datapath: String,
    /// Number of endpoints.
    pub endpoints: usize,
    /// Where `/metrics` is served.
    pub metrics_address: Option<SocketAddr>,
    /// Agent version.
    pub version: String,
    /// The mesh feed (absent without `--mesh-apiserver-address`).
    #[serde(default)]
    pub mesh_feed: Option<crate::feed::mesh::MeshFeedStatus>,
    /// Routes to other nodes.
    #[serde(default)]
    pub routing: crate::node_sync::RoutingStatus,
    /// Encryption and WireGuard peers (absent when off).
    #[serde(default)]
    pub encryption: Option<crate::encryption::EncryptionStatus>,
}

/// The agent's long-lived parts beyond the endpoint manager, shown in
/// status and metrics.
#[derive(Debug, Default)]
pub struct Feeds {
    /// The mesh feed.
    pub mesh: Option<Arc<crate::feed::mesh::MeshFeed>>,
    /// The WireGuard device (changes when encryption is toggled at runtime).
    pub encryption: Mutex<Option<Arc<crate::encryption::Encryption>>>,
    /// The node controller's state.
    pub routing: Mutex<crate::node_sync::RoutingStatus>,
}

impl Feeds {
    /// The WireGuard device, while encryption is on.
    pub fn encryption(&self) -> Option<Arc<crate::encryption::Encryption>> {
        self.encryption.lock().expect("encryption lock").clone()
    }

    /// Records the device the node controller now runs (None: encryption off).
    pub fn set_encryption(&self, enc: Option<Arc<crate::encryption::Encryption>>) {
        *self.encryption.lock().expect("encryption lock") = enc;
    }
}

/// Shared state of the API handlers.
pub struct AgentState {
    config: AgentConfig,
    manager: Mutex<EndpointManager<Box<dyn Datapath>>>,
    metrics: Metrics,
    metrics_address: Mutex<Option<SocketAddr>>,
    feeds: Mutex<Arc<Feeds>>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AgentState {
    /// State over an opened endpoint manager.
    pub fn new(config: AgentConfig, manager: EndpointManager<Box<dyn Datapath>>) -> Arc<Self> {
        Arc::new(AgentState {
            config,
            manager: Mutex::new(manager),
            metrics: Metrics::default(),
            metrics_address: Mutex::new(None),
            feeds: Mutex::default(),
        })
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records where `/metrics` ended up listening.
    pub fn set_metrics_address(&self, addr: SocketAddr) {
        *self.metrics_address.lock().expect("lock") = Some(addr);
    }

    /// Attaches the feeds shown in status and metrics.
    pub fn set_feeds(&self, feeds: Arc<Feeds>) {
        *self.feeds.lock().expect("lock") = feeds;
    }

    /// The attached feeds.
    pub fn feeds(&self) -> Arc<Feeds> {
        self.feeds.lock().expect("lock").clone()
    }

    /// Replaces what `source` wants in the service maps and reconciles
    /// (used by the Kubernetes service feed).
    pub fn set_services(&self, source: &str, services: Vec<ServiceEntry>) {
        self.manager
            .lock()
            .expect("manager lock")
            .reconciler()
            .set_services(source, services);
        self.reconcile();
    }

    /// Runs one reconcile pass and counts its failures.
    pub fn reconcile(&self) {
        let report = self.manager.lock().expect("manager lock").reconcile();
        self.metrics.reconcile();
        for (object, err) in &report.failed {
            self.metrics.error("datapath-update");
            tracing::warn!(%object, error = %err, "datapath update failed; will retry");
        }
    }

    fn status(&self) -> AgentStatus {
        let feeds = self.feeds();
        let pod_cidr = self.config.pod_cidr;
        let mgr = self.manager.lock().expect("manager lock");
        AgentStatus {
            cluster_name: self.config.cluster_name.to_string(),
            cluster_id: self.config.cluster_id.get(),
            node_name: self.config.node_name.to_string(),
            pod_cidr,
            datapath: mgr.datapath().kind().to_string(),
            endpoints: mgr.list().len(),
            metrics_address: *self.metrics_address.lock().expect("lock"),
            version: env!("CARGO_PKG_VERSION").to_string(),
            mesh_feed: feeds.mesh.as_ref().map(|m| m.status()),
            routing: feeds.routing.lock().expect("lock").clone(),
            encryption: feeds.encryption().map(|e| e.status()),
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
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "state"),
    };
    state.metrics.error(reason);
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
        .route("/v1/encryption/rotate-key", post(rotate_key))
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
    Json(state.manager.lock().expect("manager lock").list())
}

async fn register(
    State(state): State<Arc<AgentState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    let reg: EndpointRegistration = decode(&state, "an endpoint registration", &body)?;
    let result = state
        .manager
        .lock()
        .expect("manager lock")
        .register(reg.clone());
    match result {
        Ok(ep) => {
            state.metrics.registration();
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
    let result = state
        .manager
        .lock()
        .expect("manager lock")
        .deregister(&container_id, &ifname);
    match result {
        Ok(Some(ep)) => {
            state.metrics.deregistration();
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

/// What a PUT of desired state answers: how the reconcile went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Objects written.
    pub upserted: Vec<String>,
    /// Objects removed.
    pub removed: Vec<String>,
    /// Objects the datapath refused, with the reason (retried periodically).
    pub failed: Vec<String>,
}

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
        state.metrics.error("bad-request");
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("body is not {what}: {e}"),
        )
    })
}

fn invalid(state: &AgentState, message: String) -> ApiError {
    state.metrics.error("invalid-service");
    ApiError(StatusCode::BAD_REQUEST, "invalid-service", message)
}

async fn services(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<Vec<ServiceEntry>>, ApiError> {
    let mgr = state.manager.lock().expect("manager lock");
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
    let mut mgr = state.manager.lock().expect("manager lock");
    mgr.reconciler().set_services(LOCAL_API_SOURCE, services);
    let report = mgr.reconcile();
    state.metrics.reconcile();
    Ok(Json(ApplyReport::from(&report)))
}

async fn ipcache(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<Vec<IpcacheEntry>>, ApiError> {
    let mgr = state.manager.lock().expect("manager lock");
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
    let mut mgr = state.manager.lock().expect("manager lock");
    mgr.reconciler().set_ipcache(LOCAL_API_SOURCE, entries);
    let report = mgr.reconcile();
    state.metrics.reconcile();
    Ok(Json(ApplyReport::from(&report)))
}

/// Answer of `POST /v1/encryption/rotate-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyResponse {
    /// The key peers knew until now (base64).
    pub previous_public_key: String,
    /// The new key (base64), being published on the Node annotation.
    pub public_key: String,
}

/// `POST /v1/encryption/rotate-key`: a new WireGuard key for this node,
/// persisted, in use at once, and republished on the Node annotation so the
/// other nodes' peers follow (traffic resumes within a handshake once they
/// have). 409 `encryption-off` when encryption is off.
async fn rotate_key(
    State(state): State<Arc<AgentState>>,
) -> Result<Json<RotateKeyResponse>, ApiError> {
    let Some(enc) = state.feeds().encryption() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "encryption-off",
            "encryption is off on this node: nothing to rotate (set encryption.enabled)".into(),
        ));
    };
    let previous = enc.public_key();
    let done = tokio::task::spawn_blocking(move || enc.rotate_key())
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rotate-key",
                e.to_string(),
            )
        })?;
    match done {
        Ok(key) => Ok(Json(RotateKeyResponse {
            previous_public_key: previous.to_string(),
            public_key: key.to_string(),
        })),
        Err(e) => {
            state.metrics.error("rotate-key");
            Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rotate-key",
                e.to_string(),
            ))
        }
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let gauges = {
        let mgr = state.manager.lock().expect("manager lock");
        let dp = mgr.datapath();
        crate::metrics::Gauges {
            endpoints: mgr.list().len(),
            services: dp.services().map(|v| v.len()).unwrap_or(0),
            ipcache_entries: dp.ipcache().map(|v| v.len()).unwrap_or(0),
        }
    };
    let feeds = state.feeds();
    let mut text = state.metrics.render(&gauges);
    text.push_str(&crate::metrics::render_feeds(
        feeds.mesh.as_ref().map(|m| m.status()).as_ref(),
        feeds.encryption().map(|e| e.status()).as_ref(),
        &feeds.routing.lock().expect("lock"),
    ));
    // The per-reason counters live in the pinned maps (absent until the
    // eBPF datapath is loaded).
    if let Ok(m) = mesh_bpf::MetricsReader::open(&state.config.bpf_root).and_then(|r| r.read()) {
        text.push_str(&crate::metrics::render_datapath(&m));
    }
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
