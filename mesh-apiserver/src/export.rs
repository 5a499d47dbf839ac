//! The `Export` gRPC service over mutual TLS.
//!
//! A watch sends a snapshot of the requested kinds, `SyncComplete`, then
//! ordered deltas. Resuming from a revision sends only the changes since;
//! a revision the store no longer has (compaction) or never had (a reset
//! store) gets `Reset`, a fresh snapshot and `SyncComplete`: never a gap.
//!
//! Who sees what: a remote cluster's mesh-apiserver (cluster certificate,
//! listed in the config) gets this cluster's nodes, identities, endpoints
//! and *global* services (backends only when shared); this cluster's
//! node-agents (node certificates) get every cluster's state, local and
//! imported.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use mesh_api::{Kind, Record};
use mesh_certs::{Authorizer, LiveTls, PeerKind, SpiffeId};
use mesh_proto::{pb, wire_key};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::state::{self, ParsedKey};
use crate::store::{Store, StoreEvent};

mod pending;
pub use pending::{ConfiguredRemote, PendingRemotes};

/// What a watcher may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A remote cluster: this cluster's state, global services only.
    Remote {
        /// This cluster's name.
        local: String,
    },
    /// A node-agent of this cluster: every cluster's state.
    Local,
}

impl Scope {
    /// The store prefix watched.
    pub fn prefix(&self) -> String {
        match self {
            Scope::Remote { local } => state::cluster_prefix(local),
            Scope::Local => state::ROOT.to_string(),
        }
    }
}

/// Turns one store change into what `scope` may see of it: `None` for
/// other kinds and markers; a service that is (no longer) global becomes a
/// deletion for remote watchers; a service that is not shared loses its
/// backends.
pub fn export_event(scope: &Scope, kinds: &[Kind], ev: &StoreEvent) -> Option<pb::WatchEvent> {
    use pb::watch_event::Event;
    let (key, revision) = match ev {
        StoreEvent::Put(kv) => (&kv.key, kv.mod_revision),
        StoreEvent::Delete { key, revision } => (key, *revision),
    };
    let ParsedKey::Record { cluster, kind, key } = state::parse_key(key).ok()? else {
        return None;
    };
    if !kinds.contains(&kind) {
        return None;
    }
    let delete = || {
        Some(pb::WatchEvent {
            event: Some(Event::Delete(pb::Delete {
                kind: pb::Kind::from(kind).into(),
                key: wire_key(&cluster, &key),
                revision,
            })),
        })
    };
    let StoreEvent::Put(kv) = ev else {
        return delete();
    };
    let mut record = match state::decode(kind, &kv.key, &kv.value) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "skipping an undecodable record");
            return None;
        }
    };
    if let (Scope::Remote { .. }, Record::Service(s)) = (scope, &mut record) {
        if !s.options.global {
            return delete();
        }
        if !s.options.shared {
            s.backends.clear();
        }
    }
    Some(pb::WatchEvent {
        event: Some(Event::Upsert(pb::Upsert {
            key: wire_key(&cluster, &key),
            revision,
            record: Some((&record).into()),
        })),
    })
}

/// Who is on the other end of a connection (from its client certificate).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The authorized SPIFFE id.
    pub id: Option<SpiffeId>,
    /// The remote address.
    pub addr: SocketAddr,
    /// The certificate chain it presented (leaf first): checked again on
    /// every open stream when the policy, the bundle or the clock moves.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// An accepted, authenticated connection.
#[derive(Debug)]
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// This cluster's facts, answered by `Info`.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    /// Name.
    pub name: mesh_api::ClusterName,
    /// Id.
    pub id: mesh_api::ClusterId,
    /// Pod CIDRs.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

/// The `Export` service.
#[derive(Debug, Clone)]
pub struct ExportService {
    store: Arc<dyn Store>,
    local: LocalCluster,
    watchers: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    revocation: Option<Revocation>,
    signer: Option<crate::renew::Signer>,
    remotes: Option<PendingRemotes>,
}

/// What an open stream's client is checked against again.
#[derive(Debug, Clone)]
struct Revocation {
    live: LiveTls,
    authorizer: Authorizer,
    recheck: Duration,
}

impl ExportService {
    /// Serves `store` as `local`.
    pub fn new(store: Arc<dyn Store>, local: LocalCluster) -> Self {
        let (tx, stopping) = tokio::sync::watch::channel(false);
        ExportService {
            store,
            local,
            watchers: Arc::default(),
            stop: Arc::new(tx),
            stopping,
            revocation: None,
            signer: None,
            remotes: None,
        }
    }

    /// A node-agent's snapshot waits a little for `remotes` to sync and
    /// names those still unsynced pending, so the agent keeps their state
    /// (see [`PendingRemotes`]).
    pub fn with_pending_remotes(mut self, remotes: PendingRemotes) -> Self {
        self.remotes = Some(remotes);
        self
    }

    /// Answers `Renew` with this cluster's CA (`None`: refuses, saying how
    /// to enable it).
    pub fn with_signer(mut self, signer: Option<crate::renew::Signer>) -> Self {
        self.signer = signer;
        self
    }

    /// Closes an open watch within seconds once its client would be
    /// refused by a handshake now: `authorizer`'s policy changed (a remote
    /// removed from the config, `meshctl disconnect`), `live`'s bundle
    /// dropped its CA (the last step of a CA rotation), or its certificate
    /// expired; and re-authorizes every stream at least every `recheck`.
    pub fn with_revocation(
        mut self,
        live: LiveTls,
        authorizer: Authorizer,
        recheck: Duration,
    ) -> Self {
        self.revocation = Some(Revocation {
            live,
            authorizer,
            recheck,
        });
        self
    }

    /// Ends every open watch (clients reconnect elsewhere) and refuses new ones.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Open watch streams now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The watcher gauge (shared with status).
    pub fn watcher_gauge(&self) -> Arc<AtomicUsize> {
        self.watchers.clone()
    }
}

struct WatcherGuard(Arc<AtomicUsize>);
impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bits of a wire revision below the store epoch.
const EPOCH_SHIFT: u32 = 48;

/// The revision clients see: the store's epoch in the top 16 bits, so a
/// resume against a replaced store (a restarted in-memory store, a wiped
/// etcd) is recognised and answered with `Reset`, never with a gap.
pub fn wire_revision(epoch: u16, revision: u64) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT) | (revision & ((1 << EPOCH_SHIFT) - 1))
}

/// Splits a wire revision into epoch and store revision.
pub fn split_wire_revision(wire: u64) -> (u16, u64) {
    (
        (wire >> EPOCH_SHIFT) as u16,
        wire & ((1 << EPOCH_SHIFT) - 1),
    )
}

/// The stream to one client, stamping revisions with the store epoch.
struct Tx {
    inner: mpsc::Sender<std::result::Result<pb::WatchEvent, Status>>,
    epoch: u16,
}

impl Tx {
    async fn closed(&self) {
        self.inner.closed().await;
    }
    async fn fail(&self, status: Status) {
        let _ = self.inner.send(Err(status)).await;
    }
}

async fn send(tx: &Tx, mut ev: pb::WatchEvent) -> bool {
    use pb::watch_event::Event;
    match ev.event.as_mut() {
        Some(Event::Upsert(u)) => u.revision = wire_revision(tx.epoch, u.revision),
        Some(Event::Delete(d)) => d.revision = wire_revision(tx.epoch, d.revision),
        Some(Event::SyncComplete(c)) => c.revision = wire_revision(tx.epoch, c.revision),
        Some(Event::Reset(_)) | None => {}
    }
    tx.inner.send(Ok(ev)).await.is_ok()
}

fn sync_complete(revision: u64, kinds: &[Kind], pending: &BTreeSet<String>) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(pb::watch_event::Event::SyncComplete(pb::SyncComplete {
            revision,
            kinds: kinds.iter().map(|k| pb::Kind::from(*k).into()).collect(),
            pending_clusters: pending.iter().cloned().collect(),
        })),
    }
}

fn reset(reason: String) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(pb::watch_event::Event::Reset(pb::Reset { reason })),
    }
}

/// Waits until this cluster's requested kinds are marked synced (its feed
/// has written a complete first listing), so a snapshot never presents a
/// partial state as complete. `false` when the client went away.
async fn wait_synced(store: &dyn Store, local: &str, kinds: &[Kind], tx: &Tx) -> Result<bool> {
    let mut logged = false;
    loop {
        let mut all = true;
        for kind in kinds {
            if store.get(&state::synced_key(local, *kind)).await?.is_none() {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
        if !logged {
            tracing::info!(
                cluster = local,
                "snapshot waits until this cluster's state is synced"
            );
            logged = true;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = tx.closed() => return Ok(false),
        }
    }
}

/// Sends a snapshot and the marker once this cluster is synced (and, to a
/// node-agent, once configured remotes are, or named pending); returns the
/// snapshot revision and the pending remotes.
async fn snapshot(
    store: &dyn Store,
    local: &str,
    scope: &Scope,
    kinds: &[Kind],
    remotes: Option<&PendingRemotes>,
    tx: &Tx,
) -> Result<Option<(u64, BTreeSet<String>)>> {
    if !wait_synced(store, local, kinds, tx).await? {
        return Ok(None);
    }
    let pending = match remotes {
        Some(r) => {
            tokio::select! {
                p = r.after_wait(store) => p?,
                () = tx.closed() => return Ok(None),
            }
        }
        None => BTreeSet::new(),
    };
    if !pending.is_empty() {
        tracing::info!(
            ?pending,
            "snapshot names remotes not synced yet pending: the agent keeps their state"
        );
    }
    let (items, revision) = store.list(&scope.prefix()).await?;
    // Nodes and identities before what refers to them.
    for kind in Kind::ALL {
        for kv in &items {
            if let Ok(ParsedKey::Record { kind: k, .. }) = state::parse_key(&kv.key)
                && k == kind
                && let Some(ev) = export_event(scope, kinds, &StoreEvent::Put(kv.clone()))
                && !send(tx, ev).await
            {
                return Ok(None);
            }
        }
    }
    if !send(tx, sync_complete(revision, kinds, &pending)).await {
        return Ok(None);
    }
    Ok(Some((revision, pending)))
}

/// The pending remote whose last synced marker `ev` wrote, if any.
async fn synced_now(
    store: &dyn Store,
    pending: &BTreeSet<String>,
    ev: &StoreEvent,
) -> Option<String> {
    if pending.is_empty() {
        return None;
    }
    let StoreEvent::Put(kv) = ev else { return None };
    let cluster = pending::synced_marker_of(&kv.key)?;
    if !pending.contains(&cluster) {
        return None;
    }
    // A store error here only delays the reset to the next marker.
    pending::is_synced(store, &cluster)
        .await
        .unwrap_or(false)
        .then_some(cluster)
}

async fn pending_window_end(remotes: Option<&PendingRemotes>) {
    match remotes {
        Some(r) => tokio::time::sleep_until(r.until()).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    local: String,
    store: Arc<dyn Store>,
    scope: Scope,
    kinds: Vec<Kind>,
    resume: u64,
    client: String,
    remotes: Option<PendingRemotes>,
    tx: Tx,
) {
    let prefix = scope.prefix();
    let mut from = None;
    // Remotes the client was told are pending: when one syncs, or the
    // window ends, a Reset and a complete snapshot follow.
    let mut pending = BTreeSet::new();
    let (resume_epoch, resume) = split_wire_revision(resume);
    if resume > 0 && resume_epoch != tx.epoch {
        tracing::info!(%client, resume_epoch, epoch = tx.epoch, "resume from another store epoch: reset and snapshot");
        if !send(
            &tx,
            reset(format!(
                "this cluster's store was replaced (epoch {resume_epoch:#x} → {:#x}): a fresh snapshot follows",
                tx.epoch
            )),
        )
        .await
        {
            return;
        }
    } else if resume > 0 {
        match store.changes_since(&prefix, resume + 1).await {
            Ok((events, current)) => {
                for ev in &events {
                    if let Some(e) = export_event(&scope, &kinds, ev)
                        && !send(&tx, e).await
                    {
                        return;
                    }
                }
                // A resumed client may hold a pending remote's old state.
                pending = match &remotes {
                    Some(r) => match r.now(store.as_ref()).await {
                        Ok(p) => p,
                        Err(e) => {
                            tx.fail(Status::unavailable(e.to_string())).await;
                            return;
                        }
                    },
                    None => BTreeSet::new(),
                };
                if !send(&tx, sync_complete(current, &kinds, &pending)).await {
                    return;
                }
                tracing::info!(%client, resume, current, deltas = events.len(), "watch resumed");
                from = Some(current + 1);
            }
            Err(e @ (Error::Compacted { .. } | Error::FutureRevision { .. })) => {
                tracing::info!(%client, resume, reason = %e, "watch resume impossible: reset and snapshot");
                if !send(&tx, reset(e.to_string())).await {
                    return;
                }
            }
            Err(e) => {
                tx.fail(Status::unavailable(e.to_string())).await;
                return;
            }
        }
    }
    loop {
        let start = match from {
            Some(f) => f,
            None => match snapshot(
                store.as_ref(),
                &local,
                &scope,
                &kinds,
                remotes.as_ref(),
                &tx,
            )
            .await
            {
                Ok(Some((r, p))) => {
                    pending = p;
                    r + 1
                }
                Ok(None) => return,
                Err(e) => {
                    tx.fail(Status::unavailable(e.to_string())).await;
                    return;
                }
            },
        };
        let mut stream = match store.watch(&prefix, start).await {
            Ok(s) => s,
            Err(e) => {
                tx.fail(Status::unavailable(e.to_string())).await;
                return;
            }
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(ev)) => {
                        if let Some(e) = export_event(&scope, &kinds, &ev)
                            && !send(&tx, e).await
                        {
                            return;
                        }
                        if let Some(cluster) = synced_now(store.as_ref(), &pending, &ev).await {
                            tracing::info!(%client, %cluster, "pending remote synced: reset and a complete snapshot");
                            if !send(&tx, reset(format!("remote cluster {cluster} synced: a complete snapshot follows"))).await {
                                return;
                            }
                            from = None;
                            break;
                        }
                    }
                    Some(Err(e @ Error::Compacted { .. })) => {
                        tracing::info!(%client, reason = %e, "watcher fell behind compaction: reset and snapshot");
                        if !send(&tx, reset(e.to_string())).await {
                            return;
                        }
                        from = None;
                        break;
                    }
                    Some(Err(e)) => {
                        tx.fail(Status::unavailable(e.to_string())).await;
                        return;
                    }
                    None => {
                        tx.fail(Status::unavailable("store watch ended")).await;
                        return;
                    }
                },
                () = tx.closed() => return,
                () = pending_window_end(remotes.as_ref()), if !pending.is_empty() => {
                    tracing::info!(%client, ?pending, "pending remotes outlived the stale timeout: reset and a complete snapshot");
                    if !send(&tx, reset("remote clusters pending since this server started outlived the stale timeout: a complete snapshot follows".into())).await {
                        return;
                    }
                    from = None;
                    break;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::export_server::Export for ExportService {
    type WatchStream = ReceiverStream<std::result::Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> std::result::Result<Response<Self::WatchStream>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let revoked = match (&self.revocation, &peer) {
            (Some(r), Some(p)) => Some(mesh_certs::revocation::until_revoked(
                r.live.clone(),
                r.authorizer.clone(),
                p.chain.clone(),
                r.recheck,
            )),
            _ => None,
        };
        let id = peer
            .as_ref()
            .and_then(|p| p.id.clone())
            .ok_or_else(|| Status::unauthenticated("no authenticated client certificate"))?;
        let scope = match id.kind() {
            PeerKind::Cluster => Scope::Remote {
                local: self.local.name.to_string(),
            },
            PeerKind::Node => Scope::Local,
        };
        let req = request.into_inner();
        let mut kinds = Vec::new();
        for k in &req.kinds {
            kinds.push(
                mesh_proto::kind_from_wire("WatchRequest", "kinds", *k)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            );
        }
        if kinds.is_empty() {
            kinds = Kind::ALL.to_vec();
        }
        let client = format!("{id} ({})", req.client);
        tracing::info!(%client, ?scope, resume = req.resume_revision, "watch opened");
        let epoch = self
            .store
            .epoch()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (inner, rx) = mpsc::channel(1024);
        let tx = Tx { inner, epoch };
        self.watchers.fetch_add(1, Ordering::Relaxed);
        let guard = WatcherGuard(self.watchers.clone());
        let store = self.store.clone();
        let local = self.local.name.to_string();
        let remotes = match scope {
            Scope::Local => self.remotes.clone(),
            Scope::Remote { .. } => None,
        };
        let mut stopping = self.stopping.clone();
        if *stopping.borrow() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        tokio::spawn(async move {
            let _guard = guard;
            let fail = tx.inner.clone();
            let resume = req.resume_revision;
            let stop = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let revoked = async move {
                match revoked {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = run_watch(local, store, scope, kinds, resume, client.clone(), remotes, tx) => {}
                () = stop => {
                    let _ = fail
                        .send(Err(Status::unavailable("the server is shutting down")))
                        .await;
                }
                refusal = revoked => {
                    tracing::warn!(%client, reason = refusal.label(), "access revoked: closing the open watch ({refusal})");
                    let _ = fail
                        .send(Err(Status::permission_denied(format!(
                            "access revoked on the open stream: {refusal}"
                        ))))
                        .await;
                }
            }
            tracing::info!(%client, "watch closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> std::result::Result<Response<pb::RenewResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.id.clone());
        let cert_pem = crate::renew::answer(
            self.signer.as_ref(),
            peer.as_ref(),
            &request.get_ref().csr_pem,
        )?;
        Ok(Response::new(pb::RenewResponse { cert_pem }))
    }

    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> std::result::Result<Response<pb::ClusterInfo>, Status> {
        // Only this cluster's agents learn which remotes it imports.
        let agent = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.id.as_ref())
            .is_some_and(|id| id.kind() == PeerKind::Node);
        let remotes = match (&self.remotes, agent) {
            (Some(r), true) => r
                .configured()
                .into_iter()
                .map(|r| pb::RemoteCluster {
                    name: r.name,
                    id: u32::from(r.id),
                    pod_cidrs: r.pod_cidrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Response::new(pb::ClusterInfo {
            name: self.local.name.to_string(),
            id: u32::from(self.local.id.get()),
            pod_cidrs: self
                .local
                .pod_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            remotes,
        }))
    }
}

/// Accepts TCP connections on `listener`, completes the mTLS handshake
/// (refusals are logged by the authorizer with their reason), and serves
/// `service` on the authenticated connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    mut tls: ServerConfig,
    authorizer: Authorizer,
    service: ExportService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let (conn_tx, conn_rx) = mpsc::channel::<std::io::Result<TlsConn>>(64);
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let authorizer = authorizer.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let presented = stream.get_ref().1.peer_certificates();
                        let id = mesh_certs::tls::peer_spiffe_id(presented);
                        let chain = presented
                            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let _ = conn_tx
                            .send(Ok(TlsConn {
                                stream,
                                peer: PeerInfo { id, addr, chain },
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        let refusal = authorizer.record_handshake_error(&e, &addr.to_string());
                        tracing::debug!(%addr, reason = refusal.label(), "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(%addr, "TLS handshake timed out"),
                }
            });
        }
    });
    // The accept loop ends with this function, even when it is cancelled.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _accept_loop = AbortOnDrop(accept_loop);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(pb::export_server::ExportServer::new(service))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown)
        .await
        .map_err(|source| Error::Connect {
            endpoint: local,
            source,
        })
}

#[cfg(test)]
mod tests;
