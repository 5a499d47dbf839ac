//! Two replicas on one real etcd: one leader writes; when it dies (stops
//! refreshing its lease, as a killed process does) the other takes over
//! within a bounded time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_apiserver::leader::{ElectionConfig, spawn_election};
use mesh_apiserver::state::Writer;
use mesh_apiserver::store::Store;
use mesh_apiserver::testutil::{EtcdServer, init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_takes_over_when_the_leader_dies() {
    init();
    let etcd = EtcdServer::start().await;
    let s1: Arc<dyn Store> = Arc::new(etcd.store().await);
    let s2: Arc<dyn Store> = Arc::new(etcd.store().await);
    let cfg = |id: &str| ElectionConfig {
        key: "meshwork/internal/a/leader".into(),
        identity: id.into(),
        ttl_seconds: 2,
    };
    let (l1, t1) = spawn_election(s1.clone(), cfg("r1"));
    let (l2, t2) = spawn_election(s2.clone(), cfg("r2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(l1.is_leader() || l2.is_leader()) {
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(l1.is_leader() ^ l2.is_leader(), "exactly one leader");
    let (leader_task, follower, follower_store, follower_id) = if l1.is_leader() {
        (t1, l2.clone(), s2.clone(), "r2")
    } else {
        (t2, l1.clone(), s1.clone(), "r1")
    };
    // The follower may not write.
    let w = Writer::new(
        follower_store.clone(),
        mesh_api::ClusterName::new("a").unwrap(),
        follower.clone(),
    );
    assert!(matches!(
        w.mark_synced(mesh_api::Kind::Node).await,
        Err(mesh_apiserver::Error::NotLeader)
    ));
    // The leader dies without resigning.
    leader_task.abort();
    let died = Instant::now();
    let deadline = died + Duration::from_secs(10);
    while !follower.is_leader() {
        assert!(
            Instant::now() < deadline,
            "the follower did not take over within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = died.elapsed();
    eprintln!("takeover after {took:?} (lease TTL 2 s)");
    let holder = follower_store
        .get("meshwork/internal/a/leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.value, follower_id.as_bytes());
    w.mark_synced(mesh_api::Kind::Node)
        .await
        .expect("the new leader writes");
}
