//! The client side of `Export`, for importing mesh-apiservers and
//! node-agents: connect over mutual TLS, `Info`, `Watch`, and a [`Mirror`]
//! that applies a watch to a local copy (snapshots replace, deltas patch,
//! `Reset` + snapshot removes only what disappeared).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use mesh_api::{Kind, Record};
use mesh_proto::{WatchEvent, pb};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A connected `Export` client.
#[derive(Debug, Clone)]
pub struct ExportClient {
    inner: pb::export_client::ExportClient<Channel>,
    endpoint: String,
}

impl ExportClient {
    /// Connects to the first reachable of `addrs`, verifying the server
    /// certificate for `server_name` and presenting the client certificate
    /// in `tls`.
    pub async fn connect(
        addrs: Vec<SocketAddr>,
        server_name: &str,
        mut tls: ClientConfig,
    ) -> Result<Self> {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let name = mesh_certs::tls::server_name(server_name).map_err(|source| Error::Certs {
            context: format!("server name {server_name}"),
            source,
        })?;
        let endpoint = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let addrs = Arc::new(addrs);
        let channel = Endpoint::from_static("http://mesh-apiserver.invalid")
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_with_connector(tower::service_fn(move |_uri| {
                let connector = connector.clone();
                let name = name.clone();
                let addrs = addrs.clone();
                async move {
                    let mut last = std::io::Error::other("no endpoint addresses");
                    for addr in addrs.iter() {
                        match TcpStream::connect(addr).await {
                            Ok(tcp) => {
                                let tls = connector.connect(name.clone(), tcp).await?;
                                return Ok::<_, std::io::Error>(TokioIo::new(tls));
                            }
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                }
            }))
            .await
            .map_err(|source| Error::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok(ExportClient {
            inner: pb::export_client::ExportClient::new(channel)
                .max_decoding_message_size(64 << 20),
            endpoint,
        })
    }

    /// The server's cluster facts.
    pub async fn info(&mut self) -> Result<pb::ClusterInfo> {
        self.inner
            .info(pb::InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::Rpc {
                endpoint: self.endpoint.clone(),
                source: Box::new(s),
            })
    }

    /// Asks the server to sign `csr_pem` (PKCS#10) for the identity this
    /// client authenticated with; returns the new certificate (PEM).
    pub async fn renew(&mut self, csr_pem: &str) -> Result<String> {
        self.inner
            .renew(pb::RenewRequest {
                csr_pem: csr_pem.to_string(),
            })
            .await
            .map(|r| r.into_inner().cert_pem)
            .map_err(|s| Error::Rpc {
                endpoint: self.endpoint.clone(),
                source: Box::new(s),
            })
    }

    /// Opens a watch (`kinds` empty: all; `resume` 0: snapshot first).
    pub async fn watch(
        &mut self,
        kinds: &[Kind],
        resume: u64,
        client: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent>> + Send + use<>> {
        let endpoint = self.endpoint.clone();
        let stream = self
            .inner
            .watch(pb::WatchRequest {
                kinds: kinds.iter().map(|k| pb::Kind::from(*k).into()).collect(),
                resume_revision: resume,
                client: client.to_string(),
            })
            .await
            .map_err(|s| Error::Rpc {
                endpoint: endpoint.clone(),
                source: Box::new(s),
            })?
            .into_inner();
        Ok(stream.map(move |item| {
            let ev = item.map_err(|s| Error::Rpc {
                endpoint: endpoint.clone(),
                source: Box::new(s),
            })?;
            let key = match &ev.event {
                Some(pb::watch_event::Event::Delete(d)) => Some(d.key.clone()),
                _ => None,
            };
            WatchEvent::try_from(&ev).map_err(|source| Error::Domain {
                context: format!("watch event {}", key.unwrap_or_default()),
                source,
            })
        }))
    }
}

/// The identity of a record in a [`Mirror`]: kind and `<cluster>/<key>`.
pub type MirrorKey = (Kind, String);

/// The key of a record in a mirror.
pub fn mirror_key(record: &Record) -> MirrorKey {
    (
        record.kind(),
        mesh_proto::wire_key(record.cluster().as_str(), &record.key()),
    )
}

/// What applying one event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A record was added or changed.
    Upsert(Record),
    /// A record was removed.
    Delete(MirrorKey),
}

/// A local copy of a watched export.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    records: BTreeMap<MirrorKey, Record>,
    revision: u64,
    synced: bool,
    /// During a snapshot: the keys it has sent so far.
    snapshot: Option<BTreeSet<MirrorKey>>,
}

impl Mirror {
    /// An empty mirror.
    pub fn new() -> Self {
        Self::default()
    }

    /// A mirror holding `records` (e.g. a cache read back from a store),
    /// not yet synced.
    pub fn with_records(records: impl IntoIterator<Item = Record>) -> Self {
        Mirror {
            records: records.into_iter().map(|r| (mirror_key(&r), r)).collect(),
            ..Self::default()
        }
    }

    /// The records.
    pub fn records(&self) -> &BTreeMap<MirrorKey, Record> {
        &self.records
    }

    /// The last revision applied (resume from it).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether a snapshot or resume completed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The revision to resume from (0 when a snapshot is needed).
    pub fn resume_revision(&self) -> u64 {
        if self.synced { self.revision } else { 0 }
    }

    /// Call before opening a watch: with `resume` 0 a snapshot follows and
    /// whatever it does not mention is removed at its end.
    pub fn begin_watch(&mut self, resume: u64) {
        self.snapshot = (resume == 0).then(BTreeSet::new);
    }

    /// Applies one event; returns what changed.
    pub fn apply(&mut self, event: &WatchEvent) -> Vec<Change> {
        match event {
            WatchEvent::Upsert { revision, record } => {
                self.revision = self.revision.max(*revision);
                let key = mirror_key(record);
                if let Some(seen) = &mut self.snapshot {
                    seen.insert(key.clone());
                }
                if self.records.get(&key) == Some(record) {
                    return Vec::new();
                }
                self.records.insert(key, record.clone());
                vec![Change::Upsert(record.clone())]
            }
            WatchEvent::Delete {
                revision,
                kind,
                key,
            } => {
                self.revision = self.revision.max(*revision);
                let k = (*kind, key.clone());
                match self.records.remove(&k) {
                    Some(_) => vec![Change::Delete(k)],
                    None => Vec::new(),
                }
            }
            WatchEvent::Reset { .. } => {
                // Keep serving what we have until the snapshot is complete;
                // revisions start over (possibly in another store epoch).
                self.snapshot = Some(BTreeSet::new());
                self.synced = false;
                self.revision = 0;
                Vec::new()
            }
            WatchEvent::SyncComplete {
                revision,
                kinds,
                pending,
            } => {
                self.revision = *revision;
                self.synced = true;
                let Some(seen) = self.snapshot.take() else {
                    return Vec::new();
                };
                // A pending cluster's records are kept: the server does not
                // hold them yet, their absence is not a withdrawal.
                let is_pending = |k: &MirrorKey| {
                    k.1.split_once('/')
                        .is_some_and(|(cluster, _)| pending.iter().any(|p| p == cluster))
                };
                let gone: Vec<MirrorKey> = self
                    .records
                    .keys()
                    .filter(|k| kinds.contains(&k.0) && !seen.contains(*k) && !is_pending(k))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .map(|k| {
                        self.records.remove(&k);
                        Change::Delete(k)
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests;
