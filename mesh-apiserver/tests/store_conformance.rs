//! The one conformance suite, run against both store implementations.

use mesh_apiserver::store::{MemoryStore, Store, conformance};
use mesh_apiserver::testutil::{EtcdServer, init};

#[tokio::test]
async fn memory_store_conforms() {
    init();
    let store = MemoryStore::default();
    conformance::run(&store, "conf/").await;
}

#[tokio::test]
async fn etcd_store_conforms() {
    init();
    let etcd = EtcdServer::start().await;
    let store = etcd.store().await;
    conformance::run(&store, "conf/").await;
}

#[tokio::test]
async fn memory_store_bounded_history_reports_compaction() {
    init();
    let store = MemoryStore::new(3);
    let first = store.put("k/a", b"1".to_vec()).await.unwrap();
    for i in 0..5u8 {
        store.put("k/a", vec![i]).await.unwrap();
    }
    match store.watch("k/", first).await {
        Err(mesh_apiserver::Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, first);
            assert!(compacted > first);
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    // Within the kept history a resume still works.
    let rev = store.revision().await.unwrap();
    assert!(store.watch("k/", rev - 1).await.is_ok());
}
