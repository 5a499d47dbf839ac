//! A hostile remote: cluster B's export (the real gRPC service over real
//! mTLS) serves records B cannot own, written straight into its store as a
//! compromised or misconfigured cluster would. Cluster A imports what is
//! valid, refuses the rest with a reason counted per kind, and what A's own
//! node-agents receive (A's export) holds none of the refused records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_api::clustermesh::RemoteStatus;
use mesh_api::trust::{Quotas, RefusalCode};
use mesh_api::{
    Backend, ClusterName, EndpointRecord, Identity, IdentityRecord, Kind, LabelSet, NodeName,
    NodeRecord, Record, ServiceMeshOptions, ServiceRecord,
};
use mesh_apiserver::import::ImportSettings;
use mesh_apiserver::server::Running;
use mesh_apiserver::state;
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::{Pki, clustermesh_config, in_process_cluster, init};
use mesh_export_client::{ExportClient, Mirror};
use mesh_proto::WatchEvent;
use tokio::sync::watch;

async fn cluster(
    pki: &Pki,
    name: &str,
    id: i64,
    cidr: &str,
    store: Arc<dyn Store>,
    quotas: Quotas,
) -> (Running, watch::Sender<BTreeMap<String, String>>) {
    let settings = ImportSettings {
        max_backoff: Duration::from_millis(500),
        quotas,
        ..Default::default()
    };
    let (running, config, _) = in_process_cluster(pki, name, id, cidr, store, settings).await;
    (running, config)
}

fn cn(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn node(name: &str, cidr: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: cn("b"),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.0.2.2".parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    })
}

fn identity(number: u32, cluster_label: &str) -> Record {
    let labels: BTreeMap<String, String> = [
        ("app".to_string(), "web".to_string()),
        ("meshwork.io/cluster".to_string(), cluster_label.to_string()),
    ]
    .into();
    Record::Identity(IdentityRecord {
        cluster: cn("b"),
        id: Identity::from_u32(number).unwrap(),
        labels: LabelSet::new(labels).unwrap(),
    })
}

fn endpoint(pod: &str, ip: &str, identity: u32) -> Record {
    Record::Endpoint(EndpointRecord {
        cluster: cn("b"),
        namespace: "default".into(),
        pod: pod.into(),
        ips: vec![ip.parse().unwrap()],
        identity: Identity::from_u32(identity).unwrap(),
        node: NodeName::new("b-n1").unwrap(),
        ports: vec![],
    })
}

fn service(name: &str, backend: &str) -> Record {
    Record::Service(ServiceRecord {
        cluster: cn("b"),
        namespace: "default".into(),
        name: name.into(),
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![],
        backends: vec![Backend {
            ip: backend.parse().unwrap(),
            ports: vec![],
            ready: true,
            node: None,
            zone: None,
        }],
        options: ServiceMeshOptions {
            global: true,
            ..Default::default()
        },
    })
}

const B: u32 = 2 << 16;
const A: u32 = 1 << 16;

/// `(kind, key)` of every record of `cluster` in `store`.
async fn keys_in(store: &dyn Store, cluster: &str) -> BTreeSet<(Kind, String)> {
    let (items, _) = store.list(&state::cluster_prefix(cluster)).await.unwrap();
    items
        .into_iter()
        .filter_map(|kv| match state::parse_key(&kv.key).ok()? {
            state::ParsedKey::Record { kind, key, .. } => {
                state::decode(kind, &kv.key, &kv.value).unwrap();
                Some((kind, key))
            }
            state::ParsedKey::Synced { .. } => None,
        })
        .collect()
}

async fn b_status(a: &Running, until: impl Fn(&RemoteStatus) -> bool) -> RemoteStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = a.importer.status();
        if let Some(s) = st.iter().find(|s| s.name == "b" && until(s)) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "B never got there: {st:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_remote_is_refused_record_by_record_and_its_valid_records_flow() {
    init();
    let pki = Pki::new();
    let a_store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let quotas = Quotas {
        services: 2,
        ..Quotas::default()
    };
    let (a, a_cfg) = cluster(&pki, "a", 1, "10.1.0.0/16", a_store.clone(), quotas).await;
    let (b, b_cfg) = cluster(
        &pki,
        "b",
        2,
        "10.2.0.0/16",
        Arc::new(MemoryStore::default()),
        Quotas::default(),
    )
    .await;
    b_cfg
        .send(clustermesh_config(&pki, "b", &[("a", 1, a.grpc_addr, &[])]))
        .unwrap();

    let valid = [
        node("b-n1", "10.2.1.0/24"),
        identity(B | 300, "b"),
        endpoint("web-1", "10.2.1.5", B | 300),
        service("web", "10.2.1.5"),
        service("api", "10.2.1.6"),
    ];
    let hostile: Vec<(Record, RefusalCode)> = vec![
        (node("b-half", "128.0.0.0/1"), RefusalCode::OutsidePodCidrs),
        (
            node("b-steals-a", "10.1.7.0/24"),
            RefusalCode::ForeignAddress,
        ),
        (
            node("b-steals-c", "10.3.0.0/24"),
            RefusalCode::ForeignAddress,
        ),
        (identity(A | 300, "b"), RefusalCode::ForeignIdentity),
        (identity(B | 301, "a"), RefusalCode::ClusterLabel),
        (identity(1, "b"), RefusalCode::ReservedIdentity),
        (
            endpoint("in-a", "10.1.0.9", B | 300),
            RefusalCode::ForeignAddress,
        ),
        (
            endpoint("as-a", "10.2.1.9", A | 300),
            RefusalCode::ForeignIdentity,
        ),
        (
            service("zzz-over-quota", "10.2.1.7"),
            RefusalCode::OverQuota,
        ),
    ];
    for r in valid.iter().chain(hostile.iter().map(|(r, _)| r)) {
        b.writer.upsert(r).await.unwrap();
    }
    for kind in Kind::ALL {
        b.writer.mark_synced(kind).await.unwrap();
    }

    // A imports B, and knows C (10.3.0.0/16) from its config: C need not
    // answer for its CIDRs to be off limits to B.
    let nowhere: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    a_cfg
        .send(clustermesh_config(
            &pki,
            "a",
            &[
                ("b", 2, b.grpc_addr, &["10.2.0.0/16"]),
                ("c", 3, nowhere, &["10.3.0.0/16"]),
            ],
        ))
        .unwrap();

    let st = b_status(&a, |s| s.synced && s.connected).await;
    let want: BTreeSet<(Kind, String)> = valid.iter().map(|r| (r.kind(), r.key())).collect();
    assert_eq!(
        keys_in(a_store.as_ref(), "b").await,
        want,
        "only B's valid records are cached"
    );
    assert_eq!(st.counts.nodes, 1);
    assert_eq!(st.counts.identities, 1);
    assert_eq!(st.counts.endpoints, 1);
    assert_eq!(st.counts.services, 2);
    assert_eq!(st.refused_records.nodes, 3, "{st:#?}");
    assert_eq!(st.refused_records.identities, 3, "{st:#?}");
    assert_eq!(st.refused_records.endpoints, 2, "{st:#?}");
    assert_eq!(st.refused_records.services, 1, "{st:#?}");
    for (record, code) in &hostile {
        let counted = st
            .refusals
            .iter()
            .any(|t| t.kind == record.kind() && t.code == *code && t.count >= 1);
        assert!(
            counted,
            "{} {} not counted as {code}: {:#?}",
            record.kind(),
            record.key(),
            st.refusals
        );
    }
    let degraded = st.degraded.clone().expect("over a quota: degraded");
    assert!(degraded.contains("quota"), "{degraded}");

    // What A's node-agents receive: A's export holds B's valid records only.
    for kind in Kind::ALL {
        a.writer.mark_synced(kind).await.unwrap();
    }
    let cfg = pki.client_config(&pki.node("a", "a-n1"), "a");
    let mut agent = ExportClient::connect(vec![a.grpc_addr], "127.0.0.1", cfg)
        .await
        .unwrap();
    let mut mirror = Mirror::new();
    mirror.begin_watch(0);
    let mut stream = agent.watch(&[], 0, "test agent").await.unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("event within 20 s")
            .expect("stream open")
            .expect("valid event");
        mirror.apply(&ev);
        if matches!(ev, WatchEvent::SyncComplete { .. }) {
            break;
        }
    }
    let seen: BTreeSet<(Kind, String)> = mirror
        .records()
        .values()
        .filter(|r| r.cluster().as_str() == "b")
        .map(|r| (r.kind(), r.key()))
        .collect();
    assert_eq!(seen, want, "agents see B's valid records only");

    // A record that was valid and turns hostile is withdrawn; valid again,
    // it is back. The rest of B keeps flowing meanwhile.
    b.writer.upsert(&node("b-n1", "0.0.0.0/0")).await.unwrap();
    b.writer.upsert(&service("web", "10.2.1.8")).await.unwrap();
    let web_backend = || async {
        let (items, _) = a_store
            .list(&state::record_key("b", Kind::Service, "default/web"))
            .await
            .unwrap();
        match state::decode(Kind::Service, "default/web", &items[0].value).unwrap() {
            Record::Service(web) => web.backends[0].ip.to_string(),
            other => panic!("not a service: {other:?}"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = keys_in(a_store.as_ref(), "b").await;
        let withdrawn = !now.contains(&(Kind::Node, "b-n1".into()));
        if withdrawn && web_backend().await == "10.2.1.8" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b-n1 not withdrawn or web's update not imported: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.writer.upsert(&node("b-n1", "10.2.1.0/24")).await.unwrap();
    b_status(&a, |s| s.counts.nodes == 1 && s.refused_records.nodes == 3).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// One CA signs every cluster of the trust domain, so a chain that verifies
/// only says "some cluster of this mesh". A's entry for C that reaches B's
/// mesh-apiserver (a wrong address, a DNS hijack, a stolen endpoint) must
/// not import B's records as C's: the server's SPIFFE id is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importer_refuses_a_server_that_answers_for_another_cluster() {
    init();
    let pki = Pki::new();
    let a_store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (a, a_cfg) = cluster(
        &pki,
        "a",
        1,
        "10.1.0.0/16",
        a_store.clone(),
        Quotas::default(),
    )
    .await;
    let (b, b_cfg) = cluster(
        &pki,
        "b",
        2,
        "10.2.0.0/16",
        Arc::new(MemoryStore::default()),
        Quotas::default(),
    )
    .await;
    // B serves A (it would accept A's certificate)...
    b_cfg
        .send(clustermesh_config(&pki, "b", &[("a", 1, a.grpc_addr, &[])]))
        .unwrap();
    b.writer.upsert(&node("b-n1", "10.2.1.0/24")).await.unwrap();
    for kind in Kind::ALL {
        b.writer.mark_synced(kind).await.unwrap();
    }
    // ...but A's entry names C, at B's address.
    a_cfg
        .send(clustermesh_config(
            &pki,
            "a",
            &[("c", 3, b.grpc_addr, &["10.2.0.0/16"])],
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        let st = a.importer.status();
        if let Some(s) = st.iter().find(|s| s.name == "c" && s.last_error.is_some()) {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "C never reported an error: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = c.last_error.clone().unwrap();
    assert!(!c.connected, "{c:#?}");
    assert!(
        error.contains("spiffe://meshwork.local/cluster/b")
            && error.contains("spiffe://meshwork.local/cluster/c"),
        "the error names what was presented and what was expected: {error}"
    );
    assert!(
        keys_in(a_store.as_ref(), "c").await.is_empty()
            && keys_in(a_store.as_ref(), "b").await.is_empty(),
        "nothing of B's was imported"
    );
    // The same entry pointed at C's real name succeeds: the check is on the
    // server's identity, not on the connection.
    a_cfg
        .send(clustermesh_config(
            &pki,
            "a",
            &[("b", 2, b.grpc_addr, &["10.2.0.0/16"])],
        ))
        .unwrap();
    b_status(&a, |s| s.synced).await;
    assert_eq!(keys_in(a_store.as_ref(), "b").await.len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}
