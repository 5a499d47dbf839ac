//! An in-process mesh-apiserver on the in-memory store: a snapshot is only
//! presented as complete once this cluster's feed has marked its state
//! synced, so a restarted (empty) cluster never makes its peers withdraw
//! what they hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_api::{ClusterId, ClusterName, Kind, NodeName, NodeRecord, Record};
use mesh_apiserver::export::LocalCluster;
use mesh_apiserver::import::ImportSettings;
use mesh_apiserver::server::{ServerParts, start};
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::{Pki, init};
use mesh_certs::{TlsIdentity, TrustDomain};
use mesh_export_client::{ExportClient, Mirror};
use mesh_proto::WatchEvent;

async fn serve(pki: &Pki, store: Arc<dyn Store>) -> mesh_apiserver::server::Running {
    let server = pki.server("a");
    let (_tx, feed) = tokio::sync::watch::channel(BTreeMap::new());
    start(ServerParts {
        local: LocalCluster {
            name: ClusterName::new("a").unwrap(),
            id: ClusterId::new(1).unwrap(),
            pod_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
        },
        store: store.clone(),
        election: None,
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: None,
        tls: mesh_certs::LiveTls::new(
            TlsIdentity::from_pem(&server.cert_pem, &server.key_pem, "cert", "key").unwrap(),
            &pki.bundle(),
        )
        .unwrap(),
        trust_domain: TrustDomain::default(),
        import: ImportSettings::default(),
        config: feed,
        replica: "r1".into(),
        renewal: Default::default(),
    })
    .await
    .unwrap()
}

fn node(name: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: ClusterName::new("a").unwrap(),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.0.2.1".parse().unwrap()],
        pod_cidrs: vec!["10.1.1.0/24".parse().unwrap()],
        wireguard_key: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_waits_for_the_synced_markers() {
    init();
    let pki = Pki::new();
    let running = serve(&pki, Arc::new(MemoryStore::default())).await;
    let node = node("a-n1");
    running.writer.upsert(&node).await.unwrap();
    let mut client = ExportClient::connect(
        vec![running.grpc_addr],
        "127.0.0.1",
        pki.client_config(&pki.node("a", "a-n1"), "a"),
    )
    .await
    .unwrap();
    let mut stream = client.watch(&[], 0, "gate-test").await.unwrap();
    // Not synced yet: nothing is presented.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), stream.next())
            .await
            .is_err(),
        "no snapshot before the feed marked its kinds synced"
    );
    for kind in Kind::ALL {
        running.writer.mark_synced(kind).await.unwrap();
    }
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Upsert { ref record, .. } if *record == node),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, WatchEvent::SyncComplete { .. }),
        "{second:?}"
    );
    running.shutdown().await;
}

async fn sync(client: &mut ExportClient, mirror: &mut Mirror, resume: u64) -> Vec<WatchEvent> {
    mirror.begin_watch(resume);
    let mut stream = client.watch(&[], resume, "epoch-test").await.unwrap();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        mirror.apply(&ev);
        let done = matches!(ev, WatchEvent::SyncComplete { .. });
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_against_a_replaced_store_resets_instead_of_a_gap() {
    init();
    let pki = Pki::new();
    let agent = pki.client_config(&pki.node("a", "a-n1"), "a");
    // First life: one node.
    let first = serve(&pki, Arc::new(MemoryStore::default())).await;
    first.writer.upsert(&node("old-node")).await.unwrap();
    for kind in Kind::ALL {
        first.writer.mark_synced(kind).await.unwrap();
    }
    let mut client = ExportClient::connect(vec![first.grpc_addr], "127.0.0.1", agent.clone())
        .await
        .unwrap();
    let mut mirror = Mirror::new();
    sync(&mut client, &mut mirror, 0).await;
    let resume = mirror.resume_revision();
    first.shutdown().await;
    // Second life: a new in-memory store whose revisions run past the old ones.
    let second = serve(&pki, Arc::new(MemoryStore::default())).await;
    for i in 0..40 {
        second
            .writer
            .upsert(&node(&format!("new-node-{i}")))
            .await
            .unwrap();
    }
    for kind in Kind::ALL {
        second.writer.mark_synced(kind).await.unwrap();
    }
    let mut client = ExportClient::connect(vec![second.grpc_addr], "127.0.0.1", agent)
        .await
        .unwrap();
    let events = sync(&mut client, &mut mirror, resume).await;
    assert!(
        matches!(events[0], WatchEvent::Reset { .. }),
        "Reset first: {:?}",
        events[0]
    );
    assert_eq!(
        mirror.records().len(),
        40,
        "exactly the new store's records"
    );
    assert!(
        !mirror
            .records()
            .contains_key(&(Kind::Node, "a/old-node".into())),
        "the old store's record is gone"
    );
    second.shutdown().await;
}
