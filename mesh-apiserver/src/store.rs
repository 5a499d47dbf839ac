//! The store behind the mesh-apiserver: a revisioned key-value space with
//! prefix listing, ordered watches from a revision, compaction, atomic
//! create/compare-and-swap transactions and leases.
//!
//! Two implementations pass the same conformance suite
//! (`store::conformance`, feature `test-util`): [`EtcdStore`] (replicas share
//! one etcd) and [`MemoryStore`] (one replica, embedded default).

use std::fmt;
use std::pin::Pin;

use futures::Stream;

use crate::error::Result;

mod etcd;
mod memory;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

pub use etcd::{EtcdClientPem, EtcdConnection, EtcdStore, EtcdTls};
pub use memory::MemoryStore;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the last change.
    pub mod_revision: u64,
    /// Revision of the creation.
    pub create_revision: u64,
}

/// One event of a store watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was removed.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: u64,
    },
}

impl StoreEvent {
    /// The revision the event carries.
    pub fn revision(&self) -> u64 {
        match self {
            StoreEvent::Put(kv) => kv.mod_revision,
            StoreEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// An ordered stream of store events. It ends with an error when the store
/// cannot continue it ([`crate::Error::Compacted`] when it fell behind).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StoreEvent>> + Send>>;

/// A lease: keys attached to it vanish when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists with exactly this modification revision.
    ModRevision(String, u64),
    /// The key holds exactly this value.
    Value(String, Vec<u8>),
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, optionally attached to a lease.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease.
        lease: Option<LeaseId>,
    },
    /// Delete a key.
    Delete(String),
}

impl Op {
    /// A put without lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
}

/// The store contract. Revisions are global and strictly increasing; every
/// successful write returns the revision it created.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short description for logs and status (`etcd http://…`, `memory`).
    fn describe(&self) -> String;

    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key under `prefix`, sorted by key, and the store revision the
    /// listing is consistent with.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)>;

    /// Writes a value; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64>;

    /// Removes a key; returns the revision of the deletion, `None` when it
    /// did not exist.
    async fn delete(&self, key: &str) -> Result<Option<u64>>;

    /// Applies `ops` atomically if every condition holds; returns the new
    /// revision, or `None` (and changes nothing) when a condition failed.
    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<Option<u64>>;

    /// Events under `prefix` with revision ≥ `from_revision`, in revision
    /// order, then live ones. A `from_revision` older than the store's
    /// history fails with [`crate::Error::Compacted`] (immediately or as the
    /// stream's first item).
    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<EventStream>;

    /// The changes under `prefix` with revision ≥ `from_revision`, up to the
    /// returned current revision, in revision order. A store that keeps a
    /// log returns it; etcd returns the difference between the state before
    /// `from_revision` and now (one event per changed key; deletions carry
    /// the current revision). Fails with [`crate::Error::Compacted`] when
    /// that history is gone and with [`crate::Error::FutureRevision`] when
    /// `from_revision` is beyond the store (the store was reset).
    async fn changes_since(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<(Vec<StoreEvent>, u64)>;

    /// The current revision.
    async fn revision(&self) -> Result<u64>;

    /// A number that changes when the store is replaced (a new in-memory
    /// store, an etcd cluster bootstrapped anew), so revisions of different
    /// stores are never mistaken for one another. Never 0.
    async fn epoch(&self) -> Result<u16>;

    /// Discards history before `revision`.
    async fn compact(&self, revision: u64) -> Result<()>;

    /// Creates a lease that expires `ttl_seconds` after its last refresh.
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId>;

    /// Refreshes a lease; fails with [`crate::Error::LeaseExpired`] when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
}

/// Folds a 64-bit identifier into a non-zero epoch.
pub(crate) fn fold_epoch(id: u64) -> u16 {
    let e = (id ^ (id >> 16) ^ (id >> 32) ^ (id >> 48)) as u16;
    if e == 0 { 1 } else { e }
}

/// Creates `key` with `value` if it does not exist; `true` when created.
pub async fn create(store: &dyn Store, key: &str, value: Vec<u8>) -> Result<bool> {
    Ok(store
        .txn(
            vec![Condition::Absent(key.to_string())],
            vec![Op::put(key, value)],
        )
        .await?
        .is_some())
}

/// The end of the key range covering `prefix` (etcd's convention).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
