//! The key layout of a cluster's state in the store, protobuf encoding of
//! the records, and the [`Writer`] every producer (the Kubernetes feed, the
//! importer) writes through.
//!
//! Layout: `meshwork/v1/<cluster>/{nodes,identities,endpoints,services}/<key>`
//! plus `meshwork/v1/<cluster>/synced/<kind>` once a kind is complete.
//! Internal bookkeeping (identity allocation) lives under `meshwork/internal/`
//! and is never exported.

use std::sync::Arc;

use mesh_api::{ClusterName, Kind, Record};
use mesh_proto::pb;
use prost::Message;

use crate::error::{Error, Result};
use crate::leader::Leadership;
use crate::store::{Condition, Op, Store};

/// Root of exported state.
pub const ROOT: &str = "meshwork/v1/";

/// The prefix of one cluster's state.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("{ROOT}{cluster}/")
}

/// The key of one record.
pub fn record_key(cluster: &str, kind: Kind, key: &str) -> String {
    format!("{ROOT}{cluster}/{}/{key}", kind.plural())
}

/// The key of a record.
pub fn key_of(record: &Record) -> String {
    record_key(record.cluster().as_str(), record.kind(), &record.key())
}

/// The `synced` marker of one kind.
pub fn synced_key(cluster: &str, kind: Kind) -> String {
    format!("{ROOT}{cluster}/synced/{}", kind.plural())
}

/// What a store key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    /// A record.
    Record {
        /// Its cluster.
        cluster: String,
        /// Its kind.
        kind: Kind,
        /// Its key within cluster and kind.
        key: String,
    },
    /// A kind's synced marker.
    Synced {
        /// The cluster.
        cluster: String,
        /// The kind.
        kind: Kind,
    },
}

fn kind_from_plural(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.plural() == s)
}

/// Parses a key of the layout.
pub fn parse_key(key: &str) -> Result<ParsedKey> {
    let bad = || Error::BadKey {
        key: key.to_string(),
    };
    let rest = key.strip_prefix(ROOT).ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '/');
    let cluster = parts.next().filter(|c| !c.is_empty()).ok_or_else(bad)?;
    let segment = parts.next().ok_or_else(bad)?;
    let tail = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
    if segment == "synced" {
        return Ok(ParsedKey::Synced {
            cluster: cluster.to_string(),
            kind: kind_from_plural(tail).ok_or_else(bad)?,
        });
    }
    Ok(ParsedKey::Record {
        cluster: cluster.to_string(),
        kind: kind_from_plural(segment).ok_or_else(bad)?,
        key: tail.to_string(),
    })
}

/// Protobuf encoding of a record (the store's value format).
pub fn encode(record: &Record) -> Vec<u8> {
    match record {
        Record::Node(r) => pb::Node::from(r).encode_to_vec(),
        Record::Identity(r) => pb::Identity::from(r).encode_to_vec(),
        Record::Endpoint(r) => pb::Endpoint::from(r).encode_to_vec(),
        Record::Service(r) => pb::Service::from(r).encode_to_vec(),
    }
}

/// Decodes a stored value of `kind`; `key` names it in errors.
pub fn decode(kind: Kind, key: &str, value: &[u8]) -> Result<Record> {
    fn dec<M: Message + Default>(key: &str, what: &'static str, v: &[u8]) -> Result<M> {
        M::decode(v).map_err(|e| Error::Decode {
            key: key.to_string(),
            what,
            detail: e.to_string(),
        })
    }
    let domain = |e| Error::domain(format!("store key {key}"), e);
    Ok(match kind {
        Kind::Node => Record::Node(
            (&dec::<pb::Node>(key, "Node", value)?)
                .try_into()
                .map_err(domain)?,
        ),
        Kind::Identity => Record::Identity(
            (&dec::<pb::Identity>(key, "Identity", value)?)
                .try_into()
                .map_err(domain)?,
        ),
        Kind::Endpoint => Record::Endpoint(
            (&dec::<pb::Endpoint>(key, "Endpoint", value)?)
                .try_into()
                .map_err(domain)?,
        ),
        Kind::Service => Record::Service(
            (&dec::<pb::Service>(key, "Service", value)?)
                .try_into()
                .map_err(domain)?,
        ),
    })
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Create or update.
    Upsert(Record),
    /// Remove by kind and key.
    Delete(Kind, String),
}

/// Operations per store transaction (etcd's default limit is 128).
const BATCH: usize = 100;

/// Bytes (keys and values) per transaction at most: well under etcd's
/// default request limit of 1.5 MiB, so a batch of large records (a
/// service with many backends) is split instead of refused.
const BATCH_BYTES: usize = 1 << 20;

/// Splits `ops` into transactions of at most `max_ops` operations and
/// `max_bytes` bytes (one operation larger than that goes alone).
fn chunk_ops(ops: Vec<Op>, max_ops: usize, max_bytes: usize) -> Vec<Vec<Op>> {
    let size = |op: &Op| match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete(key) => key.len(),
    };
    let mut chunks: Vec<Vec<Op>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let n = size(&op);
        match chunks.last_mut() {
            Some(c) if c.len() < max_ops && bytes + n <= max_bytes => {
                bytes += n;
                c.push(op);
            }
            _ => {
                bytes = n;
                chunks.push(vec![op]);
            }
        }
    }
    chunks
}

/// Writes one cluster's records. Only the leader writes; identical values
/// are not rewritten (no churn for watchers).
#[derive(Debug, Clone)]
pub struct Writer {
    store: Arc<dyn Store>,
    cluster: ClusterName,
    leadership: Leadership,
}

impl Writer {
    /// A writer for `cluster`'s prefix.
    pub fn new(store: Arc<dyn Store>, cluster: ClusterName, leadership: Leadership) -> Self {
        Writer {
            store,
            cluster,
            leadership,
        }
    }

    /// The cluster written.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Whether (and when) this replica may write.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn check(&self, record: &Record) -> Result<()> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        if record.cluster() != &self.cluster {
            return Err(Error::RemoteConfig {
                entry: self.cluster.to_string(),
                reason: format!(
                    "record {} names cluster {}; a cluster may only write its own prefix",
                    record.key(),
                    record.cluster()
                ),
            });
        }
        Ok(())
    }

    /// Creates or updates a record; returns the revision when it changed.
    pub async fn upsert(&self, record: &Record) -> Result<Option<u64>> {
        self.check(record)?;
        let key = key_of(record);
        let value = encode(record);
        if let Some(old) = self.store.get(&key).await?
            && old.value == value
        {
            return Ok(None);
        }
        self.txn(Vec::new(), vec![Op::put(key, value)]).await
    }

    /// A transaction under the leader's fence: `Err(NotLeader)` when this
    /// replica no longer holds the leader key (its writes are refused by the
    /// store, not only by its own belief); otherwise the store's answer to
    /// `conditions`.
    pub async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<Option<u64>> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        let fence = self.leadership.fence();
        let fenced = !fence.is_empty();
        let all = fence.iter().cloned().chain(conditions).collect();
        match self.store.txn(all, ops).await? {
            Some(rev) => Ok(Some(rev)),
            None if fenced && !self.holds(&fence).await? => {
                tracing::warn!(cluster = %self.cluster, "write fenced: another replica holds the leader key");
                Err(Error::NotLeader)
            }
            None => Ok(None),
        }
    }

    async fn holds(&self, fence: &[Condition]) -> Result<bool> {
        for c in fence {
            if let Condition::Value(key, value) = c {
                let held = self.store.get(key).await?;
                if held.is_none_or(|kv| kv.value != *value) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Removes a record; returns the revision when it existed.
    pub async fn delete(&self, kind: Kind, key: &str) -> Result<Option<u64>> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        let key = record_key(self.cluster.as_str(), kind, key);
        if self.store.get(&key).await?.is_none() {
            return Ok(None);
        }
        self.txn(Vec::new(), vec![Op::Delete(key)]).await
    }

    /// Writes many changes in few transactions, without reading first
    /// (the caller knows they are changes). The last change of a key wins.
    pub async fn write_batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        let mut order: Vec<String> = Vec::new();
        let mut last: std::collections::HashMap<String, Op> = std::collections::HashMap::new();
        for op in ops {
            let (key, op) = match op {
                BatchOp::Upsert(record) => {
                    self.check(&record)?;
                    let key = key_of(&record);
                    (key.clone(), Op::put(key, encode(&record)))
                }
                BatchOp::Delete(kind, key) => {
                    let key = record_key(self.cluster.as_str(), kind, &key);
                    (key.clone(), Op::Delete(key))
                }
            };
            if last.insert(key.clone(), op).is_none() {
                order.push(key);
            }
        }
        let ops: Vec<Op> = order.into_iter().filter_map(|k| last.remove(&k)).collect();
        for chunk in chunk_ops(ops, BATCH, BATCH_BYTES) {
            self.txn(Vec::new(), chunk).await?;
        }
        Ok(())
    }

    /// Marks a kind complete (its first full listing is written).
    pub async fn mark_synced(&self, kind: Kind) -> Result<()> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        let key = synced_key(self.cluster.as_str(), kind);
        if self.store.get(&key).await?.is_none() {
            self.txn(Vec::new(), vec![Op::put(key, b"true".to_vec())])
                .await?;
        }
        Ok(())
    }

    /// Every record of one kind currently stored, by key.
    pub async fn list(&self, kind: Kind) -> Result<Vec<(String, Record)>> {
        let prefix = format!(
            "{}{}/",
            cluster_prefix(self.cluster.as_str()),
            kind.plural()
        );
        let (items, _) = self.store.list(&prefix).await?;
        items
            .into_iter()
            .map(|kv| {
                let key = kv.key[prefix.len()..].to_string();
                decode(kind, &kv.key, &kv.value).map(|r| (key, r))
            })
            .collect()
    }

    /// Removes the whole prefix of this cluster (a remote withdrawn).
    pub async fn delete_all(&self) -> Result<usize> {
        if !self.leadership.is_leader() {
            return Err(Error::NotLeader);
        }
        let (items, _) = self
            .store
            .list(&cluster_prefix(self.cluster.as_str()))
            .await?;
        let n = items.len();
        let ops: Vec<Op> = items.into_iter().map(|kv| Op::Delete(kv.key)).collect();
        for chunk in chunk_ops(ops, BATCH, BATCH_BYTES) {
            self.txn(Vec::new(), chunk).await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
