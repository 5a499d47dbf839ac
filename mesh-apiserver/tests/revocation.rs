//! Revocation reaches open streams: cluster B watches A over real mTLS;
//! when A removes B from its config, or A's CA rotation drops the CA that
//! signed B's client certificate, A closes B's already open watch within
//! seconds, and what A exports afterwards never reaches B. B's status says
//! why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_api::clustermesh::RemoteStatus;
use mesh_api::{ClusterName, Kind, NodeName, NodeRecord, Record};
use mesh_apiserver::import::ImportSettings;
use mesh_apiserver::server::Running;
use mesh_apiserver::state;
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::{Pki, clustermesh_config, in_process_cluster, init};
use mesh_certs::{CertificateAuthority, LiveTls, TlsIdentity, TrustBundle, TrustDomain, Validity};
use tokio::sync::watch;

type Config = watch::Sender<BTreeMap<String, String>>;

fn node(name: &str, cidr: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: ClusterName::new("a").unwrap(),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.0.2.1".parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    })
}

async fn a_nodes_in(store: &dyn Store) -> usize {
    store
        .list(&state::cluster_prefix("a"))
        .await
        .unwrap()
        .0
        .iter()
        .filter(|kv| kv.key.contains("/nodes/"))
        .count()
}

async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

fn a_seen_by(b: &Running) -> RemoteStatus {
    b.importer
        .status()
        .into_iter()
        .find(|s| s.name == "a")
        .expect("B imports A")
}

/// A (10.1/16) and B (10.2/16), each configured with the other; B's
/// store and A's config sender and live TLS material are returned.
async fn two(pki: &Pki) -> (Running, Config, LiveTls, Running, Arc<dyn Store>) {
    let settings = ImportSettings {
        max_backoff: Duration::from_millis(300),
        ..Default::default()
    };
    let (a, a_cfg, a_tls) = in_process_cluster(
        pki,
        "a",
        1,
        "10.1.0.0/16",
        Arc::new(MemoryStore::default()),
        settings.clone(),
    )
    .await;
    let b_store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (b, b_cfg, _) =
        in_process_cluster(pki, "b", 2, "10.2.0.0/16", b_store.clone(), settings).await;
    a_cfg
        .send(clustermesh_config(
            pki,
            "a",
            &[("b", 2, b.grpc_addr, &["10.2.0.0/16"])],
        ))
        .unwrap();
    b_cfg
        .send(clustermesh_config(
            pki,
            "b",
            &[("a", 1, a.grpc_addr, &["10.1.0.0/16"])],
        ))
        .unwrap();
    a.writer.upsert(&node("a-n1", "10.1.1.0/24")).await.unwrap();
    for kind in Kind::ALL {
        a.writer.mark_synced(kind).await.unwrap();
    }
    until("B imports A", 20, async || {
        a_nodes_in(b_store.as_ref()).await == 1
    })
    .await;
    std::mem::forget(b_cfg);
    (a, a_cfg, a_tls, b, b_store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_removed_from_the_config_loses_its_open_stream() {
    init();
    let pki = Pki::new();
    let (a, a_cfg, _, b, b_store) = two(&pki).await;
    assert!(a_seen_by(&b).connected);
    // A forgets B; B still has A configured and its watch is open.
    a_cfg.send(BTreeMap::new()).unwrap();
    let took = until("B's open watch of A closed", 5, async || {
        !a_seen_by(&b).connected
    })
    .await;
    println!("revoked after {took:?}");
    // What A exports afterwards never reaches B.
    a.writer.upsert(&node("a-n2", "10.1.2.0/24")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a_nodes_in(b_store.as_ref()).await,
        1,
        "a-n2 must not reach B"
    );
    let st = a_seen_by(&b);
    assert!(!st.connected, "{st:#?}");
    let why = st.refused.clone().unwrap_or_default();
    assert!(
        why.starts_with("a ") && why.contains("clustermesh config"),
        "B's status names why: {st:#?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_step_of_a_ca_rotation_cuts_off_a_client_of_the_old_ca() {
    init();
    let pki = Pki::new();
    let (a, _a_cfg, a_tls, b, b_store) = two(&pki).await;
    let new =
        CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap();
    let server = new
        .issue_cluster_server(
            &Pki::cluster_id("a"),
            &["127.0.0.1".into()],
            Validity::days(5).unwrap(),
        )
        .unwrap();
    let identity =
        || TlsIdentity::from_pem(&server.cert_pem, &server.key_pem, "cert", "key").unwrap();
    // The overlap: both CAs trusted, B's stream goes on.
    a_tls
        .update(
            identity(),
            &TrustBundle::with_overlap(pki.ca.cert().clone(), new.cert().clone()),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a_seen_by(&b).connected, "the overlap keeps old clients");
    // The last step: only the new CA. B still presents the old one's cert.
    a_tls
        .update(identity(), &TrustBundle::single(new.cert().clone()))
        .unwrap();
    let took = until("B's open watch of A closed", 5, async || {
        !a_seen_by(&b).connected
    })
    .await;
    println!("revoked after {took:?}");
    a.writer.upsert(&node("a-n2", "10.1.2.0/24")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a_nodes_in(b_store.as_ref()).await,
        1,
        "a-n2 must not reach B"
    );
    assert!(
        a.authorizer
            .recent_refusals()
            .contains(&mesh_certs::Refusal::WrongCa),
        "A records the refusal: {:?}",
        a.authorizer.recent_refusals()
    );
    a.shutdown().await;
    b.shutdown().await;
}
