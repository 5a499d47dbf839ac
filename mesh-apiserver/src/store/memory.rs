//! The in-memory store: one replica, no persistence. It keeps a bounded
//! history of changes and reports compaction exactly like etcd, so watchers
//! that fall behind get a fresh snapshot instead of a gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{Condition, EventStream, KeyValue, LeaseId, Op, Store, StoreEvent};
use crate::error::{Error, Result};

/// Default number of changes kept for watchers that resume.
pub const DEFAULT_HISTORY: usize = 100_000;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    mod_revision: u64,
    create_revision: u64,
    lease: Option<i64>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug)]
struct State {
    data: BTreeMap<String, Entry>,
    revision: u64,
    history: VecDeque<StoreEvent>,
    /// Watches from below this revision are refused as compacted.
    compacted: u64,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
}

/// The in-memory [`Store`]. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<StoreEvent>,
    max_history: usize,
    epoch: u16,
}

impl MemoryStore {
    /// A store that keeps the last `max_history` changes for resuming
    /// watchers. Inside a Tokio runtime it also expires leases in the
    /// background (otherwise on the next operation).
    pub fn new(max_history: usize) -> Self {
        let (events, _) = broadcast::channel(16_384);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                data: BTreeMap::new(),
                revision: 1,
                history: VecDeque::new(),
                compacted: 1,
                leases: HashMap::new(),
                next_lease: 1,
            }),
            events,
            max_history: max_history.max(1),
            epoch: super::fold_epoch(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
                    ^ (u64::from(std::process::id()) << 40)
                    ^ (Arc::as_ptr(&Arc::new(0u8)) as u64),
            ),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Inner> = Arc::downgrade(&inner);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.lock().expire_leases_now(&inner);
                }
            });
        }
        MemoryStore { inner }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

struct Guard<'a> {
    state: std::sync::MutexGuard<'a, State>,
}

impl Inner {
    fn lock(&self) -> Guard<'_> {
        Guard {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl Guard<'_> {
    fn expire_leases_now(&mut self, inner: &Inner) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_lease(inner, id);
        }
    }

    fn drop_lease(&mut self, inner: &Inner, id: i64) {
        self.state.leases.remove(&id);
        let keys: Vec<String> = self
            .state
            .data
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            self.state.revision += 1;
            for k in keys {
                self.apply_delete(inner, &k);
            }
        }
    }

    fn record(&mut self, inner: &Inner, event: StoreEvent) {
        self.state.history.push_back(event.clone());
        while self.state.history.len() > inner.max_history {
            if let Some(old) = self.state.history.pop_front() {
                self.state.compacted = self.state.compacted.max(old.revision() + 1);
            }
        }
        // No receivers is fine.
        let _ = inner.events.send(event);
    }

    /// Puts at the current revision (the caller bumped it).
    fn apply_put(&mut self, inner: &Inner, key: &str, value: Vec<u8>, lease: Option<i64>) {
        let rev = self.state.revision;
        let create_revision = self
            .state
            .data
            .get(key)
            .map(|e| e.create_revision)
            .unwrap_or(rev);
        self.state.data.insert(
            key.to_string(),
            Entry {
                value: value.clone(),
                mod_revision: rev,
                create_revision,
                lease,
            },
        );
        self.record(
            inner,
            StoreEvent::Put(KeyValue {
                key: key.to_string(),
                value,
                mod_revision: rev,
                create_revision,
            }),
        );
    }

    fn apply_delete(&mut self, inner: &Inner, key: &str) -> bool {
        if self.state.data.remove(key).is_none() {
            return false;
        }
        let revision = self.state.revision;
        self.record(
            inner,
            StoreEvent::Delete {
                key: key.to_string(),
                revision,
            },
        );
        true
    }

    fn holds(&self, c: &Condition) -> bool {
        match c {
            Condition::Absent(k) => !self.state.data.contains_key(k),
            Condition::ModRevision(k, r) => {
                self.state.data.get(k).map(|e| e.mod_revision) == Some(*r)
            }
            Condition::Value(k, v) => self.state.data.get(k).map(|e| &e.value) == Some(v),
        }
    }
}

fn kv(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: e.value.clone(),
        mod_revision: e.mod_revision,
        create_revision: e.create_revision,
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        format!("memory (history {})", self.inner.max_history)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        Ok(g.state.data.get(key).map(|e| kv(key, e)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        let items = g
            .state
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| kv(k, e))
            .collect();
        Ok((items, g.state.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        g.state.revision += 1;
        g.apply_put(&self.inner, key, value, None);
        Ok(g.state.revision)
    }

    async fn delete(&self, key: &str) -> Result<Option<u64>> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        if !g.state.data.contains_key(key) {
            return Ok(None);
        }
        g.state.revision += 1;
        g.apply_delete(&self.inner, key);
        Ok(Some(g.state.revision))
    }

    async fn txn(&self, conditions: Vec<Condition>, ops: Vec<Op>) -> Result<Option<u64>> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        if !conditions.iter().all(|c| g.holds(c)) {
            return Ok(None);
        }
        for op in &ops {
            if let Op::Put { lease: Some(l), .. } = op
                && !g.state.leases.contains_key(&l.0)
            {
                return Err(Error::LeaseExpired { lease: l.0 });
            }
        }
        g.state.revision += 1;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    g.apply_put(&self.inner, &key, value, lease.map(|l| l.0))
                }
                Op::Delete(key) => {
                    g.apply_delete(&self.inner, &key);
                }
            }
        }
        Ok(Some(g.state.revision))
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<EventStream> {
        let (replay, rx, current) = {
            let mut g = self.inner.lock();
            g.expire_leases_now(&self.inner);
            let from = from_revision.max(1);
            if from < g.state.compacted {
                return Err(Error::Compacted {
                    requested: from_revision,
                    compacted: g.state.compacted,
                });
            }
            let replay: Vec<StoreEvent> = g
                .state
                .history
                .iter()
                .filter(|e| e.revision() >= from && event_key(e).starts_with(prefix))
                .cloned()
                .collect();
            (replay, self.inner.events.subscribe(), g.state.revision)
        };
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(
            (rx, prefix, false),
            move |(mut rx, prefix, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(ev)
                            if ev.revision() > current && event_key(&ev).starts_with(&prefix) =>
                        {
                            return Some((Ok(ev), (rx, prefix, false)));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let err = Error::WatchEnded {
                                prefix: prefix.clone(),
                                reason: format!("the watcher fell {n} events behind"),
                            };
                            return Some((Err(err), (rx, prefix, true)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        let head = futures::stream::iter(replay.into_iter().map(Ok));
        Ok(Box::pin(futures::StreamExt::chain(head, live)))
    }

    async fn changes_since(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<(Vec<StoreEvent>, u64)> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        let from = from_revision.max(1);
        if from > g.state.revision + 1 {
            return Err(Error::FutureRevision {
                requested: from_revision,
                current: g.state.revision,
            });
        }
        if from < g.state.compacted {
            return Err(Error::Compacted {
                requested: from_revision,
                compacted: g.state.compacted,
            });
        }
        let events = g
            .state
            .history
            .iter()
            .filter(|e| e.revision() >= from && event_key(e).starts_with(prefix))
            .cloned()
            .collect();
        Ok((events, g.state.revision))
    }

    async fn revision(&self) -> Result<u64> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        Ok(g.state.revision)
    }

    async fn epoch(&self) -> Result<u16> {
        Ok(self.inner.epoch)
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        let mut g = self.inner.lock();
        while g
            .state
            .history
            .front()
            .is_some_and(|e| e.revision() < revision)
        {
            g.state.history.pop_front();
        }
        g.state.compacted = g.state.compacted.max(revision);
        Ok(())
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId> {
        let mut g = self.inner.lock();
        let id = g.state.next_lease;
        g.state.next_lease += 1;
        let ttl = Duration::from_secs(ttl_seconds.max(1) as u64);
        g.state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(LeaseId(id))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut g = self.inner.lock();
        g.expire_leases_now(&self.inner);
        match g.state.leases.get_mut(&lease.0) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(())
            }
            None => Err(Error::LeaseExpired { lease: lease.0 }),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut g = self.inner.lock();
        if !g.state.leases.contains_key(&lease.0) {
            return Err(Error::LeaseExpired { lease: lease.0 });
        }
        g.drop_lease(&self.inner, lease.0);
        Ok(())
    }
}

fn event_key(e: &StoreEvent) -> &str {
    match e {
        StoreEvent::Put(kv) => &kv.key,
        StoreEvent::Delete { key, .. } => key,
    }
}
