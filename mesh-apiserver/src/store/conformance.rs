//! The conformance suite every [`Store`] implementation must pass. Tests
//! call [`run`] with a fresh store of each kind.

use std::time::Duration;

use futures::StreamExt;

use super::{Condition, EventStream, LeaseId, Op, Store, StoreEvent, create};
use crate::error::Error;

/// Takes the next event, failing the test after 10 s.
pub async fn next_event(stream: &mut EventStream) -> StoreEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

/// Takes `n` events.
pub async fn take(stream: &mut EventStream, n: usize) -> Vec<StoreEvent> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_event(stream).await);
    }
    out
}

/// Runs every conformance check under `prefix` (unique per run).
pub async fn run(store: &dyn Store, prefix: &str) {
    basics(store, prefix).await;
    large_listing(store, prefix).await;
    transactions(store, prefix).await;
    watch_order(store, prefix).await;
    compaction(store, prefix).await;
    leases(store, prefix).await;
}

async fn basics(store: &dyn Store, p: &str) {
    let epoch = store.epoch().await.unwrap();
    assert_ne!(epoch, 0);
    assert_eq!(store.epoch().await.unwrap(), epoch, "the epoch is stable");
    let k = format!("{p}basic/a");
    assert_eq!(store.get(&k).await.unwrap(), None);
    let r1 = store.put(&k, b"one".to_vec()).await.unwrap();
    let r2 = store.put(&k, b"two".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    let kv = store.get(&k).await.unwrap().expect("key exists");
    assert_eq!(kv.value, b"two");
    assert_eq!(kv.mod_revision, r2);
    assert_eq!(kv.create_revision, r1, "create revision survives updates");
    store
        .put(&format!("{p}basic/c"), b"c".to_vec())
        .await
        .unwrap();
    store
        .put(&format!("{p}basic/b"), b"b".to_vec())
        .await
        .unwrap();
    store
        .put(&format!("{p}basicx"), b"x".to_vec())
        .await
        .unwrap();
    let (items, rev) = store.list(&format!("{p}basic/")).await.unwrap();
    let keys: Vec<_> = items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            format!("{p}basic/a"),
            format!("{p}basic/b"),
            format!("{p}basic/c")
        ],
        "prefix listing is sorted and exact"
    );
    assert!(
        rev >= store
            .get(&format!("{p}basicx"))
            .await
            .unwrap()
            .unwrap()
            .mod_revision
    );
    assert!(store.revision().await.unwrap() >= rev);
    let d = store.delete(&k).await.unwrap();
    assert!(d.is_some_and(|d| d > r2));
    assert_eq!(
        store.delete(&k).await.unwrap(),
        None,
        "second delete finds nothing"
    );
    assert_eq!(store.get(&k).await.unwrap(), None);
}

async fn large_listing(store: &dyn Store, p: &str) {
    // More keys than a page, and more bytes than gRPC's default 4 MiB limit.
    let value = vec![b'x'; 8 * 1024];
    let keys: Vec<String> = (0..1200).map(|i| format!("{p}large/{i:05}")).collect();
    for chunk in keys.chunks(100) {
        let ops = chunk.iter().map(|k| Op::put(k, value.clone())).collect();
        store.txn(vec![], ops).await.unwrap();
    }
    let (items, _) = store.list(&format!("{p}large/")).await.unwrap();
    let listed: Vec<String> = items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(listed, keys, "every key, once, in order");
    assert!(items.iter().all(|kv| kv.value == value));
    let first = store.get(&keys[0]).await.unwrap().unwrap().mod_revision;
    let (changes, _) = store
        .changes_since(&format!("{p}large/"), first)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1200);
}

async fn transactions(store: &dyn Store, p: &str) {
    let k = format!("{p}txn/id");
    assert!(create(store, &k, b"first".to_vec()).await.unwrap());
    assert!(!create(store, &k, b"second".to_vec()).await.unwrap());
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b"first", "a failed create changes nothing");
    // Compare-and-swap on the modification revision.
    let stale = kv.mod_revision;
    let r = store
        .txn(
            vec![Condition::ModRevision(k.clone(), stale)],
            vec![Op::put(&k, b"cas".to_vec())],
        )
        .await
        .unwrap();
    assert!(r.is_some());
    let lost = store
        .txn(
            vec![Condition::ModRevision(k.clone(), stale)],
            vec![Op::put(&k, b"lost".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(lost, None, "a CAS on a stale revision fails");
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"cas");
    // Several keys at once, all or nothing.
    let a = format!("{p}txn/a");
    let b = format!("{p}txn/b");
    let fail = store
        .txn(
            vec![Condition::Absent(a.clone()), Condition::Absent(k.clone())],
            vec![Op::put(&a, b"a".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(fail, None);
    assert_eq!(store.get(&a).await.unwrap(), None, "nothing applied");
    let ok = store
        .txn(
            vec![
                Condition::Absent(a.clone()),
                Condition::Value(k.clone(), b"cas".to_vec()),
            ],
            vec![
                Op::put(&a, b"a".to_vec()),
                Op::put(&b, b"b".to_vec()),
                Op::Delete(k.clone()),
            ],
        )
        .await
        .unwrap()
        .expect("conditions hold");
    let ka = store.get(&a).await.unwrap().unwrap();
    let kb = store.get(&b).await.unwrap().unwrap();
    assert_eq!(
        (ka.mod_revision, kb.mod_revision),
        (ok, ok),
        "one revision for the txn"
    );
    assert_eq!(store.get(&k).await.unwrap(), None);
}

async fn watch_order(store: &dyn Store, p: &str) {
    let w = format!("{p}watch/");
    let first = store.put(&format!("{w}1"), b"1".to_vec()).await.unwrap();
    store
        .put(&format!("{p}elsewhere"), b"no".to_vec())
        .await
        .unwrap();
    store.put(&format!("{w}2"), b"2".to_vec()).await.unwrap();
    store.delete(&format!("{w}1")).await.unwrap();
    let mut s = store.watch(&w, first).await.unwrap();
    let events = take(&mut s, 3).await;
    let shape: Vec<(String, bool)> = events
        .iter()
        .map(|e| match e {
            StoreEvent::Put(kv) => (kv.key.clone(), true),
            StoreEvent::Delete { key, .. } => (key.clone(), false),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (format!("{w}1"), true),
            (format!("{w}2"), true),
            (format!("{w}1"), false)
        ],
        "history replayed in order, only under the prefix"
    );
    let revs: Vec<u64> = events.iter().map(StoreEvent::revision).collect();
    assert!(revs.windows(2).all(|x| x[0] < x[1]), "increasing: {revs:?}");
    let live = store.put(&format!("{w}3"), b"3".to_vec()).await.unwrap();
    match next_event(&mut s).await {
        StoreEvent::Put(kv) => {
            assert_eq!(kv.key, format!("{w}3"));
            assert_eq!(kv.mod_revision, live);
        }
        other => panic!("expected the live put, got {other:?}"),
    }
    // The changes since a revision: only what changed after it, ending
    // in the same state.
    let (changes, current) = store.changes_since(&w, live).await.unwrap();
    assert!(current >= live);
    assert_eq!(changes.len(), 1, "only the put at {live}: {changes:?}");
    let (changes, _) = store.changes_since(&w, first + 1).await.unwrap();
    let mut state = std::collections::BTreeMap::new();
    state.insert(format!("{w}1"), b"1".to_vec());
    for ev in changes {
        match ev {
            StoreEvent::Put(kv) => {
                state.insert(kv.key, kv.value);
            }
            StoreEvent::Delete { key, .. } => {
                state.remove(&key);
            }
        }
    }
    let (now, _) = store.list(&w).await.unwrap();
    let now: std::collections::BTreeMap<_, _> =
        now.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(state, now, "replaying the changes reproduces the state");
    // A revision beyond the store is refused (the store was reset).
    assert!(matches!(
        store.changes_since(&w, current + 100).await,
        Err(Error::FutureRevision { .. })
    ));
}

async fn compaction(store: &dyn Store, p: &str) {
    let k = format!("{p}compact/k");
    let old = store.put(&k, b"1".to_vec()).await.unwrap();
    store.put(&k, b"2".to_vec()).await.unwrap();
    let now = store.put(&k, b"3".to_vec()).await.unwrap();
    store.compact(now).await.unwrap();
    assert!(matches!(
        store.changes_since(&format!("{p}compact/"), old).await,
        Err(Error::Compacted { .. })
    ));
    match store.watch(&format!("{p}compact/"), old).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, old);
            assert!(compacted >= now, "compacted at {compacted}, wanted ≥ {now}");
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(mut s) => match s.next().await {
            Some(Err(Error::Compacted { compacted, .. })) => assert!(compacted >= now),
            other => panic!("expected Compacted from a watch below the compaction, got {other:?}"),
        },
    }
    // The current state is still readable.
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"3");
}

async fn leases(store: &dyn Store, p: &str) {
    let k = format!("{p}lease/leader");
    let lease = store.grant_lease(2).await.unwrap();
    let put = |lease: LeaseId| Op::Put {
        key: k.clone(),
        value: b"me".to_vec(),
        lease: Some(lease),
    };
    assert!(
        store
            .txn(vec![Condition::Absent(k.clone())], vec![put(lease)])
            .await
            .unwrap()
            .is_some()
    );
    // Keep-alive holds the key past its TTL.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.keep_alive(lease).await.unwrap();
    }
    assert!(
        store.get(&k).await.unwrap().is_some(),
        "kept alive past the TTL"
    );
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(
        store.get(&k).await.unwrap(),
        None,
        "revoking deletes its keys"
    );
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(Error::LeaseExpired { .. })
    ));
    // Without keep-alive the key disappears by itself, and watchers see it.
    let lease = store.grant_lease(2).await.unwrap();
    let rev = store
        .txn(vec![Condition::Absent(k.clone())], vec![put(lease)])
        .await
        .unwrap()
        .unwrap();
    let mut s = store.watch(&k, rev + 1).await.unwrap();
    match next_event(&mut s).await {
        StoreEvent::Delete { key, .. } => assert_eq!(key, k),
        other => panic!("expected the lease expiry to delete the key, got {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap(), None);
}
