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
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::datapath::Datapath;
use crate::endpoint::{Endpoint, EndpointManager, EndpointRegistration};
use crate::error::Error;
use crate::metrics::Metrics;

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
}

/// Shared state of the API handlers.
pub struct AgentState {
    config: AgentConfig,
    manager: Mutex<EndpointManager<Box<dyn Datapath>>>,
    metrics: Metrics,
    metrics_address: Mutex<Option<SocketAddr>>,
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
        let mgr = self.manager.lock().expect("manager lock");
        AgentStatus {
            cluster_name: self.config.cluster_name.to_string(),
            cluster_id: self.config.cluster_id.get(),
            node_name: self.config.node_name.to_string(),
            pod_cidr: self.config.pod_cidr,
            datapath: mgr.datapath().kind().to_string(),
            endpoints: mgr.list().len(),
            metrics_address: *self.metrics_address.lock().expect("lock"),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl<T: Datapath + ?Sized> Datapath for Box<T> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn upsert_endpoint(&mut self, e: &crate::datapath::DatapathEndpoint) -> crate::Result<()> {
        (**self).upsert_endpoint(e)
    }
    fn remove_endpoint(&mut self, id: crate::datapath::EndpointId) -> crate::Result<()> {
        (**self).remove_endpoint(id)
    }
    fn endpoints(&self) -> crate::Result<Vec<crate::datapath::DatapathEndpoint>> {
        (**self).endpoints()
    }
    fn upsert_service(&mut self, s: &crate::datapath::ServiceEntry) -> crate::Result<()> {
        (**self).upsert_service(s)
    }
    fn remove_service(&mut self, f: &crate::datapath::Frontend) -> crate::Result<()> {
        (**self).remove_service(f)
    }
    fn services(&self) -> crate::Result<Vec<crate::datapath::ServiceEntry>> {
        (**self).services()
    }
    fn upsert_ipcache(&mut self, e: &crate::datapath::IpcacheEntry) -> crate::Result<()> {
        (**self).upsert_ipcache(e)
    }
    fn remove_ipcache(&mut self, c: &IpNet) -> crate::Result<()> {
        (**self).remove_ipcache(c)
    }
    fn ipcache(&self) -> crate::Result<Vec<crate::datapath::IpcacheEntry>> {
        (**self).ipcache()
    }
    fn set_policy(
        &mut self,
        id: crate::datapath::EndpointId,
        p: &crate::datapath::EndpointPolicy,
    ) -> crate::Result<()> {
        (**self).set_policy(id, p)
    }
    fn policies(
        &self,
    ) -> crate::Result<
        std::collections::BTreeMap<crate::datapath::EndpointId, crate::datapath::EndpointPolicy>,
    > {
        (**self).policies()
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
    let reg: EndpointRegistration = serde_json::from_slice(&body).map_err(|e| {
        state.metrics.error("bad-request");
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("body is not an endpoint registration: {e}"),
        )
    })?;
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

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let endpoints = state.manager.lock().expect("manager lock").list().len();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(endpoints),
    )
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
    tokio::net::UnixListener::bind(path).map_err(listen_err)
}
