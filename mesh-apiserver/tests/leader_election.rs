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

/// A leader paused past its lease (SIGSTOP) resumes believing it leads; a
/// new leader holds the key by then. Every write carries the fence (the
/// leader key holds the writer's identity), so the store refuses the old
/// leader's writes: the new leader's state stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_cannot_write_after_a_new_leader_is_elected() {
    use mesh_api::{ClusterName, Kind, NodeName, NodeRecord, Record};
    use mesh_apiserver::leader::Leadership;
    init();
    let etcd = EtcdServer::start().await;
    let store: Arc<dyn Store> = Arc::new(etcd.store().await);
    let key = "meshwork/internal/a/leader";
    let (new_leader, _task) = spawn_election(
        store.clone(),
        ElectionConfig {
            key: key.into(),
            identity: "r2".into(),
            ttl_seconds: 2,
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !new_leader.is_leader() {
        assert!(Instant::now() < deadline, "r2 not elected within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = ClusterName::new("a").unwrap();
    let node = |cidr: &str| {
        Record::Node(NodeRecord {
            cluster: a.clone(),
            name: NodeName::new("n1").unwrap(),
            ips: vec!["192.0.2.1".parse().unwrap()],
            pod_cidrs: vec![cidr.parse().unwrap()],
            wireguard_key: None,
        })
    };
    let current = Writer::new(store.clone(), a.clone(), new_leader.clone());
    current.upsert(&node("10.1.1.0/24")).await.unwrap();
    let stale = Writer::new(store.clone(), a.clone(), Leadership::believed(key, "r1"));
    let before = store.revision().await.unwrap();
    for (what, result) in [
        (
            "upsert",
            stale.upsert(&node("10.1.9.0/24")).await.map(|_| ()),
        ),
        ("delete", stale.delete(Kind::Node, "n1").await.map(|_| ())),
        ("batch", stale.delete_all().await.map(|_| ())),
        ("synced marker", stale.mark_synced(Kind::Service).await),
    ] {
        assert!(
            matches!(result, Err(mesh_apiserver::Error::NotLeader)),
            "the paused leader's {what} must be fenced: {result:?}"
        );
    }
    assert_eq!(
        store.revision().await.unwrap(),
        before,
        "nothing was written"
    );
    let (nodes, _) = current.list(Kind::Node).await.map(|l| (l, ())).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        nodes[0].1,
        node("10.1.1.0/24"),
        "the new leader's state stands"
    );
}
