//! Assembles a running mesh-apiserver: election, export, import and
//! status, over a given store. `main` and the tests use the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_certs::{AccessPolicy, Authorizer, LiveTls, TrustDomain};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::export::{ConfiguredRemote, ExportService, LocalCluster, PendingRemotes, serve};
use crate::import::{ConfigFeed, ImportSettings, Importer, parse_clustermesh};
use crate::leader::{ElectionConfig, Leadership, spawn_election};
use crate::state::Writer;
use crate::status::{StatusSource, router};
use crate::store::Store;

/// Everything a server needs.
#[derive(Debug)]
pub struct ServerParts {
    /// This cluster.
    pub local: LocalCluster,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Elect a leader (shared store); `None`: always the leader.
    pub election: Option<ElectionConfig>,
    /// The gRPC listener.
    pub grpc: TcpListener,
    /// The status listener.
    pub status: Option<TcpListener>,
    /// Server certificate, key and the CAs trusted for clients; swapped
    /// without a restart (CA rotation) by whoever holds a clone.
    pub tls: LiveTls,
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// Import settings.
    pub import: ImportSettings,
    /// The `meshwork-clustermesh` feed.
    pub config: ConfigFeed,
    /// This replica's name (in the status document).
    pub replica: String,
    /// Certificate renewal.
    pub renewal: crate::renew::Renewal,
}

/// Every open watch is authorized again at least this often, whatever
/// changed (policy and bundle changes and expiry act within a second).
const REAUTHORIZE_EVERY: Duration = Duration::from_secs(60);

/// How soon a failed sweep of unconfigured clusters is retried.
const SWEEP_RETRY: Duration = Duration::from_secs(10);

/// Returns when this replica next becomes the leader: at once if it leads
/// now but did not when the last pass began (`was_leader`), else after it
/// loses and regains leadership.
async fn gains(leadership: &mut Leadership, was_leader: bool) {
    if leadership.ended() {
        return std::future::pending().await;
    }
    if was_leader {
        leadership.wait_lost().await;
    }
    leadership.wait_leader().await;
}

/// A running server; dropping it does not stop it, call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Status address.
    pub status_addr: Option<SocketAddr>,
    /// The authorizer (recent refusals).
    pub authorizer: Authorizer,
    /// The importer (remote status).
    pub importer: Importer,
    /// Leadership.
    pub leadership: Leadership,
    /// The writer for this cluster's own records (the Kubernetes feed's).
    pub writer: Writer,
    /// Status.
    pub status: StatusSource,
    export: ExportService,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every task and closes the listeners.
    pub async fn shutdown(self) {
        self.export.stop();
        let _ = self.stop.send(true);
        // Let the open streams end and the server drain.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts a server from its parts.
pub async fn start(parts: ServerParts) -> Result<Running> {
    let ServerParts {
        local,
        store,
        election,
        grpc,
        status,
        tls,
        trust_domain,
        import,
        config,
        replica,
        renewal,
    } = parts;
    let mut tasks = Vec::new();
    let leadership = match election {
        Some(cfg) => {
            let (l, task) = spawn_election(store.clone(), cfg);
            tasks.push(task);
            l
        }
        None => Leadership::always(),
    };
    let authorizer = Authorizer::new(
        trust_domain,
        AccessPolicy::mesh_apiserver(local.name.clone(), []),
    );
    let live = tls.clone();
    let tls = tls
        .server_config(authorizer.clone())
        .map_err(|e| Error::certs("export server TLS", e))?;
    // Configured remotes, for agents' snapshots (known before the first
    // watch is served: the config feed's first value is its first read).
    let configured_of =
        |remotes: &[mesh_api::clustermesh::RemoteClusterConfig]| -> Vec<ConfiguredRemote> {
            remotes.iter().map(ConfiguredRemote::from).collect()
        };
    let (configured, configured_rx) = watch::channel(configured_of(
        &parse_clustermesh(&config.borrow(), &local).remotes,
    ));
    let service = ExportService::new(store.clone(), local.clone())
        .with_revocation(live, authorizer.clone(), REAUTHORIZE_EVERY)
        .with_signer(renewal.signer.clone())
        .with_pending_remotes(PendingRemotes::new(configured_rx, import.stale_timeout));
    let certs = import.renewal.certs.clone();
    if let Some(own) = renewal.own {
        tasks.push(tokio::spawn(crate::renew::renew_own(
            renewal.signer,
            own,
            certs.clone(),
            leadership.clone(),
            local.name.clone(),
        )));
    }
    let export = service.clone();
    let watchers = service.watcher_gauge();
    let grpc_addr = grpc.local_addr().map_err(|source| Error::Io {
        what: "gRPC listener",
        addr: String::new(),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut rx = stop_rx.clone();
    let auth = authorizer.clone();
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = serve(grpc, tls, auth, service, shutdown).await {
            tracing::error!(error = %e, "export server failed");
        }
    }));
    let importer = Importer::new(store.clone(), local.clone(), leadership.clone(), import);
    // The allow-list follows the config: only listed remotes may connect.
    {
        let importer = importer.clone();
        let authorizer = authorizer.clone();
        let local = local.clone();
        let mut feed = config;
        let mut leadership = leadership.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let data = feed.borrow_and_update().clone();
                let was_leader = leadership.is_leader();
                let parsed = parse_clustermesh(&data, &local);
                authorizer.set_policy(AccessPolicy::mesh_apiserver(
                    local.name.clone(),
                    parsed.remotes.iter().map(|r| r.name.clone()),
                ));
                configured.send_replace(configured_of(&parsed.remotes));
                importer.apply(&data).await;
                // Applied again (the sweep of unconfigured clusters runs
                // with it) when the config changes, when this replica
                // becomes the leader, and while the last sweep failed.
                let retry = importer.sweep_failed();
                tokio::select! {
                    changed = feed.changed() => if changed.is_err() { return },
                    () = gains(&mut leadership, was_leader) => {}
                    () = tokio::time::sleep(SWEEP_RETRY), if retry => {}
                }
            }
        }));
    }
    let source = StatusSource {
        store: store.clone(),
        local: local.clone(),
        leadership: leadership.clone(),
        importer: importer.clone(),
        watchers,
        authorizer: authorizer.clone(),
        replica,
        refused_exports: Arc::default(),
        certificates: certs,
    };
    let mut status_addr = None;
    if let Some(listener) = status {
        status_addr = listener.local_addr().ok();
        let app = router(source.clone());
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        }));
    }
    let writer = Writer::new(store, local.name.clone(), leadership.clone());
    tracing::info!(cluster = %local.name, %grpc_addr, ?status_addr, "mesh-apiserver started");
    // Give the listeners a moment to be polled.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(Running {
        grpc_addr,
        status_addr,
        authorizer,
        importer,
        leadership,
        writer,
        status: source,
        export,
        stop,
        tasks,
    })
}
