//! Benchmark (not a test): cluster B exports 10k global services and 50k
//! endpoints; cluster A imports them; an A node-agent client watches A.
//! Prints: time until the client is synced, both apiservers' RSS, and the
//! propagation latency of 1000 changes in B's store to the A client (p50,
//! p99), side by side with a raw etcd watch on B's store (the one-hop floor).
//!
//! Then the figure from Kubernetes: cluster C's mesh-apiserver runs its
//! Kubernetes feed against a test API server (mesh-test-apiserver, driven
//! over HTTPS with kube-rs) holding `K8S_SERVICES` global services with
//! `K8S_PODS` ready pods each; A imports C too. Each of the changes flips
//! one pod's Ready condition (a pod status patch, as a kubelet does); the
//! API server's EndpointSlice controller updates the slice, C's feed writes
//! the service, A imports it, and the A node-agent client (the same watch,
//! still holding all of B) sees the backend's readiness change. Printed:
//! Kubernetes → A client, and its first hop Kubernetes → C's store.
//!
//! Usage: export_bench <path to mesh-apiserver binary> [services] [endpoints] [changes]
//! (env K8S_SERVICES, default 100; K8S_PODS, default 5)

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_api::{
    Backend, ClusterId, ClusterName, EndpointRecord, Identity, IdentityRecord, LabelSet, NamedPort,
    NodeName, NodeRecord, Protocol, Record, ServiceMeshOptions, ServicePort, ServiceRecord,
};
use mesh_apiserver::state;
use mesh_apiserver::store::{Op, Store, StoreEvent};
use mesh_apiserver::testutil::{EtcdServer, Pki, free_port, init, remote_entry};
use mesh_export_client::{ExportClient, Mirror};
use mesh_proto::WatchEvent;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The last lines of both servers' logs, for a failure message.
fn log_tails(dir: &std::path::Path) -> String {
    ["a", "b"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!("--- {n}.log (last lines)\n{tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn spawn(
    bin: &str,
    dir: &std::path::Path,
    (name, id, cidr): (&str, u8, &str),
    etcd: &str,
    grpc: u16,
    kubeconfig: Option<&std::path::Path>,
) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(bin);
    match kubeconfig {
        Some(kc) => cmd
            .arg("--kubernetes=true")
            .arg("--identity-gc-grace-seconds=3600")
            .env("KUBECONFIG", kc),
        None => cmd.arg("--kubernetes=false"),
    };
    Proc(
        cmd.args([
            &format!("--cluster-name={name}"),
            &format!("--cluster-id={id}"),
            &format!("--pod-cidrs={cidr}"),
            "--store=etcd",
            &format!("--etcd-endpoints={etcd}"),
            &format!("--grpc-listen=127.0.0.1:{grpc}"),
            &format!("--status-listen=127.0.0.1:{}", free_port()),
            &format!(
                "--tls-cert={}",
                dir.join(format!("tls-{name}.crt")).display()
            ),
            &format!(
                "--tls-key={}",
                dir.join(format!("tls-{name}.key")).display()
            ),
            &format!("--tls-ca={}", dir.join("ca.crt").display()),
            &format!(
                "--clustermesh-config-dir={}",
                dir.join(format!("remotes-{name}")).display()
            ),
            "--max-backoff-seconds=1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn mesh-apiserver"),
    )
}

fn service(i: usize, backends: usize, seq: u64) -> Record {
    let c = ClusterName::new("b").unwrap();
    Record::Service(ServiceRecord {
        cluster: c,
        namespace: format!("ns{}", i % 100),
        name: format!("svc{i}"),
        cluster_ips: vec![
            format!("10.96.{}.{}", (i / 250) % 256, i % 250 + 1)
                .parse()
                .unwrap(),
        ],
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: 8080,
        }],
        backends: (0..backends)
            .map(|j| Backend {
                ip: format!(
                    "10.2.{}.{}",
                    (i * backends + j) / 250 % 256,
                    (i * backends + j) % 250 + 1
                )
                .parse()
                .unwrap(),
                ports: vec![NamedPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
                ready: true,
                node: None,
                zone: Some(format!("seq-{seq}")),
            })
            .collect(),
        options: ServiceMeshOptions {
            global: true,
            ..Default::default()
        },
    })
}

async fn seed(store: &dyn Store, services: usize, endpoints: usize) {
    let c = ClusterName::new("b").unwrap();
    let mut records = Vec::new();
    for n in 0..50 {
        records.push(Record::Node(NodeRecord {
            cluster: c.clone(),
            name: NodeName::new(format!("b-n{n}")).unwrap(),
            ips: vec![format!("192.0.2.{}", n + 1).parse().unwrap()],
            pod_cidrs: vec![format!("10.2.{n}.0/24").parse().unwrap()],
            wireguard_key: None,
        }));
    }
    let idents: Vec<Identity> = (0..100)
        .map(|i| Identity::new(ClusterId::new(2).unwrap(), 256 + i).unwrap())
        .collect();
    for (i, id) in idents.iter().enumerate() {
        let mut l = std::collections::BTreeMap::new();
        l.insert("app".to_string(), format!("app{i}"));
        records.push(Record::Identity(IdentityRecord {
            cluster: c.clone(),
            id: *id,
            labels: LabelSet::for_pod(&c, "default", &l).unwrap(),
        }));
    }
    for e in 0..endpoints {
        records.push(Record::Endpoint(EndpointRecord {
            cluster: c.clone(),
            namespace: format!("ns{}", e % 100),
            pod: format!("pod{e}"),
            ips: vec![
                format!("10.2.{}.{}", e / 250 % 256, e % 250 + 1)
                    .parse()
                    .unwrap(),
            ],
            identity: idents[e % idents.len()],
            node: NodeName::new(format!("b-n{}", e % 50)).unwrap(),
            ports: vec![],
        }));
    }
    for s in 0..services {
        records.push(service(s, endpoints / services.max(1), 0));
    }
    for chunk in records.chunks(100) {
        let ops = chunk
            .iter()
            .map(|r| Op::put(state::key_of(r), state::encode(r)))
            .collect();
        store.txn(vec![], ops).await.unwrap();
    }
    mark_synced(store, "b").await;
}

/// What a cluster's Kubernetes feed writes once its first listing is complete.
async fn mark_synced(store: &dyn Store, cluster: &str) {
    for kind in mesh_api::Kind::ALL {
        store
            .put(&state::synced_key(cluster, kind), b"true".to_vec())
            .await
            .unwrap();
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // A bounded run: on timeout the panic unwinds and every guard cleans up.
    tokio::time::timeout(Duration::from_secs(900), run())
        .await
        .expect("the benchmark did not finish within 15 min");
}

async fn run() {
    init();
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: export_bench <mesh-apiserver binary> [services] [endpoints] [changes]");
    let services: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(10_000);
    let endpoints: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(50_000);
    let changes: u64 = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1000);
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each server presents its own cluster's SPIFFE id, which importers check.
    for name in ["a", "b", "c"] {
        let server = pki.server(name);
        std::fs::write(d.join(format!("tls-{name}.crt")), &server.cert_pem).unwrap();
        mesh_certs::pem::write_atomic(
            &d.join(format!("tls-{name}.key")),
            server.key_pem.as_bytes(),
            0o600,
        )
        .unwrap();
    }
    std::fs::write(d.join("ca.crt"), pki.ca.cert_pem()).unwrap();
    let (ga, gb) = (free_port(), free_port());
    std::fs::create_dir(d.join("remotes-a")).unwrap();
    std::fs::create_dir(d.join("remotes-b")).unwrap();
    std::fs::write(
        d.join("remotes-a/b"),
        remote_entry(
            "b",
            2,
            &[format!("127.0.0.1:{gb}")],
            pki.ca.cert_pem(),
            &pki.cluster("a"),
            &[],
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("remotes-b/a"),
        remote_entry(
            "a",
            1,
            &[format!("127.0.0.1:{ga}")],
            pki.ca.cert_pem(),
            &pki.cluster("b"),
            &[],
        ),
    )
    .unwrap();
    let etcd_a = EtcdServer::start().await;
    let etcd_b = EtcdServer::start().await;
    let b_store: Arc<dyn Store> = Arc::new(etcd_b.store().await);
    mark_synced(&etcd_a.store().await, "a").await;
    let t = Instant::now();
    seed(b_store.as_ref(), services, endpoints).await;
    println!(
        "seeded B with {services} global services, {endpoints} endpoints in {:.1?}",
        t.elapsed()
    );
    let pb = spawn(
        bin,
        d,
        ("b", 2, "10.2.0.0/16"),
        &etcd_b.endpoint(),
        gb,
        None,
    );
    let start = Instant::now();
    let pa = spawn(
        bin,
        d,
        ("a", 1, "10.1.0.0/16"),
        &etcd_a.endpoint(),
        ga,
        None,
    );
    let expected = 50 + 100 + endpoints + services;
    // The A node-agent client: reconnect until A has all of B and the watch is synced.
    let cfg = pki.client_config(&pki.node("a", "a-n1"), "a");
    let (mut mirror, mut stream) = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut client) = ExportClient::connect(
            vec![format!("127.0.0.1:{ga}").parse().unwrap()],
            "127.0.0.1",
            cfg.clone(),
        )
        .await
        else {
            continue;
        };
        let mut mirror = Mirror::new();
        mirror.begin_watch(0);
        let Ok(mut stream) = client.watch(&[], 0, "bench").await else {
            continue;
        };
        loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    mirror.apply(&ev);
                    if matches!(ev, WatchEvent::SyncComplete { .. }) {
                        break;
                    }
                }
                Some(Err(e)) => panic!("watch failed: {e}"),
                None => panic!("watch ended before SyncComplete"),
            }
        }
        // Keep following the live stream until everything arrived.
        while mirror.records().len() < expected {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(ev))) => {
                    mirror.apply(&ev);
                }
                _ => panic!(
                    "stream stalled at {} of {expected} records\n{}",
                    mirror.records().len(),
                    log_tails(d)
                ),
            }
        }
        break (mirror, stream);
    };
    let synced = start.elapsed();
    let (rss_a, rss_b) = (rss_mib(pa.0.id()), rss_mib(pb.0.id()));
    // Propagation: change one service at a time; time until the A client sees it,
    // and (independently) until a raw etcd watch on B sees it.
    let rev = b_store.revision().await.unwrap();
    let mut raw = b_store
        .watch(&state::cluster_prefix("b"), rev + 1)
        .await
        .unwrap();
    let mut mesh_lat = Vec::new();
    let mut raw_lat = Vec::new();
    let backends = endpoints / services.max(1);
    for seq in 1..=changes {
        let i = (seq as usize * 7919) % services;
        let r = service(i, backends, seq);
        let key = state::key_of(&r);
        let t = Instant::now();
        b_store.put(&key, state::encode(&r)).await.unwrap();
        let mut raw_seen = None;
        let mut mesh_seen = None;
        while raw_seen.is_none() || mesh_seen.is_none() {
            tokio::select! {
                ev = raw.next(), if raw_seen.is_none() => {
                    if let Some(Ok(StoreEvent::Put(kv))) = ev && kv.key == key {
                        raw_seen = Some(t.elapsed());
                    }
                }
                ev = stream.next(), if mesh_seen.is_none() => {
                    let ev = ev.expect("stream open").expect("valid event");
                    mirror.apply(&ev);
                    if let WatchEvent::Upsert { record: Record::Service(s), .. } = &ev
                        && s.name == format!("svc{i}")
                        && s.backends.first().and_then(|b| b.zone.clone()) == Some(format!("seq-{seq}"))
                    {
                        mesh_seen = Some(t.elapsed());
                    }
                }
            }
        }
        raw_lat.push(raw_seen.unwrap().as_secs_f64() * 1000.0);
        mesh_lat.push(mesh_seen.unwrap().as_secs_f64() * 1000.0);
    }
    let mut counts: HashMap<mesh_api::Kind, usize> = HashMap::new();
    for (k, _) in mirror.records().keys() {
        *counts.entry(*k).or_default() += 1;
    }
    let kube = kube_phase(KubePhase {
        bin,
        pki: &pki,
        dir: d,
        a_grpc: ga,
        services: env_usize("K8S_SERVICES", 100),
        pods: env_usize("K8S_PODS", 5),
        changes,
        mirror: &mut mirror,
        stream: &mut stream,
    })
    .await;
    println!("export/import benchmark: {services} global services, {endpoints} endpoints in B");
    println!(
        "  A node-agent client synced with all {expected} of B's records after {synced:.2?} (A started cold, B's export seeded)"
    );
    println!("  RSS: A mesh-apiserver {rss_a:.1} MiB, B mesh-apiserver {rss_b:.1} MiB");
    println!("  propagation over {changes} changes (ms)            p50      p99");
    let row = |what: &str, v: &mut Vec<f64>, note: &str| {
        println!(
            "    {what:<38}{:>8.2} {:>8.2}{note}",
            pct(&mut v.clone(), 0.5),
            pct(v, 0.99)
        );
    };
    row(
        "C's Kubernetes → A node-agent client",
        &mut kube.to_client.clone(),
        &format!(
            "   (pod Ready flipped; C's Kubernetes: {} global services × {} pods)",
            kube.services, kube.pods
        ),
    );
    row(
        "C's Kubernetes → C's store",
        &mut kube.to_store.clone(),
        "   (slice controller + C's feed)",
    );
    row("B store → A node-agent client", &mut mesh_lat, "");
    row(
        "B store → raw etcd watch on B",
        &mut raw_lat,
        "   (one-hop floor)",
    );
    println!(
        "  C's feed (100 ms debounce, full reconcile per change) synced {} records in {:.2?}; C mesh-apiserver RSS {:.1} MiB",
        kube.records, kube.synced, kube.rss
    );
    // Machine-readable figures, one line each.
    println!();
    println!(
        "BENCH mesh_apiserver_sync services={services} endpoints={endpoints} records={expected} synced_s={:.3} rss_a_mib={rss_a:.1} rss_b_mib={rss_b:.1}",
        synced.as_secs_f64()
    );
    for (path, v) in [
        ("kubernetes_to_agent", &kube.to_client),
        ("kubernetes_to_store", &kube.to_store),
        ("store_to_agent", &mesh_lat),
        ("raw_etcd_watch", &raw_lat),
    ] {
        println!(
            "BENCH mesh_apiserver_propagation path={path} changes={changes} p50_ms={:.2} p99_ms={:.2}",
            pct(&mut v.clone(), 0.5),
            pct(&mut v.clone(), 0.99)
        );
    }
    println!(
        "BENCH mesh_apiserver_kube_feed services={} pods={} records={} synced_s={:.3} rss_c_mib={:.1}",
        kube.services,
        kube.pods,
        kube.records,
        kube.synced.as_secs_f64(),
        kube.rss
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
        })
        .unwrap_or(default)
}

struct KubePhase<'a, S> {
    bin: &'a str,
    pki: &'a Pki,
    dir: &'a std::path::Path,
    a_grpc: u16,
    services: usize,
    pods: usize,
    changes: u64,
    mirror: &'a mut Mirror,
    stream: &'a mut S,
}

struct KubeFigures {
    services: usize,
    pods: usize,
    records: usize,
    synced: Duration,
    rss: f64,
    to_client: Vec<f64>,
    to_store: Vec<f64>,
}

fn pod_ip(n: usize) -> std::net::IpAddr {
    format!("10.3.{}.{}", n / 250 % 256, n % 250 + 1)
        .parse()
        .unwrap()
}

async fn set_ready(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    ip: std::net::IpAddr,
    ready: bool,
) {
    let status = if ready { "True" } else { "False" };
    let patch = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": status}, {"type": "ContainersReady", "status": status}],
    }});
    pods.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("patch status of pod {name}: {e}"));
}

/// Whether `ev` is C's service `svc{i}` with the backend at `ip` in state `ready`.
fn shows(ev: &WatchEvent, i: usize, ip: std::net::IpAddr, ready: bool) -> bool {
    matches!(ev, WatchEvent::Upsert { record: Record::Service(s), .. }
        if s.cluster.as_str() == "c"
            && s.name == format!("svc{i}")
            && s.backends.iter().any(|b| b.ip == ip && b.ready == ready))
}

async fn kube_phase<S>(p: KubePhase<'_, S>) -> KubeFigures
where
    S: futures::Stream<Item = mesh_export_client::Result<WatchEvent>> + Unpin,
{
    use k8s_openapi::api::core::v1::{Pod, Service};
    use kube::api::PostParams;
    let d = p.dir;
    let server =
        mesh_test_apiserver::TestApiServer::start(mesh_test_apiserver::Config::local("bench-c"))
            .await
            .expect("start the test API server");
    let kubeconfig = d.join("kubeconfig-c");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let svcs: kube::Api<Service> = kube::Api::namespaced(client.clone(), "default");
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    let t = Instant::now();
    for i in 0..p.services {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc{i}"), "annotations": {"service.meshwork.io/global": "true"}},
            "spec": {"selector": {"app": format!("svc{i}")}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .unwrap();
        svcs.create(&PostParams::default(), &svc).await.unwrap();
        for j in 0..p.pods {
            let name = format!("svc{i}-{j}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"app": format!("svc{i}")}},
                "spec": {"nodeName": "c-n1", "containers": [{"name": "app", "image": "echo",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            set_ready(&pods, &name, pod_ip(i * p.pods + j), true).await;
        }
    }
    println!(
        "created {} global services and {} ready pods in C's Kubernetes in {:.1?}",
        p.services,
        p.services * p.pods,
        t.elapsed()
    );
    // C lists A (so A's client certificate is allowed), A lists C.
    let gc = free_port();
    std::fs::create_dir(d.join("remotes-c")).unwrap();
    std::fs::write(
        d.join("remotes-c/a"),
        remote_entry(
            "a",
            1,
            &[format!("127.0.0.1:{}", p.a_grpc)],
            p.pki.ca.cert_pem(),
            &p.pki.cluster("c"),
            &[],
        ),
    )
    .unwrap();
    let etcd_c = EtcdServer::start().await;
    let c_store: Arc<dyn Store> = Arc::new(etcd_c.store().await);
    let start = Instant::now();
    let pc = spawn(
        p.bin,
        d,
        ("c", 3, "10.3.0.0/16"),
        &etcd_c.endpoint(),
        gc,
        Some(&kubeconfig),
    );
    std::fs::write(
        d.join("remotes-a/c"),
        remote_entry(
            "c",
            3,
            &[format!("127.0.0.1:{gc}")],
            p.pki.ca.cert_pem(),
            &p.pki.cluster("a"),
            &[],
        ),
    )
    .unwrap();
    // Until the A client holds every service of C with all its backends ready.
    let complete = |m: &Mirror| {
        m.records()
            .iter()
            .filter(|((kind, key), r)| {
                *kind == mesh_api::Kind::Service
                    && key.starts_with("c/")
                    && matches!(r, Record::Service(s) if s.backends.len() == p.pods && s.backends.iter().all(|b| b.ready))
            })
            .count()
            == p.services
    };
    while !complete(p.mirror) {
        match tokio::time::timeout(Duration::from_secs(120), p.stream.next()).await {
            Ok(Some(Ok(ev))) => {
                p.mirror.apply(&ev);
            }
            other => panic!(
                "C's services did not reach the A client ({other:?}); see {}",
                d.join("c.log").display()
            ),
        }
    }
    let synced = start.elapsed();
    let records = p
        .mirror
        .records()
        .keys()
        .filter(|(_, key)| key.starts_with("c/"))
        .count();
    let rss = rss_mib(pc.0.id());
    let rev = c_store.revision().await.unwrap();
    let mut raw = c_store
        .watch(&state::cluster_prefix("c"), rev + 1)
        .await
        .unwrap();
    let mut to_client = Vec::new();
    let mut to_store = Vec::new();
    let mut ready = vec![true; p.services];
    for seq in 1..=p.changes as usize {
        let i = (seq * 7919) % p.services;
        ready[i] = !ready[i];
        let want = ready[i];
        let ip = pod_ip(i * p.pods);
        let t = Instant::now();
        set_ready(&pods, &format!("svc{i}-0"), ip, want).await;
        let (mut at_store, mut at_client) = (None, None);
        while at_store.is_none() || at_client.is_none() {
            tokio::select! {
                ev = raw.next(), if at_store.is_none() => {
                    if let Some(Ok(StoreEvent::Put(kv))) = ev
                        && let Ok(state::ParsedKey::Record { kind, .. }) = state::parse_key(&kv.key)
                        && let Ok(r) = state::decode(kind, &kv.key, &kv.value)
                        && matches!(&r, Record::Service(s) if s.name == format!("svc{i}")
                            && s.backends.iter().any(|b| b.ip == ip && b.ready == want))
                    {
                        at_store = Some(t.elapsed());
                    }
                }
                ev = tokio::time::timeout(Duration::from_secs(60), p.stream.next()), if at_client.is_none() => {
                    let ev = ev
                        .unwrap_or_else(|_| panic!("change {seq} (svc{i} ready={want}) did not reach the A client within 60 s"))
                        .expect("stream open")
                        .expect("valid event");
                    p.mirror.apply(&ev);
                    if shows(&ev, i, ip, want) {
                        at_client = Some(t.elapsed());
                    }
                }
            }
        }
        to_store.push(at_store.unwrap().as_secs_f64() * 1000.0);
        to_client.push(at_client.unwrap().as_secs_f64() * 1000.0);
    }
    drop(pc);
    KubeFigures {
        services: p.services,
        pods: p.pods,
        records,
        synced,
        rss,
        to_client,
        to_store,
    }
}
