//! Two clusters, each a real etcd and a spawned `mesh-apiserver` process,
//! cross-configured over real mTLS gRPC on loopback. B's state is seeded
//! through the same writer the Kubernetes feed uses.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_api::clustermesh::MeshStatus;
use mesh_api::{
    Backend, ClusterId, ClusterName, EndpointRecord, Identity, IdentityRecord, Kind, LabelSet,
    NamedPort, NodeName, NodeRecord, Protocol, Record, ServiceMeshOptions, ServicePort,
    ServiceRecord,
};
use mesh_apiserver::leader::Leadership;
use mesh_apiserver::state::{self, ParsedKey, Writer};
use mesh_apiserver::store::Store;
use mesh_apiserver::testutil::{EtcdServer, Pki, free_port, init, remote_entry};
use mesh_export_client::{ExportClient, Mirror, MirrorKey, mirror_key};
use mesh_proto::WatchEvent;
use mesh_testbed::Wait;

struct Apiserver {
    child: Child,
    status: u16,
    log: std::path::PathBuf,
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ClusterUnderTest {
    name: &'static str,
    id: u8,
    cidr: &'static str,
    etcd: EtcdServer,
    dir: tempfile::TempDir,
    server: Option<Apiserver>,
    grpc: u16,
    status: u16,
    extra_args: Vec<String>,
}

impl ClusterUnderTest {
    async fn new(name: &'static str, id: u8, cidr: &'static str, pki: &Pki) -> Self {
        let etcd = EtcdServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let server = pki.server(name);
        std::fs::write(dir.path().join("tls.crt"), &server.cert_pem).unwrap();
        mesh_certs::pem::write_atomic(
            &dir.path().join("tls.key"),
            server.key_pem.as_bytes(),
            0o600,
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.crt"), pki.ca.cert_pem()).unwrap();
        std::fs::create_dir(dir.path().join("remotes")).unwrap();
        ClusterUnderTest {
            name,
            id,
            cidr,
            etcd,
            dir,
            server: None,
            grpc: free_port(),
            status: free_port(),
            extra_args: Vec::new(),
        }
    }

    /// Replaces the server certificate by one for these names.
    fn serve_as(&self, pki: &Pki, names: &[&str]) {
        let server = pki
            .ca
            .issue_cluster_server(
                &Pki::cluster_id(self.name),
                &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                mesh_certs::Validity::days(30).unwrap(),
            )
            .unwrap();
        let d = self.dir.path();
        std::fs::write(d.join("tls.crt"), &server.cert_pem).unwrap();
        mesh_certs::pem::write_atomic(&d.join("tls.key"), server.key_pem.as_bytes(), 0o600)
            .unwrap();
    }

    fn start(&mut self) {
        self.server = Some(self.spawn(self.grpc, self.status, "r1"));
    }

    fn spawn(&self, grpc: u16, status: u16, replica: &str) -> Apiserver {
        let d = self.dir.path();
        let log = d.join(format!(
            "apiserver-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mesh-apiserver"))
            .args([
                &format!("--cluster-name={}", self.name),
                &format!("--cluster-id={}", self.id),
                &format!("--pod-cidrs={}", self.cidr),
                "--store=etcd",
                &format!("--etcd-endpoints={}", self.etcd.endpoint()),
                &format!("--grpc-listen=127.0.0.1:{grpc}"),
                &format!("--status-listen=127.0.0.1:{status}"),
                &format!("--tls-cert={}", d.join("tls.crt").display()),
                &format!("--tls-key={}", d.join("tls.key").display()),
                &format!("--tls-ca={}", d.join("ca.crt").display()),
                &format!("--clustermesh-config-dir={}", d.join("remotes").display()),
                "--kubernetes=false",
                "--stale-timeout-seconds=600",
                "--max-backoff-seconds=1",
                "--leader-lease-ttl-seconds=2",
                &format!("--replica-name={replica}"),
                "--tls-reload-seconds=1",
            ])
            .args(&self.extra_args)
            .env("RUST_LOG", "info,h2=warn,tower=warn,hyper=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn mesh-apiserver");
        Apiserver { child, status, log }
    }

    fn kill(&mut self) {
        self.server = None;
    }

    fn log(&self) -> String {
        self.server
            .as_ref()
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    async fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.etcd.store().await)
    }

    async fn status(&self) -> Option<MeshStatus> {
        status_at(self.server.as_ref()?.status).await
    }

    async fn metrics(&self) -> String {
        let port = self.server.as_ref().unwrap().status;
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

async fn status_at(port: u16) -> Option<MeshStatus> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/status")])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

async fn eventually<F, Fut>(what: &str, secs: u64, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    Wait::new(what)
        .timeout(Duration::from_secs(secs))
        .until_async(f)
        .await;
}

/// The records under a prefix of a store, keyed like a mirror.
async fn store_state(store: &dyn Store, prefix: &str) -> BTreeMap<MirrorKey, Record> {
    let (items, _) = store.list(prefix).await.unwrap();
    items
        .into_iter()
        .filter_map(|kv| match state::parse_key(&kv.key).ok()? {
            ParsedKey::Record { kind, .. } => {
                let r = state::decode(kind, &kv.key, &kv.value).unwrap();
                Some((mirror_key(&r), r))
            }
            ParsedKey::Synced { .. } => None,
        })
        .collect()
}

/// What a remote cluster may see of a source state.
fn exported(source: &BTreeMap<MirrorKey, Record>) -> BTreeMap<MirrorKey, Record> {
    source
        .iter()
        .filter_map(|(k, r)| match r {
            Record::Service(s) if !s.options.global => None,
            Record::Service(s) if !s.options.shared => {
                let mut s = s.clone();
                s.backends.clear();
                Some((k.clone(), Record::Service(s)))
            }
            _ => Some((k.clone(), r.clone())),
        })
        .collect()
}

fn cn(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn service(cluster: &str, name: &str, global: bool, shared: bool, backends: &[&str]) -> Record {
    Record::Service(ServiceRecord {
        cluster: cn(cluster),
        namespace: "default".into(),
        name: name.into(),
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: 8080,
        }],
        backends: backends
            .iter()
            .map(|ip| Backend {
                ip: ip.parse().unwrap(),
                ports: vec![NamedPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
                ready: true,
                node: Some(NodeName::new(format!("{cluster}-n1")).unwrap()),
                zone: None,
            })
            .collect(),
        options: ServiceMeshOptions {
            global,
            shared,
            ..Default::default()
        },
    })
}

fn seed(cluster: &str, id: u8, subnet: &str) -> Vec<Record> {
    let ident = Identity::new(ClusterId::new(i64::from(id)).unwrap(), 300).unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "web".to_string());
    vec![
        Record::Node(NodeRecord {
            cluster: cn(cluster),
            name: NodeName::new(format!("{cluster}-n1")).unwrap(),
            ips: vec![format!("192.0.2.{id}").parse().unwrap()],
            pod_cidrs: vec![format!("{subnet}.1.0/24").parse().unwrap()],
            wireguard_key: None,
        }),
        Record::Identity(IdentityRecord {
            cluster: cn(cluster),
            id: ident,
            labels: LabelSet::for_pod(&cn(cluster), "default", &labels).unwrap(),
        }),
        Record::Endpoint(EndpointRecord {
            cluster: cn(cluster),
            namespace: "default".into(),
            pod: "web-1".into(),
            ips: vec![format!("{subnet}.1.5").parse().unwrap()],
            identity: ident,
            node: NodeName::new(format!("{cluster}-n1")).unwrap(),
            ports: vec![],
        }),
        service(cluster, "web", true, true, &[&format!("{subnet}.1.5")]),
        service(
            cluster,
            "internal",
            false,
            true,
            &[&format!("{subnet}.1.5")],
        ),
        service(cluster, "private", true, false, &[&format!("{subnet}.1.5")]),
    ]
}

/// Lists each cluster in the other's config, with its own cluster
/// certificate and the other's pod CIDR.
fn cross_configure(pki: &Pki, a: &ClusterUnderTest, b: &ClusterUnderTest) {
    for (from, to) in [(a, b), (b, a)] {
        std::fs::write(
            from.dir.path().join(format!("remotes/{}", to.name)),
            remote_entry(
                to.name,
                to.id,
                &[to.endpoint()],
                pki.ca.cert_pem(),
                &pki.cluster(from.name),
                &[to.cidr],
            ),
        )
        .unwrap();
    }
}

/// Writes `cluster`'s seed records into `store` as its feed would, and
/// marks every kind synced.
async fn seed_synced(store: Arc<dyn Store>, cluster: &str, id: u8, subnet: &str) {
    let w = Writer::new(store, cn(cluster), Leadership::always());
    for r in seed(cluster, id, subnet) {
        w.upsert(&r).await.unwrap();
    }
    for kind in Kind::ALL {
        w.mark_synced(kind).await.unwrap();
    }
}

async fn agent_client(pki: &Pki, cluster: &ClusterUnderTest, node: &str) -> ExportClient {
    let cfg = pki.client_config(&pki.node(cluster.name, node), cluster.name);
    ExportClient::connect(vec![cluster.endpoint().parse().unwrap()], "127.0.0.1", cfg)
        .await
        .unwrap()
}

/// Watches until SyncComplete; returns the events seen (before and incl. the marker).
async fn watch_until_synced(
    client: &mut ExportClient,
    mirror: &mut Mirror,
    resume: u64,
) -> (
    Vec<WatchEvent>,
    impl futures::Stream<Item = mesh_export_client::Result<WatchEvent>> + use<>,
) {
    mirror.begin_watch(resume);
    let mut stream = client.watch(&[], resume, "test").await.unwrap();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("watch event within 20 s")
            .expect("stream open")
            .expect("valid event");
        mirror.apply(&ev);
        let done = matches!(ev, WatchEvent::SyncComplete { .. });
        seen.push(ev);
        if done {
            return (seen, stream);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_export_import_resume_compaction_and_faults() {
    init();
    let pki = Pki::new();
    let mut a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    // Cross-configure: each lists the other with its own cluster certificate.
    cross_configure(&pki, &a, &b);
    // Bad entries next to the good one: refused with a reason, B keeps working.
    std::fs::write(
        a.dir.path().join("remotes/c"),
        remote_entry(
            "c",
            3,
            &["127.0.0.1:1".to_string()],
            pki.ca.cert_pem(),
            &pki.cluster("a"),
            &["10.1.128.0/17"],
        ),
    )
    .unwrap();
    std::fs::write(a.dir.path().join("remotes/d"), "id: [not a number\n").unwrap();
    std::fs::write(
        a.dir.path().join("remotes/e"),
        remote_entry(
            "e",
            2,
            &["127.0.0.1:1".to_string()],
            pki.ca.cert_pem(),
            &pki.cluster("a"),
            &[],
        ),
    )
    .unwrap();
    b.start();
    a.start();

    // Seed both clusters through the feed's writer (the store is shared with the servers).
    let a_store = a.store().await;
    let b_store = b.store().await;
    let wa = Writer::new(a_store.clone(), cn("a"), Leadership::always());
    let wb = Writer::new(b_store.clone(), cn("b"), Leadership::always());
    for r in seed("b", 2, "10.2") {
        wb.upsert(&r).await.unwrap();
    }
    for r in seed("a", 1, "10.1") {
        wa.upsert(&r).await.unwrap();
    }
    for kind in Kind::ALL {
        wb.mark_synced(kind).await.unwrap();
        wa.mark_synced(kind).await.unwrap();
    }

    // A's cache of B equals what B exports: global services only, backends only when shared.
    let b_prefix = state::cluster_prefix("b");
    eventually("A caches B's export", 30, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
    // The remote's story can be filtered by its session span.
    let log = strip_ansi(&a.log());
    assert!(
        log.lines()
            .any(|l| l.contains("remote_session{remote=b cluster=a resume=")
                && l.contains("watching remote cluster")),
        "no remote_session span on A's watch of B:\n{log}"
    );
    let cache = store_state(a_store.as_ref(), &b_prefix).await;
    assert!(cache.contains_key(&(Kind::Service, "b/default/web".into())));
    assert!(
        !cache.contains_key(&(Kind::Service, "b/default/internal".into())),
        "non-global services never leave B"
    );
    match &cache[&(Kind::Service, "b/default/private".into())] {
        Record::Service(s) => assert!(s.backends.is_empty(), "shared=false: no backends leave B"),
        other => panic!("{other:?}"),
    }
    match &cache[&(Kind::Service, "b/default/web".into())] {
        Record::Service(s) => assert_eq!(s.backends.len(), 1),
        other => panic!("{other:?}"),
    }
    eventually("A reports B connected and synced", 20, || async {
        a.status().await.is_some_and(|s| {
            s.remotes
                .values()
                .any(|r| r.name == "b" && r.connected && r.synced)
        })
    })
    .await;
    let report = a.status().await.unwrap();
    let refused: BTreeMap<String, String> = report
        .refused_entries
        .iter()
        .map(|r| (r.entry.clone(), r.reason.clone()))
        .collect();
    assert!(refused["c"].contains("overlap"), "{refused:?}");
    assert!(refused["d"].contains("malformed YAML"), "{refused:?}");
    assert!(
        refused["e"].contains("duplicate cluster id 2"),
        "{refused:?}"
    );
    assert_eq!(report.remotes.len(), 1, "only b is imported");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("meshwork_remote_connected{cluster=\"a\",remote=\"b\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshwork_remote_records{cluster=\"a\",remote=\"b\",kind=\"services\"} 2"),
        "{metrics}"
    );

    // A node-agent of A sees every cluster (A's own non-global services too).
    let mut agent = agent_client(&pki, &a, "a-n1").await;
    let mut mirror = Mirror::new();
    let (_, stream) = watch_until_synced(&mut agent, &mut mirror, 0).await;
    drop(stream);
    assert_eq!(
        mirror.records(),
        &store_state(a_store.as_ref(), state::ROOT).await,
        "agent state equals A's store"
    );
    assert!(
        mirror
            .records()
            .contains_key(&(Kind::Service, "b/default/web".into()))
    );
    assert!(
        mirror
            .records()
            .contains_key(&(Kind::Service, "a/default/internal".into()))
    );

    // Changes in B: a backend added to web, the annotation removed from private,
    // an endpoint deleted. Resume gives only the deltas.
    let resume = mirror.resume_revision();
    wb.upsert(&service("b", "web", true, true, &["10.2.1.5", "10.2.1.6"]))
        .await
        .unwrap();
    wb.upsert(&service("b", "private", false, false, &["10.2.1.5"]))
        .await
        .unwrap();
    wb.delete(Kind::Endpoint, "default/web-1").await.unwrap();
    eventually("B's changes reach A", 20, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
    let (events, stream) = watch_until_synced(&mut agent, &mut mirror, resume).await;
    drop(stream);
    let deltas = events
        .iter()
        .filter(|e| !matches!(e, WatchEvent::SyncComplete { .. }))
        .count();
    assert!(
        !events.iter().any(|e| matches!(e, WatchEvent::Reset { .. })),
        "no reset on resume: {events:?}"
    );
    assert_eq!(deltas, 3, "only the three changes: {events:?}");
    assert_eq!(
        mirror.records(),
        &store_state(a_store.as_ref(), state::ROOT).await
    );
    assert!(
        !mirror
            .records()
            .contains_key(&(Kind::Service, "b/default/private".into()))
    );

    // Compaction: more changes, compact A's etcd, resume from the old revision.
    let old = mirror.resume_revision();
    wb.upsert(&service("b", "web", true, true, &["10.2.1.7"]))
        .await
        .unwrap();
    eventually("web's new backend reaches A", 20, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
    a_store
        .compact(a_store.revision().await.unwrap())
        .await
        .unwrap();
    let (events, stream) = watch_until_synced(&mut agent, &mut mirror, old).await;
    drop(stream);
    assert!(
        matches!(events[0], WatchEvent::Reset { .. }),
        "Reset first after compaction: {:?}",
        events[0]
    );
    assert_eq!(
        mirror.records(),
        &store_state(a_store.as_ref(), state::ROOT).await,
        "state equals the source after Reset + snapshot"
    );

    // Kill B's mesh-apiserver: A keeps B's state, marked stale; a change meanwhile; B returns.
    b.kill();
    eventually("A reports B disconnected and stale", 20, || async {
        a.status().await.is_some_and(|s| {
            s.remotes
                .values()
                .any(|r| r.name == "b" && !r.connected && r.stale_since.is_some())
        })
    })
    .await;
    assert_eq!(
        exported(&store_state(b_store.as_ref(), &b_prefix).await),
        store_state(a_store.as_ref(), &b_prefix).await,
        "B's last known state is kept"
    );
    wb.delete(Kind::Service, "default/web").await.unwrap();
    b.start();
    eventually(
        "A resyncs with B: only the deleted service disappears",
        30,
        || async {
            exported(&store_state(b_store.as_ref(), &b_prefix).await)
                == store_state(a_store.as_ref(), &b_prefix).await
        },
    )
    .await;
    assert!(
        store_state(a_store.as_ref(), &b_prefix)
            .await
            .contains_key(&(Kind::Node, "b/b-n1".into()))
    );
    eventually("A reports B synced and no longer stale", 20, || async {
        a.status().await.is_some_and(|s| {
            s.remotes
                .values()
                .any(|r| r.name == "b" && r.synced && r.stale_since.is_none())
        })
    })
    .await;

    // Kill B's etcd and restart it: B's server and A's import recover.
    b.etcd.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.etcd.restart().await;
    let wb = Writer::new(b.store().await, cn("b"), Leadership::always());
    wb.upsert(&service("b", "web", true, true, &["10.2.1.9"]))
        .await
        .unwrap();
    eventually("a change after B's etcd restart reaches A", 60, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
            && store_state(a_store.as_ref(), &b_prefix)
                .await
                .contains_key(&(Kind::Service, "b/default/web".into()))
    })
    .await;

    // Removing B from A's config withdraws its state without a restart.
    std::fs::remove_file(a.dir.path().join("remotes/b")).unwrap();
    eventually("B's state withdrawn from A", 20, || async {
        store_state(a_store.as_ref(), &b_prefix).await.is_empty()
    })
    .await;
    let _ = a.log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_negative_matrix_over_the_real_grpc_port() {
    init();
    let pki = Pki::new();
    let other = Pki::new();
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    std::fs::write(
        b.dir.path().join("remotes/a"),
        remote_entry(
            "a",
            1,
            &["127.0.0.1:1".to_string()],
            pki.ca.cert_pem(),
            &pki.cluster("b"),
            &["10.1.0.0/16"],
        ),
    )
    .unwrap();
    b.start();
    let addr: std::net::SocketAddr = b.endpoint().parse().unwrap();
    // A valid cluster client is served.
    eventually("b's gRPC port answers a listed cluster", 20, || async {
        match ExportClient::connect(
            vec![addr],
            "127.0.0.1",
            pki.client_config(&pki.cluster("a"), "b"),
        )
        .await
        {
            Ok(mut c) => c.info().await.is_ok_and(|i| i.name == "b"),
            Err(_) => false,
        }
    })
    .await;
    let expired = {
        let now = time::OffsetDateTime::now_utc();
        pki.ca
            .issue_client(
                &mesh_certs::SpiffeId::cluster(mesh_certs::TrustDomain::default(), cn("a")),
                mesh_certs::Validity::between(
                    now - time::Duration::days(10),
                    now - time::Duration::days(1),
                )
                .unwrap(),
            )
            .unwrap()
    };
    let cases = [
        (
            "wrong CA",
            pki.client_config_with_bundle(&other.cluster("a"), "b"),
            "wrong-ca",
        ),
        ("expired", pki.client_config(&expired, "b"), "expired"),
        (
            "unknown cluster",
            pki.client_config(&pki.cluster("zzz"), "b"),
            "cluster-not-allowed",
        ),
        (
            "node cert used as cluster cert",
            pki.client_config(&pki.node("a", "a-n1"), "b"),
            "node-of-other-cluster",
        ),
    ];
    for (what, cfg, label) in cases {
        let refused = match ExportClient::connect(vec![addr], "127.0.0.1", cfg).await {
            Err(_) => true,
            Ok(mut c) => c.info().await.is_err(),
        };
        assert!(refused, "{what}: must be refused");
        eventually(&format!("{what}: refusal {label} logged"), 10, || async {
            b.status()
                .await
                .is_some_and(|s| s.refused_peers.iter().any(|p| p.reason == label))
        })
        .await;
        assert!(b.log().contains(label), "{what}: the log names {label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_replica_hands_import_to_the_other() {
    init();
    let pki = Pki::new();
    let a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    cross_configure(&pki, &a, &b);
    b.start();
    // Two replicas of A on A's etcd.
    let (g1, s1, g2, s2) = (free_port(), free_port(), free_port(), free_port());
    let mut r1 = Some(a.spawn(g1, s1, "a-r1"));
    let mut r2 = Some(a.spawn(g2, s2, "a-r2"));
    let a_store = a.store().await;
    let b_store = b.store().await;
    let wb = Writer::new(b_store.clone(), cn("b"), Leadership::always());
    for r in seed("b", 2, "10.2") {
        wb.upsert(&r).await.unwrap();
    }
    for kind in Kind::ALL {
        wb.mark_synced(kind).await.unwrap();
    }
    let b_prefix = state::cluster_prefix("b");
    let in_sync = || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    };
    eventually("A caches B", 30, in_sync).await;
    eventually("exactly one leader among A's replicas", 20, || async {
        let l1 = status_at(s1).await.is_some_and(|s| s.leader);
        let l2 = status_at(s2).await.is_some_and(|s| s.leader);
        l1 ^ l2
    })
    .await;
    let first_leads = status_at(s1).await.is_some_and(|s| s.leader);
    // Kill the leader process (SIGKILL: no resignation).
    let survivor = if first_leads {
        r1 = None;
        s2
    } else {
        r2 = None;
        s1
    };
    let killed = Instant::now();
    eventually("the surviving replica leads", 15, || async {
        status_at(survivor).await.is_some_and(|s| s.leader)
    })
    .await;
    eprintln!(
        "takeover by the surviving replica after {:?} (lease TTL 2 s)",
        killed.elapsed()
    );
    wb.upsert(&service("b", "web", true, true, &["10.2.1.5", "10.2.1.8"]))
        .await
        .unwrap();
    wb.delete(Kind::Endpoint, "default/web-1").await.unwrap();
    eventually(
        "changes in B reach A through the new leader; states equal",
        30,
        in_sync,
    )
    .await;
    eventually(
        "the new leader reports B connected and synced",
        20,
        || async {
            status_at(survivor).await.is_some_and(|s| {
                s.remotes
                    .values()
                    .any(|r| r.name == "b" && r.connected && r.synced)
            })
        },
    )
    .await;
    drop((r1, r2));
}

/// A real authoritative DNS server (hickory-server) on 127.0.0.1, UDP, a
/// random port, serving zone `mesh.test` from memory; stops when dropped.
struct DnsServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start(records: &[(&str, std::net::Ipv4Addr)]) -> DnsServer {
        use hickory_server::net::runtime::TokioRuntimeProvider;
        use hickory_server::proto::rr::rdata::{A, SOA};
        use hickory_server::proto::rr::{LowerName, Name, RData, Record as DnsRecord};
        use hickory_server::store::in_memory::InMemoryZoneHandler;
        use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
        let origin = Name::from_ascii("mesh.test.").unwrap();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_ascii("ns.mesh.test.").unwrap(),
            Name::from_ascii("admin.mesh.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            30,
        );
        assert!(zone.upsert_mut(
            DnsRecord::from_rdata(origin.clone(), 3600, RData::SOA(soa)),
            1
        ));
        for (name, ip) in records {
            let name = Name::from_ascii(format!("{name}.")).unwrap();
            assert!(zone.upsert_mut(DnsRecord::from_rdata(name, 30, RData::A(A(*ip))), 1));
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut server = hickory_server::Server::new(catalog);
        server.register_socket(socket);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        DnsServer { port, task }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Remote endpoints given as DNS names: A resolves B's name through a real
/// DNS server (the only place the name exists), connects over mTLS with the
/// name verified against B's certificate, and syncs; a remote whose name
/// does not resolve carries an error naming the host, and B keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_endpoints_given_as_dns_names_resolve_through_the_configured_nameserver() {
    init();
    let pki = Pki::new();
    let dns = DnsServer::start(&[("b.mesh.test", std::net::Ipv4Addr::LOCALHOST)]).await;
    let mut a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    a.extra_args
        .push(format!("--dns-nameservers=127.0.0.1:{}", dns.port));
    // B's certificate names only b.mesh.test: A must dial and verify the name.
    b.serve_as(&pki, &["b.mesh.test"]);
    let client = pki.cluster("a");
    // server_name unset: A verifies the endpoint's host name.
    let entry = |name: &str, id: u8, endpoint: String, cidr: &str| {
        mesh_api::clustermesh::RemoteClusterConfig {
            name: cn(name),
            id: ClusterId::new(i64::from(id)).unwrap(),
            endpoints: vec![endpoint],
            server_name: None,
            pod_cidrs: vec![cidr.parse().unwrap()],
            ca_cert: pki.ca.cert_pem().to_string(),
            client_cert: client.cert_pem.clone(),
            client_key: client.key_pem.clone(),
        }
        .to_yaml()
    };
    std::fs::write(
        a.dir.path().join("remotes/b"),
        entry("b", 2, format!("b.mesh.test:{}", b.grpc), "10.2.0.0/16"),
    )
    .unwrap();
    std::fs::write(
        a.dir.path().join("remotes/c"),
        entry("c", 3, "nope.mesh.test:1".into(), "10.3.0.0/16"),
    )
    .unwrap();
    std::fs::write(
        b.dir.path().join("remotes/a"),
        remote_entry(
            "a",
            1,
            &[a.endpoint()],
            pki.ca.cert_pem(),
            &pki.cluster("b"),
            &["10.1.0.0/16"],
        ),
    )
    .unwrap();
    b.start();
    a.start();
    let a_store = a.store().await;
    let b_store = b.store().await;
    let wb = Writer::new(b_store.clone(), cn("b"), Leadership::always());
    for r in seed("b", 2, "10.2") {
        wb.upsert(&r).await.unwrap();
    }
    // A's own feed has listed its (empty) cluster: its export may complete.
    let wa = Writer::new(a_store.clone(), cn("a"), Leadership::always());
    for kind in Kind::ALL {
        wb.mark_synced(kind).await.unwrap();
        wa.mark_synced(kind).await.unwrap();
    }
    let b_prefix = state::cluster_prefix("b");
    eventually("A caches B's export, dialled by name", 30, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
    // An A node-agent sees B's global service with its backend.
    let mut agent = agent_client(&pki, &a, "a-n1").await;
    let mut mirror = Mirror::new();
    let (_, stream) = watch_until_synced(&mut agent, &mut mirror, 0).await;
    drop(stream);
    match mirror
        .records()
        .get(&(Kind::Service, "b/default/web".into()))
    {
        Some(Record::Service(s)) => assert_eq!(s.backends.len(), 1, "{s:?}"),
        other => panic!("b/default/web at the A agent: {other:?}"),
    }
    eventually(
        "A: b connected and synced; c carries a DNS error naming its host",
        20,
        || async {
            a.status().await.is_some_and(|s| {
                let b_ok = s
                    .remotes
                    .values()
                    .any(|r| r.name == "b" && r.connected && r.synced);
                let c_err = s.remotes.values().any(|r| {
                    r.name == "c"
                        && !r.connected
                        && r.last_error.as_deref().is_some_and(|e| {
                            e.contains("nope.mesh.test") && e.contains("DNS resolution failed")
                        })
                });
                b_ok && c_err
            })
        },
    )
    .await;
    let report = a.status().await.unwrap();
    let c = report.remotes.values().find(|r| r.name == "c").unwrap();
    eprintln!("remote c: {:?}", c.last_error);
    // B keeps working next to the broken entry: a change still arrives.
    wb.upsert(&service("b", "web", true, true, &["10.2.1.5", "10.2.1.6"]))
        .await
        .unwrap();
    eventually("a change in B reaches A", 20, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
}

fn write_pem(path: &std::path::Path, text: &str) {
    mesh_certs::pem::write_atomic(path, text.as_bytes(), 0o600).unwrap();
}

/// Writes a cluster's server certificate, key and CA bundle files.
fn write_server_tls(dir: &std::path::Path, cert: &mesh_certs::IssuedCert, bundle: &str) {
    write_pem(&dir.join("tls.key"), &cert.key_pem);
    write_pem(&dir.join("tls.crt"), &cert.cert_pem);
    write_pem(&dir.join("ca.crt"), bundle);
}

/// A CA rotation across two running clusters without a restart and without
/// a refused connection: trust old+new everywhere, reissue every leaf
/// (servers, A's node-agent, each side's client entry) under the new CA,
/// then drop the old CA. Through the overlap A's import stream of B and an
/// A agent's watch stay open; fresh handshakes (A→B with A's current entry,
/// agent → A with the agent's current files) are made every 100 ms and none
/// may fail. When the old CA is dropped, the streams still authenticated by
/// old-CA certificates are revoked and reopen once with the new ones; a
/// client with an old-CA certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_across_two_clusters_refuses_no_connection_then_refuses_the_old_ca() {
    init();
    let old = Pki::new();
    let new = Pki::new();
    let mut a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &old).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &old).await;
    let entry_for = |name: &str,
                     id: u8,
                     endpoint: String,
                     ca: &str,
                     client: &mesh_certs::IssuedCert,
                     cidr: &str| {
        mesh_api::clustermesh::RemoteClusterConfig {
            name: cn(name),
            id: ClusterId::new(i64::from(id)).unwrap(),
            endpoints: vec![endpoint],
            server_name: Some("127.0.0.1".into()),
            pod_cidrs: vec![cidr.parse().unwrap()],
            ca_cert: ca.to_string(),
            client_cert: client.cert_pem.clone(),
            client_key: client.key_pem.clone(),
        }
        .to_yaml()
    };
    let (a_dir, b_dir) = (a.dir.path().to_path_buf(), b.dir.path().to_path_buf());
    let (a_ep, b_ep) = (a.endpoint(), b.endpoint());
    // The entries (A's for B, B's for A) and the A agent's files for a CA bundle and a CA.
    let write_entries = |bundle: &str, issuer: &Pki| {
        std::fs::write(
            a_dir.join("remotes/b"),
            entry_for(
                "b",
                2,
                b_ep.clone(),
                bundle,
                &issuer.cluster("a"),
                "10.2.0.0/16",
            ),
        )
        .unwrap();
        std::fs::write(
            b_dir.join("remotes/a"),
            entry_for(
                "a",
                1,
                a_ep.clone(),
                bundle,
                &issuer.cluster("b"),
                "10.1.0.0/16",
            ),
        )
        .unwrap();
    };
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_files = mesh_certs::TlsFiles {
        cert: agent_dir.path().join("tls.crt"),
        key: agent_dir.path().join("tls.key"),
        ca: agent_dir.path().join("ca.crt"),
    };
    let write_agent = |bundle: &str, issuer: &Pki| {
        write_server_tls(agent_dir.path(), &issuer.node("a", "a-n1"), bundle);
    };
    let old_pem = old.ca.cert_pem().to_string();
    let new_pem = new.ca.cert_pem().to_string();
    let both = format!("{old_pem}{new_pem}");
    write_entries(&old_pem, &old);
    write_agent(&old_pem, &old);
    b.start();
    a.start();
    let a_store = a.store().await;
    let b_store = b.store().await;
    let wa = Writer::new(a_store.clone(), cn("a"), Leadership::always());
    let wb = Writer::new(b_store.clone(), cn("b"), Leadership::always());
    for r in seed("b", 2, "10.2") {
        wb.upsert(&r).await.unwrap();
    }
    for kind in Kind::ALL {
        wb.mark_synced(kind).await.unwrap();
        wa.mark_synced(kind).await.unwrap();
    }
    let b_prefix = state::cluster_prefix("b");
    eventually("A caches B", 30, || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    })
    .await;
    eventually("A reports B connected and synced", 20, || async {
        a.status().await.is_some_and(|s| {
            s.remotes
                .values()
                .any(|r| r.name == "b" && r.connected && r.synced)
        })
    })
    .await;
    let connections = |s: &MeshStatus| {
        s.remotes
            .values()
            .find(|r| r.name == "b")
            .map(|r| (r.connected, r.connections))
    };
    let before = connections(&a.status().await.unwrap()).unwrap();

    // The A agent: live TLS from its files, one watch held open throughout.
    let agent_tls = mesh_certs::LiveTls::from_files(&agent_files).unwrap();
    let _agent_watch = agent_tls.watch_files(agent_files.clone(), Duration::from_millis(200));
    let a_addr: std::net::SocketAddr = a.endpoint().parse().unwrap();
    let b_addr: std::net::SocketAddr = b.endpoint().parse().unwrap();
    let mut agent = ExportClient::connect(
        vec![a_addr],
        "127.0.0.1",
        agent_tls.client_config(&Pki::cluster_id("a")).unwrap(),
    )
    .await
    .unwrap();
    let mut mirror = Mirror::new();
    let (_, mut agent_stream) = watch_until_synced(&mut agent, &mut mirror, 0).await;

    // Fresh handshakes every 100 ms, each with the material of that moment.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prober = {
        let stop = stop.clone();
        let handshakes = handshakes.clone();
        let agent_tls = agent_tls.clone();
        let entry = a.dir.path().join("remotes/b");
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // A → B with A's current entry for B (what A's import would dial).
                // The rotation rewrites the entry while this runs: a read
                // can catch it half-written. That is no handshake; read again.
                let Some(cfg) = std::fs::read_to_string(&entry).ok().and_then(|text| {
                    mesh_api::clustermesh::RemoteClusterConfig::parse("b", &text).ok()
                }) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let id =
                    mesh_certs::TlsIdentity::from_pem(&cfg.client_cert, &cfg.client_key, "c", "k")
                        .unwrap();
                let bundle = mesh_certs::TrustBundle::from_pem(&cfg.ca_cert, "ca").unwrap();
                let tls =
                    mesh_certs::tls::client_config(id, &bundle, &Pki::cluster_id("b")).unwrap();
                for (what, addr, tls) in [
                    ("A→B", b_addr, tls),
                    (
                        "agent→A",
                        a_addr,
                        agent_tls.client_config(&Pki::cluster_id("a")).unwrap(),
                    ),
                ] {
                    let r = match ExportClient::connect(vec![addr], "127.0.0.1", tls).await {
                        Ok(mut c) => c.info().await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => {
                            ok += 1;
                            handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(e) => failures.push(format!("{what}: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failures)
        })
    };
    // A step is complete when every party serves exactly the files of the
    // step: each server logs the fingerprint of the files it loaded, each
    // entry swap is logged, the agent's LiveTls tells its own.
    let files_of = |dir: &std::path::Path| mesh_certs::TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca: dir.join("ca.crt"),
    };
    let entry_swaps = |c: &ClusterUnderTest| {
        c.log()
            .matches("remote's CA bundle or client certificate changed")
            .count()
    };
    let mut swaps = (entry_swaps(&a), entry_swaps(&b));
    let mut settle = async |step: &str| {
        let want_a = files_of(&a_dir).fingerprint().unwrap();
        let want_b = files_of(&b_dir).fingerprint().unwrap();
        eventually(
            &format!("{step}: both servers loaded the step's files and entries"),
            30,
            || async {
                a.log().contains(&want_a)
                    && b.log().contains(&want_b)
                    && entry_swaps(&a) > swaps.0
                    && entry_swaps(&b) > swaps.1
            },
        )
        .await;
        eventually(
            &format!("{step}: the agent loaded its files"),
            30,
            || async { agent_tls.fingerprint() == agent_files.fingerprint().unwrap() },
        )
        .await;
        // Fresh handshakes made with this step's material, however fast
        // the machine: the prober covers every step, not a share of a
        // wall-clock window.
        let seen = handshakes.load(std::sync::atomic::Ordering::SeqCst);
        eventually(
            &format!("{step}: fresh handshakes with the step's files"),
            30,
            || async { handshakes.load(std::sync::atomic::Ordering::SeqCst) >= seen + 4 },
        )
        .await;
        swaps = (entry_swaps(&a), entry_swaps(&b));
    };
    let mut backends = vec!["10.2.1.5".to_string()];
    let mut change_b = async |step: &str| {
        backends.push(format!("10.2.1.{}", 10 + backends.len()));
        let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
        wb.upsert(&service("b", "web", true, true, &refs))
            .await
            .unwrap();
        eprintln!("rotation step: {step}");
    };
    // 1. Trust both CAs everywhere.
    write_server_tls(&a_dir, &old.server("a"), &both);
    write_server_tls(&b_dir, &old.server("b"), &both);
    write_entries(&both, &old);
    write_agent(&both, &old);
    change_b("dual trust").await;
    settle("dual trust").await;
    // 2. Every leaf reissued under the new CA.
    write_server_tls(&b_dir, &new.server("b"), &both);
    write_server_tls(&a_dir, &new.server("a"), &both);
    write_entries(&both, &new);
    write_agent(&both, &new);
    change_b("leaves reissued").await;
    settle("leaves reissued").await;
    assert_eq!(
        connections(&a.status().await.unwrap()).unwrap(),
        before,
        "through the overlap, A's import stream of B never reconnected (connected, connections)"
    );
    // 3. The old CA dropped.
    write_server_tls(&b_dir, &new.server("b"), &new_pem);
    write_server_tls(&a_dir, &new.server("a"), &new_pem);
    write_entries(&new_pem, &new);
    write_agent(&new_pem, &new);
    change_b("old CA dropped").await;
    settle("old CA dropped").await;
    // Fresh handshakes keep running a little past the last swap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failures) = prober.await.unwrap();
    assert!(
        failures.is_empty(),
        "refused during the rotation ({ok} fine): {failures:#?}"
    );
    assert!(
        ok >= 12,
        "the prober ran through every step: {ok} handshakes"
    );
    // The old CA dropped, the stream A opened with its old-CA certificate
    // is revoked: A reconnects once, with the certificate of the new CA.
    eventually(
        "A reconnected to B with its new certificate",
        20,
        || async {
            connections(&a.status().await.unwrap()).is_some_and(|(up, n)| up && n > before.1)
        },
    )
    .await;
    let after = connections(&a.status().await.unwrap()).unwrap();
    assert_eq!(
        after,
        (true, before.1 + 1),
        "one reconnection, refused by no one (connected, connections)"
    );
    // The agent's watch, opened with an old-CA certificate before the
    // rotation, is closed with the reason...
    let deadline = Instant::now() + Duration::from_secs(20);
    let closed = loop {
        match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            agent_stream.next(),
        )
        .await
        .expect("the pre-rotation agent watch is closed within 20 s")
        {
            Some(Ok(ev)) => {
                mirror.apply(&ev);
            }
            Some(Err(e)) => break e.to_string(),
            None => break "ended".to_string(),
        }
    };
    assert!(
        closed.contains("access revoked"),
        "closed with the reason: {closed}"
    );
    // ...and one opened with its new material delivers B's last change.
    let mut agent = ExportClient::connect(
        vec![a_addr],
        "127.0.0.1",
        agent_tls.client_config(&Pki::cluster_id("a")).unwrap(),
    )
    .await
    .unwrap();
    let resume = mirror.resume_revision();
    let (_, mut agent_stream) = watch_until_synced(&mut agent, &mut mirror, resume).await;
    let want: Vec<std::net::IpAddr> = backends.iter().map(|b| b.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(Record::Service(s)) = mirror
            .records()
            .get(&(Kind::Service, "b/default/web".into()))
            && s.backends.iter().map(|b| b.ip).collect::<Vec<_>>() == want
        {
            break;
        }
        let ev = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            agent_stream.next(),
        )
        .await
        .expect("the new agent watch delivers B's last change")
        .expect("the agent's watch is still open")
        .expect("valid event");
        mirror.apply(&ev);
    }
    // An old-CA certificate is refused now, by B and by A; the new one is served.
    for (addr, cert, server) in [
        (b_addr, old.cluster("a"), &b),
        (a_addr, old.node("a", "a-n1"), &a),
    ] {
        let id =
            mesh_certs::TlsIdentity::from_pem(&cert.cert_pem, &cert.key_pem, "c", "k").unwrap();
        let bundle = mesh_certs::TrustBundle::from_pem(&both, "both").unwrap();
        let cfg =
            mesh_certs::tls::client_config(id, &bundle, &Pki::cluster_id(server.name)).unwrap();
        let refused = match ExportClient::connect(vec![addr], "127.0.0.1", cfg).await {
            Err(_) => true,
            Ok(mut c) => c.info().await.is_err(),
        };
        assert!(refused, "an old-CA certificate must be refused at {addr}");
        eventually("the refusal is recorded", 10, || async {
            server
                .status()
                .await
                .is_some_and(|s| !s.refused_peers.is_empty())
        })
        .await;
    }
    let mut fresh = ExportClient::connect(
        vec![b_addr],
        "127.0.0.1",
        new.client_config(&new.cluster("a"), "b"),
    )
    .await
    .unwrap();
    assert_eq!(fresh.info().await.unwrap().name, "b");
}

/// The log without terminal colour codes (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A remote removed from the config while the mesh-apiserver is down (or
/// while another replica led) leaves its records in etcd; the restarted
/// process compares the store with its config and withdraws them. An entry
/// that is merely broken keeps its cluster's state (a typo must not wipe a
/// remote), until the entry is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_removed_while_the_apiserver_was_down_is_withdrawn_at_restart() {
    init();
    let pki = Pki::new();
    let mut a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    cross_configure(&pki, &a, &b);
    let entry_b = a.dir.path().join("remotes/b");
    b.start();
    a.start();
    let a_store = a.store().await;
    seed_synced(b.store().await, "b", 2, "10.2").await;
    let b_prefix = state::cluster_prefix("b");
    let b_cached = || async { a_store.list(&b_prefix).await.unwrap().0.len() };
    eventually("A caches B", 30, || async {
        a.status().await.is_some_and(|s| s.is_synced_with("b"))
    })
    .await;
    let cached = b_cached().await;
    assert!(cached > 0);

    // Down, the entry is broken: the restarted A refuses it and keeps B's state.
    a.kill();
    std::fs::write(&entry_b, "id: [not a number\n").unwrap();
    a.start();
    eventually("A up again, refusing b's entry", 30, || async {
        a.status()
            .await
            .is_some_and(|s| s.refused_entry("b").is_some())
    })
    .await;
    assert_eq!(b_cached().await, cached, "a broken entry wiped B's state");
    assert_eq!(a.status().await.unwrap().swept_clusters, 0);

    // Down again, the entry is removed: the restarted A withdraws B's state.
    a.kill();
    std::fs::remove_file(&entry_b).unwrap();
    a.start();
    eventually("B's state withdrawn after the restart", 30, || async {
        b_cached().await == 0
    })
    .await;
    eventually("the sweep counted", 10, || async {
        a.status().await.is_some_and(|s| s.swept_clusters == 1)
    })
    .await;
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("meshwork_remote_state_swept_total{cluster=\"a\"} 1"),
        "{metrics}"
    );
    assert!(
        a.log().contains("cluster not in the config"),
        "the withdrawal is not logged:\n{}",
        a.log()
    );
}

/// A's mesh-apiserver is replaced together with its store (a sidecar etcd
/// lost with its pod) while B is unreachable: the agent's snapshot from the
/// new server names B pending, so the agent keeps B's (stale) state instead
/// of dropping every route and identity of B. Once B is back and synced,
/// the server resets the watch and a complete snapshot prunes what B no
/// longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_apiserver_does_not_wipe_an_unreachable_remote_from_its_agents() {
    init();
    let pki = Pki::new();
    let mut a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    cross_configure(&pki, &a, &b);
    b.start();
    a.start();
    seed_synced(b.store().await, "b", 2, "10.2").await;
    seed_synced(a.store().await, "a", 1, "10.1").await;
    eventually("A synced with B", 30, || async {
        a.status().await.is_some_and(|s| s.is_synced_with("b"))
    })
    .await;
    let of_b = |m: &Mirror| m.records().keys().filter(|k| k.1.starts_with("b/")).count();
    let mut mirror = Mirror::new();
    let mut agent = agent_client(&pki, &a, "a-n1").await;
    let (_, stream) = watch_until_synced(&mut agent, &mut mirror, 0).await;
    drop(stream);
    let held = of_b(&mirror);
    assert!(
        held >= 3,
        "the agent holds B's node, identity, endpoint, services"
    );

    // B unreachable; A replaced with an empty store.
    b.kill();
    a.kill();
    a.etcd = EtcdServer::start().await;
    a.start();
    seed_synced(a.store().await, "a", 1, "10.1").await;
    let mut agent = agent_client_eventually(&pki, &a).await;
    let resume = mirror.resume_revision();
    let (seen, stream) = watch_until_synced(&mut agent, &mut mirror, resume).await;
    assert!(
        matches!(seen.first(), Some(WatchEvent::Reset { .. })),
        "a replaced store resets the watch: {seen:?}"
    );
    match seen.last() {
        Some(WatchEvent::SyncComplete { pending, .. }) => {
            assert_eq!(pending, &vec!["b".to_string()], "B is named pending")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(of_b(&mirror), held, "the agent kept B's state");
    assert!(a.log().contains("pending"), "{}", a.log());

    // B back without one service: once A has synced B, the watch resets and
    // the complete snapshot prunes it.
    let wb = Writer::new(b.store().await, cn("b"), Leadership::always());
    wb.delete(Kind::Service, "default/private").await.unwrap();
    b.start();
    let mut stream = stream;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut reset = false;
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("B synced and the watch reset within 40 s")
            .expect("stream open")
            .expect("valid event");
        reset |= matches!(ev, WatchEvent::Reset { .. });
        mirror.apply(&ev);
        if reset && matches!(&ev, WatchEvent::SyncComplete { pending, .. } if pending.is_empty()) {
            break;
        }
    }
    assert_eq!(
        of_b(&mirror),
        held - 1,
        "the complete snapshot pruned B's removed service"
    );
    assert!(
        !mirror
            .records()
            .contains_key(&(Kind::Service, "b/default/private".into()))
    );
}

async fn agent_client_eventually(pki: &Pki, cluster: &ClusterUnderTest) -> ExportClient {
    let cfg = pki.client_config(&pki.node(cluster.name, "a-n1"), cluster.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ExportClient::connect(
            vec![cluster.endpoint().parse().unwrap()],
            "127.0.0.1",
            cfg.clone(),
        )
        .await
        {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "server not back: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
/// The leader replica is paused (SIGSTOP) past its lease: the other one
/// takes over and imports B's changes; when the paused one resumes, it
/// drops leadership at once (its lease deadline passed) and the leader key,
/// and A's cache of B, stay what the new leader made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_does_not_lead_or_write_when_it_resumes() {
    init();
    let pki = Pki::new();
    let a = ClusterUnderTest::new("a", 1, "10.1.0.0/16", &pki).await;
    let mut b = ClusterUnderTest::new("b", 2, "10.2.0.0/16", &pki).await;
    cross_configure(&pki, &a, &b);
    b.start();
    let (g1, s1, g2, s2) = (free_port(), free_port(), free_port(), free_port());
    let r1 = a.spawn(g1, s1, "a-r1");
    let r2 = a.spawn(g2, s2, "a-r2");
    let a_store = a.store().await;
    let b_store = b.store().await;
    let wb = Writer::new(b_store.clone(), cn("b"), Leadership::always());
    for r in seed("b", 2, "10.2") {
        wb.upsert(&r).await.unwrap();
    }
    for kind in Kind::ALL {
        wb.mark_synced(kind).await.unwrap();
    }
    let b_prefix = state::cluster_prefix("b");
    let in_sync = || async {
        exported(&store_state(b_store.as_ref(), &b_prefix).await)
            == store_state(a_store.as_ref(), &b_prefix).await
    };
    eventually("A caches B", 30, in_sync).await;
    eventually("exactly one leader among A's replicas", 20, || async {
        let l1 = status_at(s1).await.is_some_and(|s| s.leader);
        let l2 = status_at(s2).await.is_some_and(|s| s.leader);
        l1 ^ l2
    })
    .await;
    let (paused, paused_status, survivor, survivor_name) =
        if status_at(s1).await.is_some_and(|s| s.leader) {
            (&r1, s1, s2, "a-r2")
        } else {
            (&r2, s2, s1, "a-r1")
        };
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &paused.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let resumed = scopeguard_cont(paused.child.id());
    eventually("the other replica leads", 15, || async {
        status_at(survivor).await.is_some_and(|s| s.leader)
    })
    .await;
    wb.upsert(&service("b", "web", true, true, &["10.2.1.5", "10.2.1.9"]))
        .await
        .unwrap();
    eventually("B's change reaches A through the new leader", 30, in_sync).await;
    drop(resumed); // SIGCONT
    eventually("the resumed replica no longer leads", 5, || async {
        status_at(paused_status).await.is_some_and(|s| !s.leader)
    })
    .await;
    let leader_key = a_store
        .get("meshwork/internal/a/leader")
        .await
        .unwrap()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    assert_eq!(leader_key.as_deref(), Some(survivor_name));
    // A second change, then a few seconds with both running: one writer.
    wb.delete(Kind::Endpoint, "default/web-1").await.unwrap();
    eventually("the next change arrives too", 30, in_sync).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(in_sync().await, "A's cache of B diverged after the resume");
    assert!(status_at(survivor).await.is_some_and(|s| s.leader));
    assert!(status_at(paused_status).await.is_some_and(|s| !s.leader));
    let log = std::fs::read_to_string(&paused.log).unwrap_or_default();
    assert!(
        log.contains("leadership dropped") || log.contains("lost leadership"),
        "the resumed replica does not say it stopped leading:\n{log}"
    );
}

/// Sends SIGCONT to `pid` when dropped (also when the test fails), so a
/// stopped process is never left behind.
fn scopeguard_cont(pid: u32) -> impl Drop {
    struct Cont(u32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    Cont(pid)
}
