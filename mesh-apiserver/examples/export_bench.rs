//! Benchmark (not a test): cluster B exports 10k global services and 50k
//! endpoints; cluster A imports them; an A node-agent client watches A.
//! Prints: time until the client is synced, both apiservers' RSS, and the
//! propagation latency of 1000 changes in B's store to the A client (p50,
//! p99), side by side with a raw etcd watch on B's store (the one-hop floor).
//!
//! Usage: export_bench <path to mesh-apiserver binary> [services] [endpoints] [changes]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_api::proto::WatchEvent;
use mesh_api::{
    Backend, ClusterId, ClusterName, EndpointRecord, Identity, IdentityRecord, LabelSet, NamedPort,
    NodeName, NodeRecord, Protocol, Record, ServiceMeshOptions, ServicePort, ServiceRecord,
};
use mesh_apiserver::client::{ExportClient, Mirror};
use mesh_apiserver::state;
use mesh_apiserver::store::{Op, Store, StoreEvent};
use mesh_apiserver::testutil::{EtcdServer, Pki, free_port, init, remote_entry};

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

fn spawn(
    bin: &str,
    dir: &std::path::Path,
    name: &str,
    id: u8,
    cidr: &str,
    etcd: &str,
    grpc: u16,
) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(bin)
            .args([
                &format!("--cluster-name={name}"),
                &format!("--cluster-id={id}"),
                &format!("--pod-cidrs={cidr}"),
                "--store=etcd",
                &format!("--etcd-endpoints={etcd}"),
                &format!("--grpc-listen=127.0.0.1:{grpc}"),
                &format!("--status-listen=127.0.0.1:{}", free_port()),
                &format!("--tls-cert={}", dir.join("tls.crt").display()),
                &format!("--tls-key={}", dir.join("tls.key").display()),
                &format!("--tls-ca={}", dir.join("ca.crt").display()),
                &format!(
                    "--clustermesh-config-dir={}",
                    dir.join(format!("remotes-{name}")).display()
                ),
                "--kubernetes=false",
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
    let server = pki.server();
    std::fs::write(d.join("tls.crt"), &server.cert_pem).unwrap();
    mesh_certs::pem::write_atomic(&d.join("tls.key"), server.key_pem.as_bytes(), 0o600).unwrap();
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
    let pb = spawn(bin, d, "b", 2, "10.2.0.0/16", &etcd_b.endpoint(), gb);
    let start = Instant::now();
    let pa = spawn(bin, d, "a", 1, "10.1.0.0/16", &etcd_a.endpoint(), ga);
    let expected = 50 + 100 + endpoints + services;
    // The A node-agent client: reconnect until A has all of B and the watch is synced.
    let cfg = pki.client_config(&pki.node("a", "a-n1"));
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
            match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
                Ok(Some(Ok(ev))) => {
                    mirror.apply(&ev);
                }
                _ => panic!(
                    "stream stalled at {} of {expected} records",
                    mirror.records().len()
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
    println!("export/import benchmark: {services} global services, {endpoints} endpoints in B");
    println!(
        "  A node-agent client synced with all {expected} of B's records after {synced:.2?} (A started cold, B's export seeded)"
    );
    println!("  RSS: A mesh-apiserver {rss_a:.1} MiB, B mesh-apiserver {rss_b:.1} MiB");
    println!("  propagation over {changes} changes (ms)     p50      p99");
    println!(
        "    B store → A node-agent client    {:>8.2} {:>8.2}",
        pct(&mut mesh_lat.clone(), 0.5),
        pct(&mut mesh_lat, 0.99)
    );
    println!(
        "    B store → raw etcd watch on B    {:>8.2} {:>8.2}   (one-hop floor)",
        pct(&mut raw_lat.clone(), 0.5),
        pct(&mut raw_lat, 0.99)
    );
    println!(
        "  (Kubernetes → B store is not included: the test API server is not available to this benchmark yet)"
    );
}
