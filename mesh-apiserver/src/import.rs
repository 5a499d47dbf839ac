//! Import (the KVStoreMesh design): for every remote cluster in the
//! `meshwork-clustermesh` config, connect over mutual TLS, watch its export
//! and cache it in our store under its prefix, so node-agents need one
//! stream to their own mesh-apiserver whatever the number of clusters.
//!
//! A remote that becomes unreachable keeps its last known state, marked
//! stale, until `stale_timeout` or its removal from the config; reconnection
//! resumes (or resyncs) and removes only what disappeared meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use mesh_api::{ClusterId, ClusterName, Kind};
use mesh_certs::{LiveTls, TlsIdentity, TrustBundle};
use mesh_export_client::{Change, ExportClient, Mirror};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::export::LocalCluster;
use crate::leader::Leadership;
use crate::state::{BatchOp, Writer};
use crate::store::Store;

/// One remote cluster, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The config entry it came from (Secret key or file name).
    pub entry: String,
    /// Its cluster name.
    pub name: ClusterName,
    /// Its cluster id.
    pub id: ClusterId,
    /// `host:port` endpoints of its mesh-apiserver.
    pub endpoints: Vec<String>,
    /// TLS name to verify (default: the first endpoint's host).
    pub server_name: String,
    /// PEM bundle of CAs that sign its server certificate.
    pub ca: String,
    /// Our client certificate for it (PEM).
    pub cert: String,
    /// Its key (PEM).
    pub key: String,
    /// Its pod CIDRs, when stated (checked again against `Info`).
    pub pod_cidrs: Vec<IpNet>,
}

/// An entry that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The entry.
    pub entry: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// The parsed config: usable remotes and refused entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMeshConfig {
    /// Remotes to connect to.
    pub remotes: Vec<RemoteConfig>,
    /// Entries that were refused (the others keep working).
    pub refused: Vec<Refused>,
}

fn parse_entry(entry: &str, text: &str, local: &LocalCluster) -> Result<RemoteConfig> {
    let bad = |reason: String| Error::RemoteConfig {
        entry: entry.to_string(),
        reason,
    };
    // The schema is shared with meshctl and the chart (mesh-api); what only
    // this cluster can judge is checked here.
    let y = mesh_api::clustermesh::RemoteClusterConfig::parse(entry, text)
        .map_err(|e| bad(e.to_string()))?;
    let (name, id) = (y.name.clone(), y.id);
    if name == local.name {
        return Err(bad(format!(
            "names this cluster ({name}); a cluster cannot import itself"
        )));
    }
    if id == local.id {
        return Err(bad(format!(
            "cluster id {} is this cluster's own id; every cluster of a mesh needs a distinct id",
            id.get()
        )));
    }
    let server_name = y.tls_server_name().to_string();
    TrustBundle::from_pem(&y.ca_cert, &format!("{entry}: ca-cert"))
        .map_err(|e| bad(e.to_string()))?;
    TlsIdentity::from_pem(
        &y.client_cert,
        &y.client_key,
        &format!("{entry}: client-cert"),
        &format!("{entry}: client-key"),
    )
    .map_err(|e| bad(e.to_string()))?;
    mesh_api::cidr::check_pod_cidrs_disjoint(&local.name, &local.pod_cidrs, &name, &y.pod_cidrs)
        .map_err(|e| {
            bad(format!(
                "{e}; pod CIDRs of connected clusters must not overlap"
            ))
        })?;
    Ok(RemoteConfig {
        entry: entry.to_string(),
        name,
        id,
        endpoints: y.endpoints,
        server_name,
        ca: y.ca_cert,
        cert: y.client_cert,
        key: y.client_key,
        pod_cidrs: y.pod_cidrs,
    })
}

/// Parses the `meshwork-clustermesh` data (entry → YAML). Each bad entry is
/// refused with its reason; a duplicate name or id refuses every entry that
/// shares it after the first (by entry name).
pub fn parse_clustermesh(
    data: &BTreeMap<String, String>,
    local: &LocalCluster,
) -> ClusterMeshConfig {
    let mut out = ClusterMeshConfig::default();
    let mut names: BTreeMap<ClusterName, String> = BTreeMap::new();
    let mut ids: BTreeMap<u8, String> = BTreeMap::new();
    for (entry, text) in data {
        match parse_entry(entry, text, local) {
            Ok(r) => {
                if let Some(first) = names.get(&r.name) {
                    out.refused.push(Refused {
                        entry: entry.clone(),
                        reason: format!(
                            "cluster name {} is already configured by entry {first:?}",
                            r.name
                        ),
                    });
                } else if let Some(first) = ids.get(&r.id.get()) {
                    out.refused.push(Refused {
                        entry: entry.clone(),
                        reason: format!(
                            "duplicate cluster id {}: entry {first:?} already uses it; cluster ids must be unique in the mesh",
                            r.id.get()
                        ),
                    });
                } else {
                    names.insert(r.name.clone(), entry.clone());
                    ids.insert(r.id.get(), entry.clone());
                    out.remotes.push(r);
                }
            }
            Err(e) => out.refused.push(Refused {
                entry: entry.clone(),
                reason: match e {
                    Error::RemoteConfig { reason, .. } => reason,
                    other => other.to_string(),
                },
            }),
        }
    }
    for r in &out.refused {
        tracing::warn!(entry = %r.entry, reason = %r.reason, "clustermesh entry refused");
    }
    out
}

/// Where the `meshwork-clustermesh` data comes from: the Secret (watched
/// with kube-rs) or a directory with one file per remote.
pub type ConfigFeed = watch::Receiver<BTreeMap<String, String>>;

/// Feeds the config from a directory (one file per remote; hidden files,
/// such as a mounted Secret's `..data`, are ignored), re-read every `poll`.
pub fn directory_feed(dir: std::path::PathBuf, poll: Duration) -> (ConfigFeed, JoinHandle<()>) {
    let (tx, rx) = watch::channel(BTreeMap::new());
    let handle = tokio::spawn(async move {
        loop {
            match read_dir_entries(&dir) {
                Ok(data) => {
                    tx.send_if_modified(|cur| {
                        if *cur == data {
                            false
                        } else {
                            *cur = data;
                            true
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "clustermesh config directory"),
            }
            tokio::time::sleep(poll).await;
        }
    });
    (rx, handle)
}

fn read_dir_entries(dir: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let err = |source| Error::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        out.insert(name, std::fs::read_to_string(entry.path()).map_err(err)?);
    }
    Ok(out)
}

/// The state of one remote, for status, metrics and meshctl.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStatus {
    /// Cluster name.
    pub name: String,
    /// Config entry.
    pub entry: String,
    /// Cluster id.
    pub id: u8,
    /// Configured endpoints.
    pub endpoints: Vec<String>,
    /// A watch stream is open.
    pub connected: bool,
    /// The cache holds a complete copy (snapshot or resume completed).
    pub synced: bool,
    /// Since when the cached state is stale (RFC 3339), if it is.
    pub stale_since: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Why the remote is refused (config or Info mismatch), if it is.
    pub refused: Option<String>,
    /// Cached records per kind.
    pub counts: BTreeMap<String, usize>,
    /// When the last event arrived (RFC 3339).
    pub last_event: Option<String>,
    /// Seconds since the last event.
    pub last_event_age_seconds: Option<f64>,
    /// Last revision received.
    pub revision: u64,
    /// Successful connections so far.
    pub connections: u64,
}

fn now_rfc3339() -> String {
    mesh_certs::rfc3339(time::OffsetDateTime::now_utc())
}

/// Settings of the importer.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Drop a remote's cached state after it was unreachable this long.
    pub stale_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Nameservers for remote endpoints given as DNS names (`ip:port`);
    /// empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            stale_timeout: Duration::from_secs(600),
            max_backoff: Duration::from_secs(10),
            nameservers: Vec::new(),
        }
    }
}

struct Running {
    config: RemoteConfig,
    status: Arc<Mutex<RemoteStatus>>,
    task: JoinHandle<()>,
    /// Its CA bundle and our client certificate, swapped in place when only
    /// they change (CA rotation): the open stream keeps going.
    tls: LiveTls,
}

/// Whether two configs of a remote differ at most in their TLS material.
fn same_peer(a: &RemoteConfig, b: &RemoteConfig) -> bool {
    a.entry == b.entry
        && a.name == b.name
        && a.id == b.id
        && a.endpoints == b.endpoints
        && a.server_name == b.server_name
        && a.pod_cidrs == b.pod_cidrs
}

/// The remote's TLS material (already validated by [`parse_entry`]).
fn remote_tls(config: &RemoteConfig) -> Result<(TlsIdentity, TrustBundle)> {
    let ctx = |what: &str| format!("clustermesh entry {:?}: {what}", config.entry);
    let bundle = TrustBundle::from_pem(&config.ca, "ca").map_err(|e| Error::certs(ctx("ca"), e))?;
    let identity = TlsIdentity::from_pem(&config.cert, &config.key, "cert", "key")
        .map_err(|e| Error::certs(ctx("client certificate"), e))?;
    Ok((identity, bundle))
}

/// Runs one import task per configured remote, following config changes.
#[derive(Clone)]
pub struct Importer {
    store: Arc<dyn Store>,
    local: LocalCluster,
    leadership: Leadership,
    settings: ImportSettings,
    resolver: EndpointResolver,
    running: Arc<Mutex<BTreeMap<ClusterName, Running>>>,
    refused: Arc<Mutex<Vec<Refused>>>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("local", &self.local.name)
            .finish()
    }
}

impl Importer {
    /// An importer writing into `store`.
    pub fn new(
        store: Arc<dyn Store>,
        local: LocalCluster,
        leadership: Leadership,
        settings: ImportSettings,
    ) -> Self {
        let resolver = EndpointResolver::new(&settings.nameservers);
        Importer {
            store,
            local,
            leadership,
            settings,
            resolver,
            running: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// Follows `feed` until it closes: remotes added start, removed ones
    /// stop and their cached state is withdrawn, changed ones restart.
    pub async fn run(self, mut feed: ConfigFeed) {
        loop {
            let data = feed.borrow_and_update().clone();
            self.apply(&data).await;
            if feed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies one version of the config.
    pub async fn apply(&self, data: &BTreeMap<String, String>) {
        let parsed = parse_clustermesh(data, &self.local);
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = parsed.refused.clone();
        let wanted: BTreeMap<ClusterName, RemoteConfig> = parsed
            .remotes
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let mut removed = Vec::new();
        let mut refused = Vec::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<ClusterName> = running.keys().cloned().collect();
            for name in names {
                let (Some(want), Some(run)) = (wanted.get(&name), running.get_mut(&name)) else {
                    if let Some(r) = running.remove(&name) {
                        r.task.abort();
                        removed.push(name);
                    }
                    continue;
                };
                if *want == run.config {
                    continue;
                }
                if same_peer(want, &run.config) {
                    match remote_tls(want).and_then(|(id, bundle)| {
                        run.tls.update(id, &bundle).map_err(|e| {
                            Error::certs(format!("clustermesh entry {:?}", want.entry), e)
                        })
                    }) {
                        Ok(()) => {
                            tracing::info!(remote = %name, "remote's CA bundle or client certificate changed: used from the next connection, the open stream keeps going");
                            run.config = want.clone();
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(remote = %name, error = %e, "new TLS material unusable; restarting the import")
                        }
                    }
                }
                if let Some(r) = running.remove(&name) {
                    r.task.abort();
                }
            }
            for (name, config) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                let tls = match remote_tls(&config).and_then(|(id, bundle)| {
                    LiveTls::new(id, &bundle).map_err(|e| {
                        Error::certs(format!("clustermesh entry {:?}", config.entry), e)
                    })
                }) {
                    Ok(tls) => tls,
                    Err(e) => {
                        refused.push(Refused {
                            entry: config.entry.clone(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                };
                let status = Arc::new(Mutex::new(RemoteStatus {
                    name: name.to_string(),
                    entry: config.entry.clone(),
                    id: config.id.get(),
                    endpoints: config.endpoints.clone(),
                    ..Default::default()
                }));
                tracing::info!(remote = %name, endpoints = ?config.endpoints, "importing remote cluster");
                let task = tokio::spawn(remote_task(
                    self.store.clone(),
                    self.local.clone(),
                    self.leadership.clone(),
                    self.settings.clone(),
                    (self.resolver.clone(), tls.clone()),
                    config.clone(),
                    status.clone(),
                ));
                running.insert(
                    name,
                    Running {
                        config,
                        status,
                        task,
                        tls,
                    },
                );
            }
        }
        if !refused.is_empty() {
            self.refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(refused);
        }
        for name in removed {
            let writer = Writer::new(self.store.clone(), name.clone(), self.leadership.clone());
            match writer.delete_all().await {
                Ok(n) => {
                    tracing::info!(remote = %name, records = n, "remote removed from the config: its state is withdrawn")
                }
                Err(e) => {
                    tracing::warn!(remote = %name, error = %e, "withdrawing a removed remote failed")
                }
            }
        }
    }

    /// Status of every configured remote.
    pub fn status(&self) -> Vec<RemoteStatus> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values()
            .map(|r| {
                let mut s = r.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(t) = &s.last_event
                    && let Ok(t) = time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    )
                {
                    s.last_event_age_seconds = Some(
                        (time::OffsetDateTime::now_utc() - t)
                            .as_seconds_f64()
                            .max(0.0),
                    );
                }
                s
            })
            .collect()
    }

    /// Entries refused by the last config.
    pub fn refused(&self) -> Vec<Refused> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn update(status: &Mutex<RemoteStatus>, f: impl FnOnce(&mut RemoteStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Resolves remote endpoints: IP literals as they are, DNS names through
/// one hickory resolver built once per importer (so its cache and its
/// connections to the nameservers are shared by every remote and every
/// reconnection).
#[derive(Clone)]
pub struct EndpointResolver {
    /// The resolver, or why it could not be built (reported only when a
    /// remote names a host: IP endpoints need no resolver).
    dns: std::result::Result<hickory_resolver::TokioResolver, String>,
    /// Where it asks, for error messages.
    source: String,
}

impl std::fmt::Debug for EndpointResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointResolver")
            .field("source", &self.source)
            .field("ok", &self.dns.is_ok())
            .finish()
    }
}

impl EndpointResolver {
    /// A resolver asking `nameservers` (UDP, then TCP), or the system's
    /// resolver configuration (`/etc/resolv.conf`) when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Self {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        if nameservers.is_empty() {
            let dns = hickory_resolver::Resolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| {
                    format!(
                        "the system resolver configuration is unusable ({e}); set --dns-nameservers"
                    )
                });
            return EndpointResolver {
                dns,
                source: "the system resolver".into(),
            };
        }
        let servers = nameservers
            .iter()
            .map(|ns| {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
            })
            .collect();
        let dns = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| format!("building a resolver for {nameservers:?}: {e}"));
        EndpointResolver {
            dns,
            source: format!(
                "nameservers {}",
                nameservers
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// Resolves `host:port` endpoints. A name that does not resolve is
    /// skipped when another endpoint gives addresses; when none does, the
    /// error names the first failing host.
    pub async fn resolve(&self, entry: &str, endpoints: &[String]) -> Result<Vec<SocketAddr>> {
        let mut out = Vec::new();
        let mut failed = None;
        for e in endpoints {
            let (host, port) = e.rsplit_once(':').ok_or_else(|| Error::RemoteConfig {
                entry: entry.to_string(),
                reason: format!("endpoint {e:?} is not host:port"),
            })?;
            let port: u16 = port.parse().map_err(|_| Error::RemoteConfig {
                entry: entry.to_string(),
                reason: format!("endpoint {e:?}: bad port"),
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
                continue;
            }
            let looked_up = match &self.dns {
                Ok(dns) => dns
                    .lookup_ip(host)
                    .await
                    .map(|ips| ips.iter().collect::<Vec<_>>())
                    .map_err(|e| format!("{e} (asked {})", self.source)),
                Err(why) => Err(why.clone()),
            };
            match looked_up {
                Ok(ips) if !ips.is_empty() => {
                    out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                }
                Ok(_) => {
                    failed.get_or_insert((
                        host.to_string(),
                        format!("no address (asked {})", self.source),
                    ));
                }
                Err(detail) => {
                    tracing::warn!(%entry, %host, %detail, "endpoint does not resolve");
                    failed.get_or_insert((host.to_string(), detail));
                }
            }
        }
        match failed {
            Some((host, detail)) if out.is_empty() => Err(Error::Resolve {
                entry: entry.to_string(),
                host,
                detail,
            }),
            _ => Ok(out),
        }
    }
}

/// How a remote is reached: the shared resolver and its live TLS material.
type Reach = (EndpointResolver, LiveTls);

async fn connect(config: &RemoteConfig, (resolver, tls): &Reach) -> Result<ExportClient> {
    let addrs = resolver.resolve(&config.entry, &config.endpoints).await?;
    let tls = tls
        .client_config()
        .map_err(|e| Error::certs(format!("clustermesh entry {:?}: TLS", config.entry), e))?;
    Ok(ExportClient::connect(addrs, &config.server_name, tls).await?)
}

fn check_info(
    config: &RemoteConfig,
    local: &LocalCluster,
    info: &mesh_proto::pb::ClusterInfo,
) -> std::result::Result<(), String> {
    if info.name != config.name.as_str() {
        return Err(format!(
            "the server at {:?} is cluster {:?}, not {:?} as configured",
            config.endpoints, info.name, config.name
        ));
    }
    if info.id != u32::from(config.id.get()) {
        return Err(format!(
            "cluster {} reports id {}, configured {}",
            info.name,
            info.id,
            config.id.get()
        ));
    }
    let cidrs: Vec<IpNet> = info
        .pod_cidrs
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    mesh_api::cidr::check_pod_cidrs_disjoint(&local.name, &local.pod_cidrs, &config.name, &cidrs)
        .map_err(|e| format!("{e}; pod CIDRs of connected clusters must not overlap"))
}

async fn load_cache(writer: &Writer) -> Mirror {
    let mut records = Vec::new();
    for kind in Kind::ALL {
        match writer.list(kind).await {
            Ok(items) => records.extend(items.into_iter().map(|(_, r)| r)),
            Err(e) => {
                tracing::warn!(remote = %writer.cluster(), error = %e, "reading the cached state")
            }
        }
    }
    Mirror::with_records(records)
}

fn counts(mirror: &Mirror) -> BTreeMap<String, usize> {
    let mut c: BTreeMap<String, usize> = Kind::ALL
        .iter()
        .map(|k| (k.plural().to_string(), 0))
        .collect();
    for (kind, _) in mirror.records().keys() {
        *c.entry(kind.plural().to_string()).or_default() += 1;
    }
    c
}

async fn write_changes(writer: &Writer, remote: &ClusterName, changes: Vec<Change>) -> Result<()> {
    let mut batch = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::Upsert(record) => {
                if record.cluster() != remote {
                    tracing::warn!(remote = %remote, record_cluster = %record.cluster(), key = %record.key(), "remote sent a record of another cluster: ignored");
                    continue;
                }
                batch.push(BatchOp::Upsert(record));
            }
            Change::Delete((kind, wire)) => {
                let Some(key) = wire.strip_prefix(&format!("{remote}/")) else {
                    continue;
                };
                batch.push(BatchOp::Delete(kind, key.to_string()));
            }
        }
    }
    writer.write_batch(batch).await
}

async fn remote_task(
    store: Arc<dyn Store>,
    local: LocalCluster,
    mut leadership: Leadership,
    settings: ImportSettings,
    reach: Reach,
    config: RemoteConfig,
    status: Arc<Mutex<RemoteStatus>>,
) {
    let remote = config.name.clone();
    let writer = Writer::new(store, remote.clone(), leadership.clone());
    leadership.wait_leader().await;
    let mut mirror = load_cache(&writer).await;
    let mut disconnected_at: Option<(std::time::Instant, String)> = if mirror.records().is_empty() {
        None
    } else {
        Some((std::time::Instant::now(), now_rfc3339()))
    };
    update(&status, |s| {
        s.counts = counts(&mirror);
        s.stale_since = disconnected_at.as_ref().map(|d| d.1.clone());
    });
    let mut backoff = Duration::from_millis(200);
    loop {
        if !leadership.is_leader() {
            update(&status, |s| {
                s.connected = false;
                s.last_error = Some("this replica is not the leader; the leader imports".into());
            });
            leadership.wait_leader().await;
            // The previous leader may have written meanwhile: start from the store.
            mirror = load_cache(&writer).await;
            update(&status, |s| s.counts = counts(&mirror));
        }
        if let Some((since, _)) = &disconnected_at
            && since.elapsed() >= settings.stale_timeout
            && !mirror.records().is_empty()
        {
            match writer.delete_all().await {
                Ok(n) => {
                    tracing::warn!(%remote, records = n, "remote unreachable past the stale timeout: its state is withdrawn")
                }
                Err(e) => tracing::warn!(%remote, error = %e, "withdrawing stale state failed"),
            }
            mirror = Mirror::new();
            update(&status, |s| {
                s.counts = counts(&mirror);
                s.synced = false;
            });
        }
        let result = session(
            &config,
            &reach,
            &local,
            &writer,
            &mut mirror,
            &status,
            &mut disconnected_at,
        )
        .await;
        let err = match result {
            Ok(()) => "the export stream ended".to_string(),
            Err(e) => {
                if !matches!(
                    e,
                    Error::Export(_)
                        | Error::Resolve { .. }
                        | Error::RemoteConfig { .. }
                        | Error::Certs { .. }
                        | Error::Domain { .. }
                ) {
                    // A write failed: what the mirror holds may not be in the
                    // store, so the next session starts from the store.
                    mirror = load_cache(&writer).await;
                }
                e.to_string()
            }
        };
        let (refused, was_up) = {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            (s.refused.is_some(), s.connected)
        };
        if disconnected_at.is_none() {
            disconnected_at = Some((std::time::Instant::now(), now_rfc3339()));
        }
        tracing::warn!(%remote, error = %err, "remote cluster unreachable; keeping its last known state (stale)");
        update(&status, |s| {
            s.connected = false;
            s.last_error = Some(err);
            s.stale_since = disconnected_at.as_ref().map(|d| d.1.clone());
        });
        if was_up {
            backoff = Duration::from_millis(200);
        }
        let wait = if refused {
            settings.max_backoff
        } else {
            backoff
        };
        let until_timeout = disconnected_at
            .as_ref()
            .map(|(since, _)| settings.stale_timeout.saturating_sub(since.elapsed()))
            .unwrap_or(wait);
        tokio::time::sleep(wait.min(until_timeout).max(Duration::from_millis(50))).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// One connection: Info checks, then the watch until it fails. Runs in a
/// `remote_session` span naming the remote, this cluster and the revision
/// it resumed from, the fields people filter a remote's story by.
#[tracing::instrument(
    name = "remote_session",
    skip_all,
    fields(remote = %config.name, cluster = %local.name, resume = tracing::field::Empty)
)]
async fn session(
    config: &RemoteConfig,
    reach: &Reach,
    local: &LocalCluster,
    writer: &Writer,
    mirror: &mut Mirror,
    status: &Mutex<RemoteStatus>,
    disconnected_at: &mut Option<(std::time::Instant, String)>,
) -> Result<()> {
    let remote = &config.name;
    let mut client = connect(config, reach).await?;
    let info = client.info().await?;
    if let Err(reason) = check_info(config, local, &info) {
        tracing::warn!(%remote, %reason, "remote cluster refused");
        update(status, |s| s.refused = Some(reason.clone()));
        return Err(Error::RemoteConfig {
            entry: config.entry.clone(),
            reason,
        });
    }
    let resume = mirror.resume_revision();
    tracing::Span::current().record("resume", resume);
    mirror.begin_watch(resume);
    let mut stream = client
        .watch(&[], resume, &format!("mesh-apiserver of {}", local.name))
        .await?;
    update(status, |s| {
        s.connected = true;
        s.refused = None;
        s.connections += 1;
    });
    tracing::info!(%remote, resume, "watching remote cluster");
    let mut leadership = writer.leadership().clone();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = leadership.wait_lost() => return Err(Error::NotLeader),
        };
        let Some(item) = item else { break };
        // Take whatever else is already here, and write it as one batch.
        let mut items = vec![item];
        while items.len() < 1024 {
            match stream.next().now_or_never() {
                Some(Some(item)) => items.push(item),
                _ => break,
            }
        }
        let mut changes = Vec::new();
        let mut synced_now = false;
        let mut failed = None;
        for item in items {
            match item {
                Ok(event) => {
                    synced_now |= matches!(event, mesh_proto::WatchEvent::SyncComplete { .. });
                    changes.extend(mirror.apply(&event));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        write_changes(writer, remote, changes).await?;
        if synced_now {
            for kind in Kind::ALL {
                writer.mark_synced(kind).await?;
            }
        }
        update(status, |s| {
            s.last_event = Some(now_rfc3339());
            s.revision = mirror.revision();
            s.counts = counts(mirror);
            if synced_now {
                s.synced = true;
                s.stale_since = None;
                s.last_error = None;
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        if synced_now {
            *disconnected_at = None;
            tracing::info!(%remote, revision = mirror.revision(), records = mirror.records().len(), "remote cluster synced");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

impl RemoteStatus {
    /// Whether the cached state is usable but out of date.
    pub fn is_stale(&self) -> bool {
        self.stale_since.is_some()
    }
}
