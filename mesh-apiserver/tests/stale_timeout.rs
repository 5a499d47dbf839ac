//! In-process clusters on in-memory stores: a remote added at run time is
//! imported without a restart; when it goes away its state is kept, marked
//! stale, and withdrawn after the stale timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_api::{ClusterName, Kind, NodeName, NodeRecord, Record};
use mesh_apiserver::import::ImportSettings;
use mesh_apiserver::server::Running;
use mesh_apiserver::state;
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::{Pki, in_process_cluster, init, remote_entry};
use tokio::sync::watch;

async fn cluster(
    pki: &Pki,
    name: &str,
    id: i64,
    cidr: &str,
    store: Arc<dyn Store>,
    stale: Duration,
) -> (Running, watch::Sender<BTreeMap<String, String>>) {
    let settings = ImportSettings {
        stale_timeout: stale,
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    };
    let (running, config, _) = in_process_cluster(pki, name, id, cidr, store, settings).await;
    (running, config)
}

async fn b_records(store: &dyn Store) -> usize {
    store
        .list(&state::cluster_prefix("b"))
        .await
        .unwrap()
        .0
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_added_at_run_time_then_stale_then_withdrawn() {
    init();
    let pki = Pki::new();
    let a_store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (a, a_cfg) = cluster(
        &pki,
        "a",
        1,
        "10.1.0.0/16",
        a_store.clone(),
        Duration::from_secs(3),
    )
    .await;
    let (b, b_cfg) = cluster(
        &pki,
        "b",
        2,
        "10.2.0.0/16",
        Arc::new(MemoryStore::default()),
        Duration::from_secs(3),
    )
    .await;
    let mut allow_a = BTreeMap::new();
    allow_a.insert(
        "a".to_string(),
        remote_entry(
            "a",
            1,
            &[a.grpc_addr.to_string()],
            pki.ca.cert_pem(),
            &pki.cluster("b"),
            &[],
        ),
    );
    b_cfg.send(allow_a).unwrap();
    b.writer
        .upsert(&Record::Node(NodeRecord {
            cluster: ClusterName::new("b").unwrap(),
            name: NodeName::new("b-n1").unwrap(),
            ips: vec!["192.0.2.2".parse().unwrap()],
            pod_cidrs: vec!["10.2.1.0/24".parse().unwrap()],
            wireguard_key: None,
        }))
        .await
        .unwrap();
    for kind in Kind::ALL {
        b.writer.mark_synced(kind).await.unwrap();
    }
    // A learns about B while running.
    let mut remotes = BTreeMap::new();
    remotes.insert(
        "b".to_string(),
        remote_entry(
            "b",
            2,
            &[b.grpc_addr.to_string()],
            pki.ca.cert_pem(),
            &pki.cluster("a"),
            &[],
        ),
    );
    a_cfg.send(remotes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while b_records(a_store.as_ref()).await < 1
        || !a
            .importer
            .status()
            .iter()
            .any(|s| s.name == "b" && s.synced && s.connected)
    {
        assert!(
            Instant::now() < deadline,
            "B not imported: {:?}",
            a.importer.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let imported = b_records(a_store.as_ref()).await;
    // B goes away: A keeps its state, marked stale...
    let gone = Instant::now();
    b.shutdown().await;
    let deadline = gone + Duration::from_secs(10);
    while !a
        .importer
        .status()
        .iter()
        .any(|s| s.name == "b" && !s.connected && s.stale_since.is_some())
    {
        assert!(
            Instant::now() < deadline,
            "B not marked stale: {:?}",
            a.importer.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        b_records(a_store.as_ref()).await,
        imported,
        "state kept while stale"
    );
    // ...until the stale timeout (3 s) withdraws it.
    let deadline = gone + Duration::from_secs(15);
    while b_records(a_store.as_ref()).await > 0 {
        assert!(Instant::now() < deadline, "stale state not withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = gone.elapsed();
    assert!(
        after >= Duration::from_secs(3),
        "withdrawn only after the timeout, not {after:?}"
    );
    let st = a.importer.status();
    assert!(
        st.iter()
            .any(|s| s.name == "b" && s.counts.by_kind().iter().all(|(_, n)| *n == 0)),
        "{st:?}"
    );
    a.shutdown().await;
}
