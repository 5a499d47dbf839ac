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
use mesh_api::clustermesh::{
    MeshStatus, PeerRefusal, RefusedObject, RemoteStatus, StoreStatus, unix_seconds,
};
use mesh_certs::Authorizer;

use crate::export::LocalCluster;
use crate::import::Importer;
use crate::leader::Leadership;
use crate::store::Store;

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
    /// This replica's name.
    pub replica: String,
    /// Local objects the Kubernetes feed refuses to export.
    pub refused_exports: Arc<std::sync::Mutex<Vec<RefusedObject>>>,
    /// Certificates in use and their renewal.
    pub certificates: crate::renew::Certificates,
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSource")
            .field("local", &self.local.name)
            .finish()
    }
}

impl StatusSource {
    /// The status document now.
    pub async fn report(&self) -> MeshStatus {
        let t = Instant::now();
        let rev = self.store.revision().await;
        let latency = t.elapsed().as_secs_f64();
        MeshStatus {
            cluster: self.local.name.to_string(),
            cluster_id: self.local.id.get(),
            pod_cidrs: self.local.pod_cidrs.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            replica: self.replica.clone(),
            leader: self.leadership.is_leader(),
            updated_at: unix_seconds(std::time::SystemTime::now()),
            store: StoreStatus {
                backend: self.store.describe(),
                reachable: rev.is_ok(),
                revision: rev.as_ref().copied().unwrap_or(0),
                latency_seconds: latency,
                error: rev.err().map(|e| e.to_string()),
            },
            watch_clients: self.watchers.load(Ordering::Relaxed) as u64,
            remotes: self
                .importer
                .status()
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
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
            refused_exports: self
                .refused_exports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            certificates: self.certificates.report(),
            swept_clusters: self.importer.swept(),
        }
    }
}

fn b(v: bool) -> u8 {
    u8::from(v)
}

/// Writes a gauge family's HELP and TYPE lines.
fn family(o: &mut String, name: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Writes a counter family's HELP and TYPE lines.
fn counter_family(o: &mut String, name: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// A gauge with one sample for this cluster.
fn cluster_gauge(o: &mut String, c: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    family(o, name, help);
    let _ = writeln!(o, "{name}{{cluster=\"{c}\"}} {value}");
}

/// A gauge with one sample per remote (none where `value` gives none).
fn remote_gauge<V: std::fmt::Display>(
    o: &mut String,
    c: &str,
    remotes: &[&RemoteStatus],
    name: &str,
    help: &str,
    value: impl Fn(&RemoteStatus) -> Option<V>,
) {
    family(o, name, help);
    for s in remotes {
        if let Some(v) = value(s) {
            let _ = writeln!(o, "{name}{{cluster=\"{c}\",remote=\"{}\"}} {v}", s.name);
        }
    }
}

/// Prometheus text exposition of a report.
pub fn metrics_text(r: &MeshStatus) -> String {
    let mut o = String::new();
    let o = &mut o;
    let c = r.cluster.as_str();
    let remotes: Vec<&RemoteStatus> = r.remotes.values().collect();
    let rs = remotes.as_slice();
    cluster_gauge(
        o,
        c,
        "meshwork_apiserver_leader",
        "Whether this replica is the writing leader.",
        b(r.leader),
    );
    cluster_gauge(
        o,
        c,
        "meshwork_apiserver_store_up",
        "Whether the store answers.",
        b(r.store.reachable),
    );
    cluster_gauge(
        o,
        c,
        "meshwork_apiserver_store_latency_seconds",
        "Latency of a store read.",
        r.store.latency_seconds,
    );
    cluster_gauge(
        o,
        c,
        "meshwork_apiserver_store_revision",
        "Current store revision.",
        r.store.revision,
    );
    cluster_gauge(
        o,
        c,
        "meshwork_apiserver_watch_clients",
        "Open Export watch streams.",
        r.watch_clients,
    );
    cluster_gauge(
        o,
        c,
        "meshwork_remote_state_swept_total",
        "Clusters no longer configured whose leftover cached state was withdrawn.",
        r.swept_clusters,
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_connected",
        "Whether the remote cluster's watch is open.",
        |s| Some(b(s.connected)),
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_synced",
        "Whether the remote's cache is complete.",
        |s| Some(b(s.synced)),
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_stale",
        "Whether the remote's cached state is stale.",
        |s| Some(b(s.is_stale())),
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_refused",
        "Whether the remote is refused (config or identity mismatch).",
        |s| Some(b(s.refused.is_some())),
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_has_error",
        "Whether the remote's last attempt failed.",
        |s| Some(b(s.last_error.is_some())),
    );
    family(
        o,
        "meshwork_remote_records",
        "Cached records of the remote by kind.",
    );
    for s in rs {
        for (kind, n) in s.counts.by_kind() {
            let _ = writeln!(
                o,
                "meshwork_remote_records{{cluster=\"{c}\",remote=\"{}\",kind=\"{kind}\"}} {n}",
                s.name
            );
        }
    }
    family(
        o,
        "meshwork_remote_refused_records",
        "Records the remote sends that are refused now (not cached), by kind.",
    );
    for s in rs {
        for (kind, n) in s.refused_records.by_kind() {
            let _ = writeln!(
                o,
                "meshwork_remote_refused_records{{cluster=\"{c}\",remote=\"{}\",kind=\"{kind}\"}} {n}",
                s.name
            );
        }
    }
    counter_family(
        o,
        "meshwork_remote_record_refusals_total",
        "Records of the remote refused at import, by kind and reason.",
    );
    for s in rs {
        for t in &s.refusals {
            let _ = writeln!(
                o,
                "meshwork_remote_record_refusals_total{{cluster=\"{c}\",remote=\"{}\",kind=\"{}\",reason=\"{}\"}} {}",
                s.name, t.kind, t.code, t.count
            );
        }
    }
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_degraded",
        "Whether some of the remote's records are over a quota.",
        |s| Some(b(s.degraded.is_some())),
    );
    remote_gauge(
        o,
        c,
        rs,
        "meshwork_remote_last_event_age_seconds",
        "Seconds since the remote's last event.",
        |s| s.last_event_age_secs,
    );
    cluster_gauge(
        o,
        c,
        "meshwork_export_refused_objects",
        "Local objects not exported because this cluster cannot own them (Warning Events name them).",
        r.refused_exports.len(),
    );
    cluster_gauge(
        o,
        c,
        "meshwork_clustermesh_refused_entries",
        "Config entries refused.",
        r.refused_entries.len(),
    );
    let now = r.updated_at as i64;
    family(
        o,
        "meshwork_certificate_expiry_seconds",
        "Seconds until the certificate expires (negative once expired).",
    );
    for cert in &r.certificates {
        let _ = writeln!(
            o,
            "meshwork_certificate_expiry_seconds{{cluster=\"{c}\",certificate=\"{}\"}} {}",
            cert.name,
            cert.not_after as i64 - now
        );
    }
    counter_family(
        o,
        "meshwork_certificate_renewals_total",
        "Renewals of the certificate since start.",
    );
    for cert in &r.certificates {
        let _ = writeln!(
            o,
            "meshwork_certificate_renewals_total{{cluster=\"{c}\",certificate=\"{}\"}} {}",
            cert.name, cert.renewals
        );
    }
    family(
        o,
        "meshwork_certificate_renewal_failing",
        "Whether the certificate's last renewal attempt failed.",
    );
    for cert in &r.certificates {
        let _ = writeln!(
            o,
            "meshwork_certificate_renewal_failing{{cluster=\"{c}\",certificate=\"{}\"}} {}",
            cert.name,
            b(cert.last_error.is_some())
        );
    }
    std::mem::take(o)
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

async fn status(State(s): State<StatusSource>) -> Json<MeshStatus> {
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

#[cfg(test)]
mod tests;
