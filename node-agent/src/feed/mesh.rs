//! The mesh feed: one Watch, over mutual TLS with the node's certificate, to
//! the local mesh-apiserver, which serves every cluster's records (its own
//! and the remotes it caches). The records are kept in a
//! [`Mirror`]; on a lost connection the agent reconnects with backoff and
//! resumes from the last revision, keeping the last known state meanwhile
//! (routes and peers keep working while the mesh-apiserver is away).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use ipnet::IpNet;
use mesh_api::{
    ClusterId, ClusterName, EndpointRecord, Identity, Kind, LabelSet, NodeRecord, Record,
    ServiceRecord,
};
use mesh_export_client::{ExportClient, Mirror};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The feed's state as `/v1/status` and `/metrics` report it.
pub use mesh_agent_api::status::MeshFeedStatus;

/// Identities, endpoints and nodes of every cluster, read at once (what
/// one [`crate::identity_sync`] pass works from).
#[derive(Debug, Clone, Default)]
pub struct MeshView {
    /// Every identity of every cluster with its labels.
    pub identities: BTreeMap<Identity, LabelSet>,
    /// Every endpoint record of every cluster.
    pub endpoints: Vec<EndpointRecord>,
    /// Every node record of every cluster.
    pub nodes: Vec<NodeRecord>,
}

/// The shared mirror and feed status; the feed task writes, the agent reads.
#[derive(Debug)]
pub struct MeshFeed {
    /// This cluster: other clusters' records that would touch it are not
    /// used ([`mesh_api::trust::check_foreign_record`]). `None`: no screen
    /// (tests of the plumbing only).
    local: Option<(ClusterName, ClusterId)>,
    /// Records refused now (each logged once while it stays refused).
    logged: Mutex<std::collections::BTreeSet<(Kind, String)>>,
    mirror: Mutex<Mirror>,
    status: Mutex<MeshFeedStatus>,
    last_event: Mutex<Option<SystemTime>>,
    changed: watch::Sender<u64>,
    /// The client certificate it presents, followed live.
    certificate: Mutex<Option<mesh_certs::LiveTls>>,
    /// Configured remote clusters' declared IPv4 pod CIDRs, as this
    /// cluster's mesh-apiserver last said (kept across disconnects).
    remote_pod_cidrs: Mutex<Vec<ipnet::Ipv4Net>>,
}

/// How often the agent asks its mesh-apiserver again which remotes are
/// configured.
const INFO_REFRESH: Duration = Duration::from_secs(30);

impl MeshFeed {
    /// An empty feed for `address`.
    pub fn new(address: &str) -> Arc<MeshFeed> {
        Self::build(address, None)
    }

    /// A feed for the agent of `cluster` (id `id`): records of other
    /// clusters are screened before use, as a second line behind the
    /// mesh-apiserver's import checks.
    pub fn for_cluster(address: &str, cluster: ClusterName, id: ClusterId) -> Arc<MeshFeed> {
        Self::build(address, Some((cluster, id)))
    }

    fn build(address: &str, local: Option<(ClusterName, ClusterId)>) -> Arc<MeshFeed> {
        Arc::new(MeshFeed {
            local,
            logged: Mutex::default(),
            mirror: Mutex::new(Mirror::new()),
            status: Mutex::new(MeshFeedStatus {
                address: address.to_string(),
                ..MeshFeedStatus::default()
            }),
            last_event: Mutex::new(None),
            changed: watch::channel(0).0,
            certificate: Mutex::new(None),
            remote_pod_cidrs: Mutex::default(),
        })
    }

    /// Every configured remote cluster's declared IPv4 pod CIDRs (strict
    /// mode covers them whether or not their nodes are known).
    pub fn remote_pod_cidrs(&self) -> Vec<ipnet::Ipv4Net> {
        self.remote_pod_cidrs.lock().expect("lock").clone()
    }

    /// Learns the configured remotes from `client` (a server too old to
    /// say leaves what was known).
    async fn refresh_remotes(&self, client: &mut ExportClient) {
        match client.info().await {
            Ok(info) => {
                let mut cidrs: Vec<ipnet::Ipv4Net> = info
                    .remotes
                    .iter()
                    .flat_map(|r| r.pod_cidrs.iter())
                    .filter_map(|c| c.parse().ok())
                    .collect();
                cidrs.sort();
                cidrs.dedup();
                let mut have = self.remote_pod_cidrs.lock().expect("lock");
                if *have != cidrs {
                    tracing::info!(?cidrs, "configured remote clusters' pod CIDRs");
                    *have = cidrs;
                    drop(have);
                    self.changed.send_modify(|v| *v += 1);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the mesh-apiserver which remotes are configured; keeping what was known")
            }
        }
    }

    /// Reports `tls`'s certificate expiry in the status (and `/metrics`).
    pub fn report_certificate(&self, tls: mesh_certs::LiveTls) {
        *self.certificate.lock().expect("certificate lock") = Some(tls);
    }

    /// A receiver that sees a new value whenever the records change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Calls `use_it` with every record the agent may use: all of its own
    /// cluster's, and those of other clusters that pass the screen (each
    /// refused one logged once). Returns how many were refused, by kind.
    fn screened(&self, mut use_it: impl FnMut(&Record)) -> BTreeMap<String, usize> {
        let mirror = self.mirror.lock().expect("mirror lock");
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        let Some((name, id)) = &self.local else {
            mirror.records().values().for_each(use_it);
            return refused;
        };
        let own = own_pod_cidrs(mirror.records().values(), name);
        let mut logged = self.logged.lock().expect("lock");
        let mut now = std::collections::BTreeSet::new();
        for r in mirror.records().values() {
            match mesh_api::trust::check_foreign_record(name, *id, &own, r) {
                Ok(()) => use_it(r),
                Err(refusal) => {
                    *refused.entry(r.kind().to_string()).or_default() += 1;
                    let key = (r.kind(), format!("{}/{}", r.cluster(), r.key()));
                    if !logged.contains(&key) {
                        tracing::warn!(kind = %key.0, record = %key.1, reason = %refusal, "record of another cluster refused: not used");
                    }
                    now.insert(key);
                }
            }
        }
        // Only what is refused now is remembered: a record that comes back
        // refused after a valid spell is logged again.
        *logged = now;
        refused
    }

    /// The node records of every cluster, sorted by cluster and name.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let mut out = Vec::new();
        self.screened(|r| {
            if let Record::Node(n) = r {
                out.push(n.clone());
            }
        });
        out
    }

    /// The global-service records of every cluster, sorted by cluster and
    /// namespace/name.
    pub fn services(&self) -> Vec<ServiceRecord> {
        let mut out = Vec::new();
        self.screened(|r| {
            if let Record::Service(s) = r {
                out.push(s.clone());
            }
        });
        out
    }

    /// Identities, endpoints and nodes of every cluster, in one consistent
    /// read (what [`crate::identity_sync`] works from).
    pub fn view(&self) -> MeshView {
        let mut view = MeshView::default();
        self.screened(|r| match r {
            Record::Identity(i) => {
                view.identities.insert(i.id, i.labels.clone());
            }
            Record::Endpoint(e) => view.endpoints.push(e.clone()),
            Record::Node(n) => view.nodes.push(n.clone()),
            Record::Service(_) => {}
        });
        view
    }

    /// The current status.
    pub fn status(&self) -> MeshFeedStatus {
        let mut s = self.status.lock().expect("status lock").clone();
        s.last_event_seconds_ago = self
            .last_event
            .lock()
            .expect("lock")
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs());
        let mirror = self.mirror.lock().expect("mirror lock");
        s.synced = mirror.synced();
        s.revision = mirror.revision();
        let mut counts: BTreeMap<String, usize> =
            Kind::ALL.iter().map(|k| (k.to_string(), 0)).collect();
        for (kind, _) in mirror.records().keys() {
            *counts.entry(kind.to_string()).or_default() += 1;
        }
        s.counts = counts;
        drop(mirror);
        s.refused = self.screened(|_| {});
        s.certificate_expiry_seconds = self
            .certificate
            .lock()
            .expect("certificate lock")
            .as_ref()
            .and_then(|tls| tls.lifetime().ok())
            .map(|life| life.seconds_left_now() as i64);
        s
    }

    fn set(&self, f: impl FnOnce(&mut MeshFeedStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    /// Runs the feed until the task is dropped: connect, watch, apply;
    /// on failure wait (1 s doubling up to `max_backoff`) and resume.
    pub async fn run(self: Arc<Self>, tls: rustls::ClientConfig, max_backoff: Duration) {
        let address = self.status.lock().expect("lock").address.clone();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.watch_once(&address, tls.clone()).await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    tracing::warn!(%address, "mesh-apiserver closed the watch; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, retry_in = ?backoff,
                        "mesh feed broken; keeping the last known state");
                    self.set(|s| s.last_error = Some(e.to_string()));
                }
            }
            self.set(|s| s.connected = false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    async fn watch_once(&self, address: &str, tls: rustls::ClientConfig) -> Result<()> {
        let feed_err = |e: Box<dyn std::error::Error + Send + Sync>| Error::MeshFeed {
            endpoint: address.to_string(),
            source: e,
        };
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(address)
            .to_string();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|e| feed_err(Box::new(e)))?
            .collect();
        let mut client = ExportClient::connect(addrs, &host, tls)
            .await
            .map_err(|e| feed_err(Box::new(e)))?;
        let resume = {
            let mut m = self.mirror.lock().expect("mirror lock");
            let r = m.resume_revision();
            m.begin_watch(r);
            r
        };
        self.refresh_remotes(&mut client).await;
        let mut refresh = tokio::time::interval(INFO_REFRESH);
        refresh.tick().await;
        let mut stream = client
            .watch(&[], resume, "node-agent")
            .await
            .map_err(|e| feed_err(Box::new(e)))?;
        self.set(|s| {
            s.connected = true;
            s.connects += 1;
        });
        tracing::info!(%address, resume, "mesh feed connected");
        loop {
            let event = tokio::select! {
                event = stream.next() => match event {
                    Some(e) => e,
                    None => break,
                },
                _ = refresh.tick() => {
                    self.refresh_remotes(&mut client).await;
                    continue;
                }
            };
            let event = event.map_err(|e| feed_err(Box::new(e)))?;
            let (changes, synced) = {
                let mut m = self.mirror.lock().expect("mirror lock");
                let was = m.synced();
                let ch = m.apply(&event);
                (ch.len(), !was && m.synced())
            };
            *self.last_event.lock().expect("lock") = Some(SystemTime::now());
            if synced {
                self.set(|s| s.last_error = None);
                tracing::info!(%address, "mesh feed synced");
            }
            if changes > 0 || synced {
                self.changed.send_modify(|v| *v += 1);
            }
        }
        Ok(())
    }
}

/// This cluster's pod CIDRs as its own mesh-apiserver exports them (the
/// pod CIDRs of its nodes; the exporter keeps them inside `--pod-cidrs`).
fn own_pod_cidrs<'a>(
    records: impl Iterator<Item = &'a Record>,
    cluster: &ClusterName,
) -> Vec<IpNet> {
    records
        .filter_map(|r| match r {
            Record::Node(n) if &n.cluster == cluster => Some(n.pod_cidrs.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The node's client TLS config from the `--mesh-client-*` files; it
/// accepts only the mesh-apiserver of `cluster`.
pub fn client_tls(
    cert: &Path,
    key: &Path,
    ca: &Path,
    cluster: &ClusterName,
) -> Result<rustls::ClientConfig> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(Error::io("read", p));
    let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
    let bad = |flag: &'static str, e: &dyn std::fmt::Display| Error::Config {
        flag,
        reason: e.to_string(),
    };
    let id = mesh_certs::TlsIdentity::from_pem(
        &cert_pem,
        &key_pem,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .map_err(|e| bad("mesh-client-cert", &e))?;
    let bundle = mesh_certs::TrustBundle::from_pem(&ca_pem, &ca.display().to_string())
        .map_err(|e| bad("mesh-client-ca", &e))?;
    let expected = id
        .server_of(cluster.clone())
        .map_err(|e| bad("mesh-client-cert", &e))?;
    mesh_certs::tls::client_config(id, &bundle, &expected).map_err(|e| bad("mesh-client-cert", &e))
}

#[cfg(test)]
mod tests;
