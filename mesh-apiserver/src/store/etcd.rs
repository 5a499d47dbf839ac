//! The etcd store: replicas of a mesh-apiserver share one etcd; its
//! revisions, watches, compaction, transactions and leases are etcd's own.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};

use super::{Condition, EventStream, KeyValue, LeaseId, Op, Store, StoreEvent};
use crate::error::{Error, Result};

/// The etcd [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    tls_hint: &'static str,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Where etcd is and how to reach it: what `--etcd-*` give once checked
/// and read ([`crate::config::Config::etcd`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConnection {
    /// Client URLs, all `http://` or all `https://`.
    pub endpoints: Vec<String>,
    /// TLS material for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

/// TLS towards etcd: only `ca_pem` is trusted (no system roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA bundle etcd's server certificate must chain to (PEM).
    pub ca_pem: String,
    /// The client certificate, for etcd's `--client-cert-auth`.
    pub client: Option<EtcdClientPem>,
    /// The name to verify in etcd's certificate instead of the endpoint's host.
    pub server_name: Option<String>,
}

/// A client certificate and its key (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdClientPem {
    /// Certificate chain, leaf first.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl EtcdConnection {
    /// Plaintext endpoints.
    pub fn plain(endpoints: &[String]) -> Self {
        EtcdConnection {
            endpoints: endpoints.to_vec(),
            tls: None,
        }
    }
}

// The key stays out of logs and panics.
impl std::fmt::Debug for EtcdClientPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClientPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl EtcdStore {
    /// Connects to etcd at plaintext `http://host:port` endpoints.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(&EtcdConnection::plain(endpoints)).await
    }

    /// Connects to etcd as `connection` says (the path `main` takes). The
    /// connection is made lazily: a refused handshake surfaces on the first
    /// request.
    pub async fn connect_with(connection: &EtcdConnection) -> Result<Self> {
        let endpoints = &connection.endpoints;
        let joined = endpoints.join(",");
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &connection.tls {
            let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(client) = &tls.client {
                options = options.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
            }
            if let Some(name) = &tls.server_name {
                options = options.domain_name(name.clone());
            }
            opts = opts.with_tls(options);
        }
        let tls_hint = tls_hint(connection.tls.as_ref());
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|source| etcd_error(&joined, "connect", source, tls_hint))?;
        Ok(EtcdStore {
            client,
            endpoints: joined,
            tls_hint,
        })
    }

    fn err(&self, operation: &'static str) -> impl FnOnce(etcd_client::Error) -> Error + '_ {
        move |source| etcd_error(&self.endpoints, operation, source, self.tls_hint)
    }
}

/// What to check when a TLS connection to etcd fails. etcd's refusal of a
/// client certificate reads as a TLS alert or, under TLS 1.3 (the client
/// finishes its handshake before the server has checked its certificate),
/// as a broken pipe or a closed connection on the first request.
fn tls_hint(tls: Option<&EtcdTls>) -> &'static str {
    match tls {
        None => "",
        Some(t) if t.client.is_none() => {
            " (TLS: no client certificate is given with --etcd-cert and --etcd-key, which an etcd started with --client-cert-auth refuses; and --etcd-ca must have issued etcd's server certificate; etcd's log names the reason it refused)"
        }
        Some(_) => {
            " (TLS: etcd must trust the issuer of --etcd-cert (its --trusted-ca-file), and --etcd-ca must have issued etcd's server certificate for the endpoint's host or --etcd-server-name; etcd's log names the reason it refused)"
        }
    }
}

/// An [`Error::Etcd`], with `tls_hint` when the failure looks like the TLS
/// connection's (not, say, a refused TCP connection or a failed condition).
fn etcd_error(
    endpoints: &str,
    operation: &'static str,
    source: etcd_client::Error,
    tls_hint: &'static str,
) -> Error {
    let text = mesh_api::report(&source).to_lowercase();
    let tls_failure = [
        "alert",
        "certificate",
        "handshake",
        "broken pipe",
        "connection closed",
        "tls",
    ]
    .iter()
    .any(|w| text.contains(w));
    Error::Etcd {
        endpoints: endpoints.to_string(),
        operation,
        source,
        hint: if tls_failure { tls_hint } else { "" },
    }
}

/// Keys per page of a listing.
const PAGE: i64 = 500;

/// Largest etcd response accepted (a page of big service records, or a
/// watch response of one large transaction); gRPC's default is 4 MiB.
const MAX_MESSAGE: usize = 256 << 20;

impl EtcdStore {
    /// Lists `prefix` page by page, every page at the first page's revision
    /// (or at `at`), so the result is one consistent snapshot of any size.
    async fn list_at(
        &self,
        prefix: &str,
        at: Option<i64>,
    ) -> std::result::Result<(Vec<KeyValue>, u64), etcd_client::Error> {
        let end = crate::store::prefix_end(prefix);
        let mut client = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut items = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = at;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(r) = revision {
                opts = opts.with_revision(r);
            }
            let resp = client.get(from.clone(), Some(opts)).await?;
            let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            let rev_used = *revision.get_or_insert(header_rev);
            items.extend(resp.kvs().iter().map(convert));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((items, rev(rev_used))),
            }
        }
    }
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn convert(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: rev(kv.mod_revision()),
        create_revision: rev(kv.create_revision()),
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(self.err("get"))?;
        Ok(resp.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        self.list_at(prefix, None).await.map_err(self.err("list"))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let resp = self
            .client
            .clone()
            .put(key, value, None)
            .await
            .map_err(self.err("put"))?;
        Ok(resp.header().map(|h| rev(h.revision())).unwrap_or(0))
    }

    async fn delete(&self, key: &str) -> Result<Option<u64>> {
        let resp = self
            .client
            .clone()
            .delete(key, None)
            .await
            .map_err(self.err("delete"))?;
        Ok((resp.deleted() > 0).then(|| resp.header().map(|h| rev(h.revision())).unwrap_or(0)))
    }

    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<Option<u64>> {
        let compares: Vec<Compare> = conditions
            .into_iter()
            .map(|c| match c {
                Condition::Absent(k) => Compare::create_revision(k, CompareOp::Equal, 0),
                Condition::ModRevision(k, r) => {
                    Compare::mod_revision(k, CompareOp::Equal, i64::try_from(r).unwrap_or(-1))
                }
                Condition::Value(k, v) => Compare::value(k, CompareOp::Equal, v),
            })
            .collect();
        let txn_ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l.0)))
                }
                Op::Delete(key) => TxnOp::delete(key, None),
            })
            .collect();
        let resp = self
            .client
            .clone()
            .txn(Txn::new().when(compares).and_then(txn_ops))
            .await
            .map_err(self.err("txn"))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| rev(h.revision())).unwrap_or(0)))
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<EventStream> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64::try_from(from_revision.max(1)).unwrap_or(i64::MAX));
        let stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(prefix, Some(opts))
            .await
            .map_err(self.err("watch"))?;
        let (_sender, responses) = stream.split();
        let prefix = prefix.to_string();
        let endpoints = self.endpoints.clone();
        let tls_hint = self.tls_hint;
        // The sender is dropped: etcd keeps the watch open while the
        // response stream lives.
        let s = futures::stream::unfold(
            (responses, std::collections::VecDeque::new(), false),
            move |(mut responses, mut pending, mut done)| {
                let prefix = prefix.clone();
                let endpoints = endpoints.clone();
                async move {
                    loop {
                        if let Some(item) = pending.pop_front() {
                            return Some((item, (responses, pending, done)));
                        }
                        if done {
                            return None;
                        }
                        let resp = match responses.message().await {
                            Ok(Some(r)) => r,
                            Ok(None) => {
                                done = true;
                                pending.push_back(Err(Error::WatchEnded {
                                    prefix: prefix.clone(),
                                    reason: "etcd closed the watch stream".into(),
                                }));
                                continue;
                            }
                            Err(source) => {
                                done = true;
                                pending.push_back(Err(etcd_error(
                                    &endpoints, "watch", source, tls_hint,
                                )));
                                continue;
                            }
                        };
                        if resp.compact_revision() > 0 {
                            done = true;
                            pending.push_back(Err(Error::Compacted {
                                requested: from_revision,
                                compacted: rev(resp.compact_revision()),
                            }));
                            continue;
                        }
                        if resp.canceled() {
                            done = true;
                            pending.push_back(Err(Error::WatchEnded {
                                prefix: prefix.clone(),
                                reason: format!(
                                    "etcd canceled the watch: {}",
                                    resp.cancel_reason()
                                ),
                            }));
                            continue;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            pending.push_back(Ok(match ev.event_type() {
                                EventType::Put => StoreEvent::Put(convert(kv)),
                                EventType::Delete => StoreEvent::Delete {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    revision: rev(kv.mod_revision()),
                                },
                            }));
                        }
                    }
                }
            },
        );
        Ok(Box::pin(s))
    }

    async fn changes_since(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<(Vec<StoreEvent>, u64)> {
        let (now, current) = self.list(prefix).await?;
        let from = from_revision.max(1);
        if from > current + 1 {
            return Err(Error::FutureRevision {
                requested: from_revision,
                current,
            });
        }
        let before: Vec<KeyValue> = if from <= 1 {
            Vec::new()
        } else {
            match self
                .list_at(prefix, Some(i64::try_from(from - 1).unwrap_or(i64::MAX)))
                .await
            {
                Ok((items, _)) => items,
                Err(e) if e.to_string().contains("compacted") => {
                    return Err(Error::Compacted {
                        requested: from_revision,
                        compacted: 0,
                    });
                }
                Err(e) if e.to_string().contains("future revision") => {
                    return Err(Error::FutureRevision {
                        requested: from_revision,
                        current,
                    });
                }
                Err(source) => {
                    return Err(etcd_error(
                        &self.endpoints,
                        "historical list",
                        source,
                        self.tls_hint,
                    ));
                }
            }
        };
        let now_keys: std::collections::HashSet<&str> =
            now.iter().map(|kv| kv.key.as_str()).collect();
        let mut events: Vec<StoreEvent> = now
            .iter()
            .filter(|kv| kv.mod_revision >= from)
            .cloned()
            .map(StoreEvent::Put)
            .collect();
        events.sort_by_key(StoreEvent::revision);
        events.extend(
            before
                .into_iter()
                .filter(|kv| !now_keys.contains(kv.key.as_str()))
                .map(|kv| StoreEvent::Delete {
                    key: kv.key,
                    revision: current,
                }),
        );
        Ok((events, current))
    }

    async fn revision(&self) -> Result<u64> {
        let resp = self
            .client
            .clone()
            .get("meshwork/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(self.err("revision"))?;
        Ok(resp.header().map(|h| rev(h.revision())).unwrap_or(0))
    }

    async fn epoch(&self) -> Result<u16> {
        let resp = self
            .client
            .clone()
            .get("meshwork/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(self.err("epoch"))?;
        Ok(super::fold_epoch(
            resp.header().map(|h| h.cluster_id()).unwrap_or(0),
        ))
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        self.client
            .clone()
            .compact(i64::try_from(revision).unwrap_or(i64::MAX), None)
            .await
            .map_err(self.err("compact"))?;
        Ok(())
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId> {
        let resp = self
            .client
            .clone()
            .lease_grant(ttl_seconds, None)
            .await
            .map_err(self.err("lease grant"))?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let attempt = async {
            let (mut keeper, mut stream) = self.client.clone().lease_keep_alive(lease.0).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match attempt.await {
            Ok(Some(r)) if r.ttl() > 0 => Ok(()),
            Ok(_) => Err(Error::LeaseExpired { lease: lease.0 }),
            Err(e) if e.to_string().contains("lease not found") => {
                Err(Error::LeaseExpired { lease: lease.0 })
            }
            Err(source) => Err(etcd_error(
                &self.endpoints,
                "lease keep-alive",
                source,
                self.tls_hint,
            )),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.client.clone().lease_revoke(lease.0).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("lease not found") => {
                Err(Error::LeaseExpired { lease: lease.0 })
            }
            Err(source) => Err(etcd_error(
                &self.endpoints,
                "lease revoke",
                source,
                self.tls_hint,
            )),
        }
    }
}
