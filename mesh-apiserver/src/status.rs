//! `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/status`
//! (JSON, read by `meshctl status`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use mesh_certs::Authorizer;
use serde::{Deserialize, Serialize};

use crate::export::LocalCluster;
use crate::import::{Importer, Refused, RemoteStatus};
use crate::leader::Leadership;
use crate::store::Store;

/// This cluster, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u8,
    /// Pod CIDRs.
    pub pod_cidrs: Vec<String>,
}

/// The store, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// `etcd http://…` or `memory …`.
    pub backend: String,
    /// Reachable now.
    pub reachable: bool,
    /// Current revision.
    pub revision: u64,
    /// Latency of a revision read, seconds.
    pub latency_seconds: f64,
    /// The error, when unreachable.
    pub error: Option<String>,
}

/// A refused TLS peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRefusal {
    /// Stable label (`wrong-ca`, `expired`, `cluster-not-allowed`, …).
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The whole status document (`GET /status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// This cluster.
    pub cluster: ClusterStatus,
    /// mesh-apiserver version.
    pub version: String,
    /// This replica writes.
    pub leader: bool,
    /// Store health.
    pub store: StoreStatus,
    /// Open watch streams.
    pub watch_clients: usize,
    /// Each configured remote cluster.
    pub remotes: Vec<RemoteStatus>,
    /// Config entries refused, with reasons.
    pub refused_entries: Vec<Refused>,
    /// Recent refused TLS peers.
    pub refused_peers: Vec<PeerRefusal>,
}

/// What the status endpoints read.
#[derive(Clone)]
pub struct StatusSource {
    /// The store.
    pub store: Arc<dyn Store>,
    /// This cluster.
    pub local: LocalCluster,
    /// Leadership.
    pub leadership: Leadership,
    /// The importer.
    pub importer: Importer,
    /// Watch stream gauge.
    pub watchers: Arc<AtomicUsize>,
    /// The authorizer (recent refusals).
    pub authorizer: Authorizer,
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSource")
            .field("local", &self.local.name)
            .finish()
    }
}

impl StatusSource {
    /// Builds the report now.
    pub async fn report(&self) -> StatusReport {
        let t = Instant::now();
        let rev = self.store.revision().await;
        let latency = t.elapsed().as_secs_f64();
        StatusReport {
            cluster: ClusterStatus {
                name: self.local.name.to_string(),
                id: self.local.id.get(),
                pod_cidrs: self
                    .local
                    .pod_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            leader: self.leadership.is_leader(),
            store: StoreStatus {
                backend: self.store.describe(),
                reachable: rev.is_ok(),
                revision: rev.as_ref().copied().unwrap_or(0),
                latency_seconds: latency,
                error: rev.err().map(|e| e.to_string()),
            },
            watch_clients: self.watchers.load(Ordering::Relaxed),
            remotes: self.importer.status(),
            refused_entries: self.importer.refused(),
            refused_peers: self
                .authorizer
                .recent_refusals()
                .into_iter()
                .map(|r| PeerRefusal {
                    reason: r.label().to_string(),
                    message: r.to_string(),
                })
                .collect(),
        }
    }
}

fn b(v: bool) -> u8 {
    u8::from(v)
}

/// Prometheus text exposition of a report.
pub fn metrics_text(r: &StatusReport) -> String {
    let mut o = String::new();
    let c = &r.cluster.name;
    let _ = writeln!(
        o,
        "# HELP meshwork_apiserver_leader Whether this replica is the writing leader.\n# TYPE meshwork_apiserver_leader gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_apiserver_leader{{cluster=\"{c}\"}} {}",
        b(r.leader)
    );
    let _ = writeln!(
        o,
        "# HELP meshwork_apiserver_store_up Whether the store answers.\n# TYPE meshwork_apiserver_store_up gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_apiserver_store_up{{cluster=\"{c}\"}} {}",
        b(r.store.reachable)
    );
    let _ = writeln!(
        o,
        "# HELP meshwork_apiserver_store_latency_seconds Latency of a store read.\n# TYPE meshwork_apiserver_store_latency_seconds gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_apiserver_store_latency_seconds{{cluster=\"{c}\"}} {}",
        r.store.latency_seconds
    );
    let _ = writeln!(
        o,
        "# HELP meshwork_apiserver_store_revision Current store revision.\n# TYPE meshwork_apiserver_store_revision gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_apiserver_store_revision{{cluster=\"{c}\"}} {}",
        r.store.revision
    );
    let _ = writeln!(
        o,
        "# HELP meshwork_apiserver_watch_clients Open Export watch streams.\n# TYPE meshwork_apiserver_watch_clients gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_apiserver_watch_clients{{cluster=\"{c}\"}} {}",
        r.watch_clients
    );
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_connected Whether the remote cluster's watch is open.\n# TYPE meshwork_remote_connected gauge"
    );
    for s in &r.remotes {
        let _ = writeln!(
            o,
            "meshwork_remote_connected{{cluster=\"{c}\",remote=\"{}\"}} {}",
            s.name,
            b(s.connected)
        );
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_synced Whether the remote's cache is complete.\n# TYPE meshwork_remote_synced gauge"
    );
    for s in &r.remotes {
        let _ = writeln!(
            o,
            "meshwork_remote_synced{{cluster=\"{c}\",remote=\"{}\"}} {}",
            s.name,
            b(s.synced)
        );
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_stale Whether the remote's cached state is stale.\n# TYPE meshwork_remote_stale gauge"
    );
    for s in &r.remotes {
        let _ = writeln!(
            o,
            "meshwork_remote_stale{{cluster=\"{c}\",remote=\"{}\"}} {}",
            s.name,
            b(s.is_stale())
        );
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_refused Whether the remote is refused (config or identity mismatch).\n# TYPE meshwork_remote_refused gauge"
    );
    for s in &r.remotes {
        let _ = writeln!(
            o,
            "meshwork_remote_refused{{cluster=\"{c}\",remote=\"{}\"}} {}",
            s.name,
            b(s.refused.is_some())
        );
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_has_error Whether the remote's last attempt failed.\n# TYPE meshwork_remote_has_error gauge"
    );
    for s in &r.remotes {
        let _ = writeln!(
            o,
            "meshwork_remote_has_error{{cluster=\"{c}\",remote=\"{}\"}} {}",
            s.name,
            b(s.last_error.is_some())
        );
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_records Cached records of the remote by kind.\n# TYPE meshwork_remote_records gauge"
    );
    for s in &r.remotes {
        for (kind, n) in &s.counts {
            let _ = writeln!(
                o,
                "meshwork_remote_records{{cluster=\"{c}\",remote=\"{}\",kind=\"{kind}\"}} {n}",
                s.name
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_remote_last_event_age_seconds Seconds since the remote's last event.\n# TYPE meshwork_remote_last_event_age_seconds gauge"
    );
    for s in &r.remotes {
        if let Some(age) = s.last_event_age_seconds {
            let _ = writeln!(
                o,
                "meshwork_remote_last_event_age_seconds{{cluster=\"{c}\",remote=\"{}\"}} {age}",
                s.name
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP meshwork_clustermesh_refused_entries Config entries refused.\n# TYPE meshwork_clustermesh_refused_entries gauge"
    );
    let _ = writeln!(
        o,
        "meshwork_clustermesh_refused_entries{{cluster=\"{c}\"}} {}",
        r.refused_entries.len()
    );
    o
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<StatusSource>) -> impl IntoResponse {
    match s.store.revision().await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}\n"),
        ),
    }
}

async fn metrics(State(s): State<StatusSource>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics_text(&s.report().await),
    )
}

async fn status(State(s): State<StatusSource>) -> Json<StatusReport> {
    Json(s.report().await)
}

/// The status HTTP router.
pub fn router(source: StatusSource) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(source)
}
