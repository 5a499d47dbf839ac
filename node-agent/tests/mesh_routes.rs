//! Routes and WireGuard peers from the mesh feed, for real: three "nodes"
//! (network namespaces on one underlay bridge) — two of cluster c1, one of
//! cluster c2 — each running the real `node-agent` binary, which opens a
//! Watch over mutual TLS (its node certificate) to an in-process
//! mesh-apiserver `Export` service of its own cluster (memory store holding
//! both clusters' records, as an importing mesh-apiserver's store does).
//! Pods are namespaces made by the real `mesh-cni`; traffic is real ping.
//! With encryption on, a capture on the underlay bridge sees only UDP to
//! the WireGuard port and never the payload marker; with it off, it sees the
//! marker (so the check can fail).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_agent_api::AgentClient;
use mesh_api::{ClusterId, ClusterName, Kind, NodeName, NodeRecord, Record, WireGuardKey};
use mesh_apiserver::export::{
    ConfiguredRemote, ExportService, LocalCluster, PendingRemotes, serve,
};
use mesh_apiserver::leader::Leadership;
use mesh_apiserver::state::Writer;
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::Pki;
use mesh_certs::{AccessPolicy, Authorizer, TlsIdentity, TrustDomain, Validity};
use mesh_testbed::{Bridge, Capture, NetNs, Wait, require_root, unique_name};
use node_agent::api::AgentStatus;
use serde_json::{Value, json};

mod common;

use common::{CniCall, Pod, pod_ip};
/// The payload marker pinged between pods ("meshwork-secret!" in hex).
const MARKER_HEX: &str = "6d657368776f726b2d73656372657421";
const MARKER: &[u8] = b"meshwork-secret!";
const WG_PORT: u16 = 51871;

struct Node {
    ns: NetNs,
    dir: tempfile::TempDir,
    cluster: &'static str,
    cluster_id: u8,
    name: String,
    ip: Ipv4Addr,
    pod_cidr: String,
    wg: String,
    bpf: mesh_testbed::BpfDir,
    cgroup: mesh_testbed::Cgroup,
    agent: Option<Child>,
    /// With a config dir, encryption settings come from its files (as the
    /// chart's mounted ConfigMap) instead of the command line.
    config_dir: Option<PathBuf>,
}

impl Node {
    fn new(
        bridge: &Bridge,
        cluster: &'static str,
        cluster_id: u8,
        ip: Ipv4Addr,
        pod_cidr: &str,
    ) -> Node {
        let ns = NetNs::new("mr");
        bridge.attach(&ns, "eth0", &format!("{ip}/24"));
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        let node = Node {
            name: ns.name().to_string(),
            wg: unique_name("mwg"),
            bpf: mesh_testbed::BpfDir::new(),
            cgroup: mesh_testbed::Cgroup::new(),
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
            cluster,
            cluster_id,
            ip,
            pod_cidr: pod_cidr.to_string(),
            agent: None,
            config_dir: None,
        };
        std::fs::create_dir_all(node.dir.path().join("state")).expect("state dir");
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn log(&self) -> String {
        common::log_text(&self.dir.path().join("agent.log"))
    }

    fn status(&self) -> AgentStatus {
        AgentClient::new(self.socket())
            .status()
            .unwrap_or_else(|e| panic!("status of {}: {e}\n{}", self.name, self.log()))
    }

    fn start_agent(&mut self, pki: &Pki, apiserver: &str, encryption: bool) {
        let cert = pki.node(self.cluster, &self.name);
        let d = self.dir.path();
        std::fs::write(d.join("node.crt"), &cert.cert_pem).unwrap();
        // Written as a key should be: only the owner may read it.
        mesh_certs::pem::write_atomic(
            &d.join("node.key"),
            cert.key_pem.as_bytes(),
            mesh_certs::pem::KEY_MODE,
        )
        .unwrap();
        std::fs::write(d.join("ca.crt"), pki.ca.cert_pem()).unwrap();
        // nsenter, not `ip netns exec` (which remounts /sys and would hide
        // bpffs and cgroup2 from the agent's eBPF datapath).
        let mut cmd = common::agent_command(&self.ns);
        cmd.env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info,h2=warn,tower=warn,hyper=warn")
            .args([
                format!("--cluster-name={}", self.cluster),
                format!("--cluster-id={}", self.cluster_id),
                format!("--node-name={}", self.name),
                format!("--pod-cidr={}", self.pod_cidr),
                format!("--state-dir={}", d.join("state").display()),
                format!("--agent-socket={}", self.socket().display()),
                format!("--bpf-root={}", self.bpf.path().display()),
                format!("--cgroup-root={}", self.cgroup.path().display()),
                format!("--wireguard-interface={}", self.wg),
                format!("--wireguard-port={WG_PORT}"),
                match &self.config_dir {
                    Some(dir) => format!("--config-dir={}", dir.display()),
                    None => format!("--enable-encryption={encryption}"),
                },
                format!("--mesh-apiserver-address={apiserver}"),
                format!("--mesh-client-cert={}", d.join("node.crt").display()),
                format!("--mesh-client-key={}", d.join("node.key").display()),
                format!("--mesh-client-ca={}", d.join("ca.crt").display()),
                "--metrics-address=127.0.0.1:0".to_string(),
            ]);
        let (socket, log) = (self.socket(), d.join("agent.log"));
        let agent = self.agent.insert(common::spawn_agent(&mut cmd, &log));
        common::wait_answering(
            agent,
            &socket,
            &log,
            Duration::from_secs(20),
            Duration::from_millis(50),
        );
    }

    fn stop_agent(&mut self) {
        if let Some(child) = self.agent.take() {
            common::terminate(child);
        }
    }

    /// GET /metrics from inside the node's namespace (its loopback).
    fn metrics(&self) -> String {
        let addr = self.status().metrics_address.expect("metrics address");
        common::metrics(&self.ns, addr)
    }

    /// Our routes (proto 193) as "dst next-hop" strings.
    fn routes(&self) -> Vec<String> {
        let out = self
            .ns
            .run_ok("ip", &["-j", "route", "show", "proto", "193"]);
        let v: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
        let mut r: Vec<String> = v
            .iter()
            .map(|r| match r["gateway"].as_str() {
                Some(gw) => format!("{} via {gw}", r["dst"].as_str().unwrap_or("?")),
                None => format!(
                    "{} dev {}",
                    r["dst"].as_str().unwrap_or("?"),
                    r["dev"].as_str().unwrap_or("?")
                ),
            })
            .collect();
        r.sort();
        r
    }

    fn record(&self, key: Option<WireGuardKey>) -> Record {
        Record::Node(NodeRecord {
            cluster: ClusterName::new(self.cluster).unwrap(),
            name: NodeName::new(&self.name).unwrap(),
            ips: vec![self.ip.into()],
            pod_cidrs: vec![self.pod_cidr.parse().unwrap()],
            wireguard_key: key,
        })
    }

    /// A pod made by mesh-cni exactly as a runtime would; returns (pod, its IP).
    fn pod(&self) -> (Pod, String) {
        let pod = Pod::new("mrp");
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "mesh-cni",
            "agentSocket": self.socket(), "stateDir": self.dir.path().join("state"),
            "mtu": 1400, "podCIDR": self.pod_cidr,
        });
        let out = common::run_cni(
            &self.ns,
            &CniCall {
                command: "ADD",
                container: &pod.id,
                netns: Some(&pod.path()),
                pod_name: Some(&pod.id),
                stdin: conf.to_string().as_bytes(),
            },
        );
        assert!(
            out.status.success(),
            "mesh-cni ADD on {}: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ip = pod_ip(&v);
        (pod, ip)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The agent removes its device on SIGTERM; after a kill, the
        // namespace going away removes the TUN, the socket file stays.
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.wg));
    }
}

/// What these tests do with a pod besides ping: wait for routes to settle.
impl Pod {
    /// Pings until it answers (routes and handshakes settle), at most `secs`.
    fn ping_eventually(&self, ip: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.ping(ip) {
                return true;
            }
        }
        false
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn diag(n: &Node) -> impl Fn() -> String + '_ {
    move || {
        format!(
            "routes: {:?}\nstatus: {:?}\nlog:\n{}",
            n.routes(),
            AgentClient::new(n.socket()).status(),
            n.log()
        )
    }
}

fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool, diag: impl Fn() -> String) {
    Wait::new(what)
        .timeout(Duration::from_secs(secs))
        .until_some_or(|| f().then_some(()), diag);
}

/// An Export service of `cluster` on a listener inside `node`'s namespace.
fn start_export(
    rt: &tokio::runtime::Runtime,
    pki: &Pki,
    store: Arc<dyn Store>,
    cluster: &str,
    id: u8,
    node: &Node,
    port: u16,
) -> String {
    start_export_with(rt, pki, store, cluster, id, node, port, Vec::new())
}

/// [`start_export`] for a cluster configured to import `remotes`.
#[allow(clippy::too_many_arguments)]
fn start_export_with(
    rt: &tokio::runtime::Runtime,
    pki: &Pki,
    store: Arc<dyn Store>,
    cluster: &str,
    id: u8,
    node: &Node,
    port: u16,
    remotes: Vec<ConfiguredRemote>,
) -> String {
    let server = pki
        .ca
        .issue_cluster_server(
            &Pki::cluster_id(cluster),
            &[node.ip.to_string()],
            Validity::days(1).unwrap(),
        )
        .unwrap();
    let identity = TlsIdentity::from_pem(&server.cert_pem, &server.key_pem, "cert", "key").unwrap();
    let name = ClusterName::new(cluster).unwrap();
    let authorizer = Authorizer::new(TrustDomain::default(), AccessPolicy::nodes_of(name.clone()));
    let tls = mesh_certs::tls::server_config(identity, &pki.bundle(), authorizer.clone()).unwrap();
    let ip = node.ip;
    let listener = mesh_bpf::netns::in_netns(&node.ns.path(), move || {
        let l = std::net::TcpListener::bind((ip, port)).expect("bind in node namespace");
        l.set_nonblocking(true).unwrap();
        l
    })
    .expect("enter node namespace");
    let addr = listener.local_addr().unwrap();
    let (remotes_tx, remotes) = tokio::sync::watch::channel(remotes);
    let service = ExportService::new(
        store,
        LocalCluster {
            name,
            id: ClusterId::new(i64::from(id)).unwrap(),
            pod_cidrs: vec![],
        },
    )
    .with_pending_remotes(PendingRemotes::new(remotes, Duration::from_secs(600)));
    rt.spawn(async move {
        let _keep = remotes_tx;
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = serve(listener, tls, authorizer, service, std::future::pending()).await;
    });
    addr.to_string()
}

fn run(encryption: bool) {
    require_root();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bridge = Bridge::new();
    let mut a1 = Node::new(
        &bridge,
        "c1",
        1,
        Ipv4Addr::new(10, 99, 0, 1),
        "10.201.1.0/24",
    );
    let mut a2 = Node::new(
        &bridge,
        "c1",
        1,
        Ipv4Addr::new(10, 99, 0, 2),
        "10.201.2.0/24",
    );
    let mut b1 = Node::new(
        &bridge,
        "c2",
        2,
        Ipv4Addr::new(10, 99, 0, 3),
        "10.202.1.0/24",
    );

    // A route someone else made: the agent must never touch it.
    a1.ns
        .run_ok("ip", &["route", "add", "10.250.0.0/24", "via", "10.99.0.2"]);
    let pki = Pki::new();
    // Servers and writers on their own runtimes: the servers' can be shut
    // down to make the mesh-apiserver unreachable.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c1 = Writer::new(
        store.clone(),
        ClusterName::new("c1").unwrap(),
        Leadership::always(),
    );
    let c2 = Writer::new(
        store.clone(),
        ClusterName::new("c2").unwrap(),
        Leadership::always(),
    );
    let upsert = |w: &Writer, r: Record| {
        control.block_on(w.upsert(&r)).expect("store upsert");
    };
    upsert(&c1, a1.record(None));
    upsert(&c1, a2.record(None));
    upsert(&c2, b1.record(None));
    // Each cluster's feed has listed everything (the export presents a
    // snapshot as complete only then).
    for w in [&c1, &c2] {
        for kind in Kind::ALL {
            control.block_on(w.mark_synced(kind)).expect("mark synced");
        }
    }

    let api_c1 = start_export(&servers, &pki, store.clone(), "c1", 1, &a1, 0);
    let api_c2 = start_export(&servers, &pki, store.clone(), "c2", 2, &b1, 0);
    a1.start_agent(&pki, &api_c1, encryption);
    a2.start_agent(&pki, &api_c1, encryption);
    b1.start_agent(&pki, &api_c2, encryption);

    if encryption {
        // The mesh-apiserver copies the Node annotation into the record;
        // here the test does, from what each agent reports.
        for (w, n) in [(&c1, &a1), (&c1, &a2), (&c2, &b1)] {
            let st = n.status();
            let enc = st.encryption.expect("encryption status");
            assert!(enc.enabled);
            let key: WireGuardKey = enc.public_key.expect("public key").parse().unwrap();
            upsert(w, n.record(Some(key)));
        }
    }

    let hop = |n: &Node, via: &Node| {
        if encryption {
            format!("{} dev {}", n.pod_cidr, via.wg)
        } else {
            format!("{} via {}", n.pod_cidr, n.ip)
        }
    };
    for (me, others) in [(&a1, [&a2, &b1]), (&a2, [&a1, &b1]), (&b1, [&a1, &a2])] {
        let mut want: Vec<String> = others.iter().map(|o| hop(o, me)).collect();
        want.sort();
        eventually(
            &format!("routes on {}", me.name),
            20,
            || me.routes() == want,
            diag(me),
        );
        let st = me.status();
        let feed = st.mesh_feed.expect("mesh feed status");
        assert!(feed.connected && feed.synced, "{feed:?}");
        assert_eq!(feed.counts["nodes"], 3, "{feed:?}");
        if encryption {
            let enc = st.encryption.unwrap();
            assert_eq!(enc.peers.len(), 2, "peers of {}: {enc:?}", me.name);
        }
    }

    let m = a1.metrics();
    for line in [
        "meshwork_mesh_feed_connected 1",
        "meshwork_mesh_feed_synced 1",
        "meshwork_mesh_feed_records{kind=\"nodes\"} 3",
        "meshwork_node_routes 2",
    ] {
        assert!(
            m.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{m}"
        );
    }
    assert_eq!(
        m.lines().any(|l| l == "meshwork_wireguard_peers 2"),
        encryption,
        "{m}"
    );

    // The agent's second line: records of c2 that would touch c1 (as if the
    // mesh-apiserver had let them through) change no route, no WireGuard
    // peer and no ipcache entry of c1's nodes, and are counted.
    let ipcache = |n: &Node| {
        n.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("meshwork_datapath_ipcache_entries "))
            .map(str::to_string)
    };
    let ipcache_before = ipcache(&a1);
    let key: WireGuardKey = "aG9zdGlsZS1ub2RlLWtleS0wMTIzNDU2Nzg5YWJjZGU="
        .parse()
        .unwrap();
    let hostile_node = |name: &str, cidr: &str| {
        Record::Node(NodeRecord {
            cluster: ClusterName::new("c2").unwrap(),
            name: NodeName::new(name).unwrap(),
            ips: vec![Ipv4Addr::new(10, 99, 0, 3).into()],
            pod_cidrs: vec![cidr.parse().unwrap()],
            wireguard_key: Some(key),
        })
    };
    upsert(&c2, hostile_node("b-half", "0.0.0.0/1"));
    upsert(&c2, hostile_node("b-steals-a1", "10.201.1.0/24"));
    let hostile_identity = Record::Identity(mesh_api::IdentityRecord {
        cluster: ClusterName::new("c2").unwrap(),
        id: mesh_api::Identity::from_u32((1 << 16) | 400).unwrap(),
        labels: mesh_api::LabelSet::new(
            [("meshwork.io/cluster".to_string(), "c2".to_string())].into(),
        )
        .unwrap(),
    });
    upsert(&c2, hostile_identity.clone());
    eventually(
        "a1 refuses c2's nodes and identity that touch c1",
        20,
        || {
            let m = a1.metrics();
            m.lines()
                .any(|l| l == "meshwork_mesh_feed_refused_records{kind=\"nodes\"} 2")
                && m.lines()
                    .any(|l| l == "meshwork_mesh_feed_refused_records{kind=\"identities\"} 1")
        },
        diag(&a1),
    );
    for (me, others) in [(&a1, [&a2, &b1]), (&a2, [&a1, &b1])] {
        let mut want: Vec<String> = others.iter().map(|o| hop(o, me)).collect();
        want.sort();
        assert_eq!(
            me.routes(),
            want,
            "{} routes after the hostile records",
            me.name
        );
        if encryption {
            let peers = me.status().encryption.unwrap().peers;
            assert_eq!(peers.len(), 2, "{}: {peers:?}", me.name);
            assert!(
                peers.iter().all(|p| p.public_key != key.to_string()),
                "{}: {peers:?}",
                me.name
            );
        }
    }
    assert_eq!(ipcache(&a1), ipcache_before, "a1's ipcache changed");
    // They are c2's own records to b1 (one store serves both clusters
    // here): withdraw them before the traffic checks.
    let hostile: Vec<Record> = vec![
        hostile_node("b-half", "0.0.0.0/1"),
        hostile_node("b-steals-a1", "10.201.1.0/24"),
    ];
    for r in &hostile {
        control
            .block_on(c2.delete(r.kind(), &r.key()))
            .expect("withdraw");
    }
    control
        .block_on(c2.delete(hostile_identity.kind(), &hostile_identity.key()))
        .expect("withdraw");
    eventually(
        "b1's routes are its own again",
        20,
        || {
            let mut want: Vec<String> = [&a1, &a2].iter().map(|o| hop(o, &b1)).collect();
            want.sort();
            b1.routes() == want
        },
        diag(&b1),
    );

    let (pa1, ip_a1) = a1.pod();
    let (pa2, ip_a2) = a2.pod();
    let (pb1, ip_b1) = b1.pod();
    assert!(
        pa1.ping_eventually(&ip_a2, 15),
        "c1 node 1 → c1 node 2 pod\n{}",
        a1.log()
    );
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "c1 → c2 pod\n{}\n{}",
        a1.log(),
        b1.log()
    );
    assert!(pb1.ping_eventually(&ip_a2, 15), "c2 → c1 pod\n{}", b1.log());
    assert!(pa2.ping(&ip_a1), "c1 node 2 → node 1 pod");

    // The wire between clusters.
    let cap = Capture::start(bridge.ns(), "br0");
    let ok = pa1
        .ns
        .run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", "-p", MARKER_HEX, &ip_b1],
        )
        .status
        .success();
    assert!(ok, "marked ping c1 → c2");
    let cap = cap.stop();
    let pcap = cap.bytes().to_vec();
    let wg_packets = cap.count(&format!("udp port {WG_PORT}"));
    // The only other traffic between nodes is the agents' TLS watch to the
    // mesh-apiserver (node traffic, not pod traffic: --node-encryption is off).
    let api_port = api_c1.rsplit_once(':').unwrap().1;
    let not_wg =
        format!("ip and not ip multicast and not udp port {WG_PORT} and not tcp port {api_port}");
    let other_ip = cap.count(&not_wg);
    if encryption {
        assert!(
            !contains(&pcap, MARKER),
            "the payload marker crossed the underlay in clear"
        );
        assert!(
            wg_packets >= 6,
            "expected WireGuard packets for 3 pings, saw {wg_packets}"
        );
        assert_eq!(
            other_ip,
            0,
            "non-WireGuard IP packets on the underlay:\n{}",
            cap.text(&not_wg)
        );
        let enc = a1.status().encryption.unwrap();
        let peer_b1 = enc
            .peers
            .iter()
            .find(|p| p.endpoint == Some(format!("{}:{WG_PORT}", b1.ip).parse().unwrap()))
            .expect("peer for the c2 node");
        assert!(peer_b1.last_handshake_seconds_ago.is_some(), "{peer_b1:?}");
    } else {
        assert!(
            contains(&pcap, MARKER),
            "plaintext pings carry the marker on the underlay"
        );
        assert_eq!(wg_packets, 0);
        assert!(
            other_ip >= 6,
            "the filter that must stay empty with encryption sees plaintext pod traffic here ({other_ip} packets)"
        );
    }

    // A node that disappears loses its route (and peer); the others stay.
    control
        .block_on(c2.delete(Kind::Node, &b1.name))
        .expect("delete node");
    let mut want = vec![hop(&a2, &a1)];
    want.sort();
    eventually(
        "route of the removed node withdrawn on a1",
        20,
        || a1.routes() == want,
        diag(&a1),
    );
    if encryption {
        eventually(
            "peer of the removed node removed",
            10,
            || a1.status().encryption.unwrap().peers.len() == 1,
            diag(&a1),
        );
    }
    assert!(pa1.ping(&ip_a2), "remaining node still reachable");

    // Restart converges without flushing: no route of ours is deleted while
    // the agent restarts (watched with `ip monitor`).
    upsert(
        &c2,
        b1.record(if encryption {
            b1.status()
                .encryption
                .and_then(|e| e.public_key)
                .map(|k| k.parse().unwrap())
        } else {
            None
        }),
    );
    let mut want: Vec<String> = [&a2, &b1].iter().map(|o| hop(o, &a1)).collect();
    want.sort();
    eventually(
        "route back after the node returns",
        20,
        || a1.routes() == want,
        diag(&a1),
    );
    if !encryption {
        let mut monitor = a1
            .ns
            .command("ip")
            .args(["-o", "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        std::thread::sleep(Duration::from_millis(200));
        a1.stop_agent();
        assert_eq!(a1.routes(), want, "routes stay while the agent is down");
        a1.start_agent(&pki, &api_c1, encryption);
        eventually(
            "restarted agent synced",
            20,
            || a1.status().mesh_feed.is_some_and(|f| f.synced) && a1.status().routing.passes > 0,
            diag(&a1),
        );
        std::thread::sleep(Duration::from_millis(500));
        let _ = monitor.kill();
        let out = monitor.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("Deleted"), "restart deleted routes:\n{text}");
        assert_eq!(a1.routes(), want);
        assert!(pa1.ping(&ip_b1), "traffic after restart");
    } else {
        // The userspace device ends with the process (and its routes with
        // it); a restarted agent keeps its key and converges to the same
        // routes and peers.
        let key = a1.status().encryption.unwrap().public_key;
        a1.stop_agent();
        a1.start_agent(&pki, &api_c1, encryption);
        assert_eq!(
            a1.status().encryption.unwrap().public_key,
            key,
            "key kept in the state dir"
        );
        eventually(
            "routes back after restart",
            20,
            || a1.routes() == want,
            diag(&a1),
        );
        assert_eq!(a1.status().encryption.unwrap().peers.len(), 2);
        assert!(
            pa1.ping_eventually(&ip_b1, 10),
            "encrypted traffic after restart"
        );
    }

    // The mesh-apiserver goes away: the last known state is kept.
    servers.shutdown_background();
    eventually(
        "feed reports disconnected",
        30,
        || a1.status().mesh_feed.is_some_and(|f| !f.connected),
        diag(&a1),
    );
    std::thread::sleep(Duration::from_secs(11)); // past a periodic pass
    assert_eq!(
        a1.routes(),
        want,
        "routes kept while the mesh-apiserver is unreachable"
    );
    assert!(
        pa1.ping_eventually(&ip_b1, 10),
        "cross-cluster traffic keeps flowing"
    );

    // Meanwhile c2's node goes; the mesh-apiserver comes back on the same
    // address: the agent reconnects, resumes, and removes only that route.
    let connects = a1.status().mesh_feed.unwrap().connects;
    control
        .block_on(c2.delete(Kind::Node, &b1.name))
        .expect("delete node");
    let port: u16 = api_c1.rsplit_once(':').unwrap().1.parse().unwrap();
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    start_export(&servers, &pki, store.clone(), "c1", 1, &a1, port);
    let want = vec![hop(&a2, &a1)];
    eventually(
        "reconnected feed withdraws the node removed meanwhile",
        30,
        || a1.routes() == want,
        diag(&a1),
    );
    let feed = a1.status().mesh_feed.unwrap();
    assert!(
        feed.connected && feed.synced && feed.connects > connects,
        "{feed:?}"
    );
    assert_eq!(feed.counts["nodes"], 2, "{feed:?}");
    assert!(pa1.ping(&ip_a2), "the remaining node is still reachable");

    let foreign = a1.ns.run_ok("ip", &["route", "show", "10.250.0.0/24"]);
    assert!(
        foreign.contains("via 10.99.0.2"),
        "the agent removed a route it did not make: {foreign:?}"
    );
    drop((pa1, pa2, pb1));
    a1.stop_agent();
    a2.stop_agent();
    b1.stop_agent();
    servers.shutdown_background();
}

#[test]
fn native_routes_connect_pods_across_nodes_and_clusters() {
    run(false);
}

#[test]
fn with_encryption_pod_traffic_is_wireguard_on_the_wire() {
    run(true);
}

/// Writes ConfigMap key `key` into `node`'s config dir as the kubelet does
/// (a new file renamed over the old one).
/// Node encryption as the kernel holds it in `node`'s namespace: the routes
/// of its table, and whether its rule is there.
fn node_encryption_state(node: &Node) -> (Vec<String>, bool) {
    let table = node_agent::routes::NODE_ENCRYPTION_TABLE.to_string();
    // A table that never held a route does not exist: no routes.
    let routes = node.ns.run("ip", &["-4", "route", "show", "table", &table]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let rules = node.ns.run_ok("ip", &["-4", "rule", "show"]);
    let rule = rules
        .lines()
        .any(|l| l.contains("not from all fwmark 0x4d57 lookup 19799"));
    (
        routes
            .lines()
            .map(|l| l.split(" proto ").next().unwrap_or(l).trim().to_string())
            .collect(),
        rule,
    )
}

/// A TCP connection from `a`'s node address to `b`'s carrying the marker,
/// echoed back.
fn tcp_between_nodes(a: &Node, b: &Node, port: u16) {
    use std::io::{Read, Write};
    let listener = mesh_bpf::netns::in_netns(&b.ns.path(), || {
        std::net::TcpListener::bind((b.ip, port)).expect("listen on b's node address")
    })
    .expect("enter b's namespace");
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut got = vec![0u8; MARKER.len()];
        c.read_exact(&mut got).expect("read");
        c.write_all(&got).expect("echo");
    });
    let target = (b.ip, port);
    let back = mesh_bpf::netns::in_netns(&a.ns.path(), move || {
        let mut c = std::net::TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
            .expect("connect to b's node address");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(MARKER).expect("send");
        let mut back = vec![0u8; MARKER.len()];
        c.read_exact(&mut back).expect("echo back");
        back
    })
    .expect("enter a's namespace");
    server.join().expect("server");
    assert_eq!(back, MARKER);
}

fn set_key(node: &Node, key: &str, value: &str) {
    let dir = node.config_dir.as_ref().expect("node has a config dir");
    let tmp = dir.join(format!(".{key}.new"));
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(&tmp, dir.join(key)).unwrap();
}

/// The datapath's packet counter for `reason`, read from the agent's
/// pinned maps.
fn drops(node: &Node, reason: mesh_bpf::DropReason) -> u64 {
    mesh_bpf::MetricsReader::open(node.bpf.path())
        .and_then(|r| r.read())
        .map(|m| m.packets(reason))
        .unwrap_or(0)
}

/// Strict mode and the runtime toggle, with the real agent, WireGuard device
/// and eBPF datapath. Two nodes of two clusters; encryption and strict mode
/// come from each agent's config dir.
/// - The peer for the remote node is removed (its record loses the key):
///   the agent falls back to a native route, and the datapath drops the
///   pod's packets to that node with reason `encryption_required` (counter,
///   flow event, `/metrics`); a capture on the underlay sees no plaintext.
///   The peer back: traffic resumes through the tunnel.
/// - A bad edit of the config dir is refused and changes nothing.
/// - encryption turned off in the config dir: device and peers go, routes
///   become native, the pods talk in clear (the capture can fail); turned
///   on again: same key, routes into the device, only WireGuard on the wire.
#[test]
fn strict_mode_drops_what_would_leave_unencrypted_and_encryption_toggles_at_runtime() {
    require_root();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bridge = Bridge::new();
    let mut a1 = Node::new(
        &bridge,
        "c1",
        1,
        Ipv4Addr::new(10, 98, 0, 1),
        "10.211.1.0/24",
    );
    let mut b1 = Node::new(
        &bridge,
        "c2",
        2,
        Ipv4Addr::new(10, 98, 0, 2),
        "10.212.1.0/24",
    );
    for n in [&mut a1, &mut b1] {
        let dir = n.dir.path().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        n.config_dir = Some(dir);
        set_key(n, "enable-encryption", "true");
        set_key(n, "encryption-strict-mode", "true");
    }
    let pki = Pki::new();
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let w1 = Writer::new(
        store.clone(),
        ClusterName::new("c1").unwrap(),
        Leadership::always(),
    );
    let w2 = Writer::new(
        store.clone(),
        ClusterName::new("c2").unwrap(),
        Leadership::always(),
    );
    let upsert = |w: &Writer, r: Record| control.block_on(w.upsert(&r)).expect("store upsert");
    upsert(&w1, a1.record(None));
    upsert(&w2, b1.record(None));
    for w in [&w1, &w2] {
        for kind in Kind::ALL {
            control.block_on(w.mark_synced(kind)).expect("mark synced");
        }
    }
    let api_c1 = start_export(&servers, &pki, store.clone(), "c1", 1, &a1, 0);
    let api_c2 = start_export(&servers, &pki, store.clone(), "c2", 2, &b1, 0);
    a1.start_agent(&pki, &api_c1, true);
    b1.start_agent(&pki, &api_c2, true);
    let key_of = |n: &Node| -> WireGuardKey {
        n.status()
            .encryption
            .and_then(|e| e.public_key)
            .expect("encryption on with a key")
            .parse()
            .unwrap()
    };
    let (key_a1, key_b1) = (key_of(&a1), key_of(&b1));
    upsert(&w1, a1.record(Some(key_a1)));
    upsert(&w2, b1.record(Some(key_b1)));
    let tunnel = |n: &Node, via: &Node| vec![format!("{} dev {}", n.pod_cidr, via.wg)];
    let native = |n: &Node| vec![format!("{} via {}", n.pod_cidr, n.ip)];
    eventually(
        "a1 routes b1's pods into the tunnel, strict",
        20,
        || a1.routes() == tunnel(&b1, &a1) && a1.status().routing.strict_mode,
        diag(&a1),
    );
    eventually(
        "b1 routes a1's pods into the tunnel",
        20,
        || b1.routes() == tunnel(&a1, &b1),
        diag(&b1),
    );
    assert_eq!(
        a1.status().routing.must_encrypt,
        vec![b1.pod_cidr.parse::<ipnet::Ipv4Net>().unwrap()]
    );
    let (pa1, _ip_a1) = a1.pod();
    let (_pb1, ip_b1) = b1.pod();
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "encrypted a1 → b1\n{}",
        a1.log()
    );

    // Strict mode: the peer goes, the route turns native, the datapath drops.
    upsert(&w2, b1.record(None));
    eventually(
        "peer for b1 removed, native route",
        20,
        || a1.routes() == native(&b1) && a1.status().encryption.is_some_and(|e| e.peers.is_empty()),
        diag(&a1),
    );
    assert_eq!(
        a1.status().routing.unencrypted,
        vec![b1.pod_cidr.parse::<ipnet::Ipv4Net>().unwrap()],
        "the node without a peer is reported"
    );
    assert!(
        a1.metrics()
            .lines()
            .any(|l| l == "meshwork_node_routes_unencrypted 1"),
        "gauge of routes bypassing WireGuard"
    );
    let mut flows = mesh_bpf::FlowReader::open(a1.bpf.path()).expect("flow ring");
    flows.drain();
    let before = drops(&a1, mesh_bpf::DropReason::EncryptionRequired);
    let cap = Capture::start(bridge.ns(), "br0");
    let ok = pa1
        .ns
        .run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "1", "-p", MARKER_HEX, &ip_b1],
        )
        .status
        .success();
    // Node-to-node traffic is not pod traffic: it crosses in clear, and
    // shows the capture works.
    a1.ns
        .run_ok("ping", &["-c", "1", "-W", "2", &b1.ip.to_string()]);
    let cap = cap.stop();
    let pcap = cap.bytes().to_vec();
    assert!(!ok, "strict mode let traffic to b1's pod leave in clear");
    assert!(
        cap.count(&format!("icmp and host {}", b1.ip)) >= 1,
        "the capture missed the node-to-node control ping: it proves nothing"
    );
    assert!(!contains(&pcap, MARKER), "the marker reached the underlay");
    assert_eq!(
        cap.count(&format!("host {ip_b1}")),
        0,
        "plaintext packets to b1's pod on the underlay:\n{}",
        cap.text(&format!("host {ip_b1}"))
    );
    let after = drops(&a1, mesh_bpf::DropReason::EncryptionRequired);
    assert!(after >= before + 3, "drops counted: {before} → {after}");
    let (ev, seen) = flows.wait_for(Duration::from_secs(2), |e| {
        e.reason == mesh_bpf::DropReason::EncryptionRequired
    });
    let ev = ev.unwrap_or_else(|| panic!("no encryption_required flow event; saw {seen:?}"));
    assert_eq!(ev.daddr.to_string(), ip_b1);
    assert_eq!(ev.verdict, mesh_bpf::FlowVerdict::Dropped);
    let m = a1.metrics();
    assert!(
        m.lines().any(|l| l
            .strip_prefix("meshwork_datapath_packets_total{reason=\"encryption_required\"} ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 3)),
        "/metrics lacks the encryption_required drops:\n{m}"
    );
    // The peer back: traffic resumes through the tunnel.
    upsert(&w2, b1.record(Some(key_b1)));
    eventually(
        "route back into the tunnel",
        20,
        || a1.routes() == tunnel(&b1, &a1),
        diag(&a1),
    );
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "traffic resumes with the peer\n{}",
        a1.log()
    );
    assert!(a1.status().routing.unencrypted.is_empty());

    // Node encryption at runtime: TCP between the nodes' own addresses goes
    // through the tunnel (only WireGuard on the underlay); off, it is clear.
    for n in [&a1, &b1] {
        set_key(n, "node-encryption", "true");
    }
    for (n, other) in [(&a1, &b1), (&b1, &a1)] {
        eventually(
            &format!("{} routes {}'s address into the tunnel", n.name, other.name),
            20,
            || node_encryption_state(n) == (vec![format!("{} dev {}", other.ip, n.wg)], true),
            diag(n),
        );
    }
    let node_tcp = |what: &str| {
        let cap = Capture::start(bridge.ns(), "br0");
        tcp_between_nodes(&a1, &b1, 7801);
        // Pod traffic keeps going too.
        assert!(pa1.ping_eventually(&ip_b1, 15), "{what}: pod traffic");
        let cap = cap.stop();
        (
            cap.count(&format!("tcp and host {} and host {}", a1.ip, b1.ip)),
            cap.count(&format!("udp port {WG_PORT}")),
            contains(cap.bytes(), MARKER),
        )
    };
    let (tcp, wg, marker) = node_tcp("node encryption on");
    assert_eq!(
        tcp, 0,
        "node encryption on: TCP between the node addresses in clear"
    );
    assert!(!marker, "node encryption on: the marker crossed in clear");
    assert!(
        wg > 0,
        "node encryption on: the capture saw no WireGuard at all"
    );
    for n in [&a1, &b1] {
        set_key(n, "node-encryption", "false");
    }
    for n in [&a1, &b1] {
        eventually(
            &format!("{}'s node-encryption table and rule removed", n.name),
            20,
            || node_encryption_state(n) == (vec![], false),
            diag(n),
        );
    }
    let (tcp, _, marker) = node_tcp("node encryption off");
    assert!(
        tcp > 0 && marker,
        "node encryption off: the node TCP flow is in clear (the capture works)"
    );

    // A bad edit is refused: nothing changes.
    set_key(&a1, "enable-encryption", "sometimes");
    std::thread::sleep(Duration::from_secs(5));
    eventually(
        "bad edit reported",
        10,
        || a1.log().contains("does not parse"),
        diag(&a1),
    );
    assert!(
        a1.status().encryption.is_some(),
        "a bad edit tore encryption down"
    );
    assert_eq!(a1.routes(), tunnel(&b1, &a1));

    // Encryption off at runtime (strict first: it needs encryption).
    for n in [&a1, &b1] {
        set_key(n, "encryption-strict-mode", "false");
        set_key(n, "enable-encryption", "false");
    }
    for (n, other) in [(&a1, &b1), (&b1, &a1)] {
        eventually(
            &format!("{} converged to encryption off", n.name),
            20,
            || {
                let st = n.status();
                st.encryption.is_none() && !st.routing.strict_mode && n.routes() == native(other)
            },
            diag(n),
        );
        assert!(
            !n.ns.run("ip", &["link", "show", &n.wg]).status.success(),
            "the WireGuard device of {} is still there",
            n.name
        );
    }
    let cap = Capture::start(bridge.ns(), "br0");
    let ok = pa1.ping_eventually(&ip_b1, 15)
        && pa1
            .ns
            .run(
                "ping",
                &["-c", "2", "-i", "0.2", "-W", "1", "-p", MARKER_HEX, &ip_b1],
            )
            .status
            .success();
    let cap = cap.stop();
    let pcap = cap.bytes().to_vec();
    assert!(ok, "native routing after encryption off\n{}", a1.log());
    assert!(
        contains(&pcap, MARKER),
        "encryption off: the marker crosses in clear (the wire check can fail); pcap {} bytes; saw:\n{}\nroutes {:?}",
        pcap.len(),
        cap.text(""),
        a1.routes()
    );

    // And on again: same keys, routes into the device, only WireGuard.
    for n in [&a1, &b1] {
        set_key(n, "enable-encryption", "true");
        set_key(n, "encryption-strict-mode", "true");
    }
    for (n, other, key) in [(&a1, &b1, key_a1), (&b1, &a1, key_b1)] {
        eventually(
            &format!("{} converged to encryption on", n.name),
            20,
            || {
                let st = n.status();
                st.encryption.is_some_and(|e| e.peers.len() == 1)
                    && st.routing.strict_mode
                    && n.routes() == tunnel(other, n)
            },
            diag(n),
        );
        assert_eq!(key_of(n), key, "the key survives the toggle");
    }
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "encrypted again\n{}",
        a1.log()
    );
    let cap = Capture::start(bridge.ns(), "br0");
    let ok = pa1
        .ns
        .run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "1", "-p", MARKER_HEX, &ip_b1],
        )
        .status
        .success();
    let cap = cap.stop();
    let pcap = cap.bytes().to_vec();
    assert!(ok, "marked ping through the tunnel");
    assert!(!contains(&pcap, MARKER), "the marker crossed in clear");
    assert!(cap.count(&format!("udp port {WG_PORT}")) >= 6);
    drop(pa1);
    a1.stop_agent();
    b1.stop_agent();
    servers.shutdown_background();
}

/// Strict mode never leaks, with the real agent, device and datapath. c1's
/// mesh-apiserver is configured to import c2 (pod CIDRs 10.212.0.0/16), and
/// a1's node has a default route toward b1 (an underlay router that would
/// carry a leak to c2's pods).
/// - c2's node records withdrawn: the route into the tunnel goes, but c2's
///   declared CIDR stays in the strict-mode set: 0 plaintext packets with
///   b1's pod address on the underlay, drops counted `encryption_required`.
/// - The WireGuard device deleted at runtime: 0 plaintext.
/// - The agent restarted while its device cannot start (the WireGuard port
///   is taken): strict mode holds closed, 0 plaintext, the status says so;
///   the port freed, the device starts and traffic flows encrypted.
#[test]
fn strict_mode_never_leaks_without_nodes_without_a_device() {
    require_root();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bridge = Bridge::new();
    let mut a1 = Node::new(
        &bridge,
        "c1",
        1,
        Ipv4Addr::new(10, 98, 0, 1),
        "10.211.1.0/24",
    );
    let mut b1 = Node::new(
        &bridge,
        "c2",
        2,
        Ipv4Addr::new(10, 98, 0, 2),
        "10.212.1.0/24",
    );
    for n in [&mut a1, &mut b1] {
        let dir = n.dir.path().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        n.config_dir = Some(dir);
        set_key(n, "enable-encryption", "true");
        set_key(n, "encryption-strict-mode", "true");
    }
    let pki = Pki::new();
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let w1 = Writer::new(
        store.clone(),
        ClusterName::new("c1").unwrap(),
        Leadership::always(),
    );
    let w2 = Writer::new(
        store.clone(),
        ClusterName::new("c2").unwrap(),
        Leadership::always(),
    );
    let upsert = |w: &Writer, r: Record| control.block_on(w.upsert(&r)).expect("store upsert");
    upsert(&w1, a1.record(None));
    upsert(&w2, b1.record(None));
    for w in [&w1, &w2] {
        for kind in Kind::ALL {
            control.block_on(w.mark_synced(kind)).expect("mark synced");
        }
    }
    let c2 = ConfiguredRemote {
        name: "c2".into(),
        id: 2,
        pod_cidrs: vec!["10.212.0.0/16".parse().unwrap()],
    };
    let api_c1 = start_export_with(&servers, &pki, store.clone(), "c1", 1, &a1, 0, vec![c2]);
    let api_c2 = start_export(&servers, &pki, store.clone(), "c2", 2, &b1, 0);
    a1.start_agent(&pki, &api_c1, true);
    b1.start_agent(&pki, &api_c2, true);
    let key_of = |n: &Node| -> WireGuardKey {
        n.status()
            .encryption
            .and_then(|e| e.public_key)
            .expect("encryption on with a key")
            .parse()
            .unwrap()
    };
    let (key_a1, key_b1) = (key_of(&a1), key_of(&b1));
    upsert(&w1, a1.record(Some(key_a1)));
    upsert(&w2, b1.record(Some(key_b1)));
    let tunnel = |n: &Node, via: &Node| vec![format!("{} dev {}", n.pod_cidr, via.wg)];
    eventually(
        "a1 routes b1's pods into the tunnel, strict, c2's CIDR listed",
        20,
        || {
            let st = a1.status();
            a1.routes() == tunnel(&b1, &a1)
                && st.routing.strict_mode
                && st.routing.must_encrypt
                    == vec![
                        "10.212.0.0/16".parse::<ipnet::Ipv4Net>().unwrap(),
                        b1.pod_cidr.parse().unwrap(),
                    ]
        },
        diag(&a1),
    );
    let (pa1, _) = a1.pod();
    let (_pb1, ip_b1) = b1.pod();
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "encrypted a1 → b1\n{}",
        a1.log()
    );
    // The underlay router a leak would take.
    a1.ns.run_ok(
        "ip",
        &["route", "add", "default", "via", &b1.ip.to_string()],
    );
    // Marked pings from a1's pod to b1's pod while the underlay is
    // captured: none may get through, none may cross in clear.
    let no_plaintext = |a1: &Node, what: &str| {
        let before = drops(a1, mesh_bpf::DropReason::EncryptionRequired);
        let cap = Capture::start(bridge.ns(), "br0");
        let ok = pa1
            .ns
            .run(
                "ping",
                &["-c", "3", "-i", "0.2", "-W", "1", "-p", MARKER_HEX, &ip_b1],
            )
            .status
            .success();
        a1.ns
            .run_ok("ping", &["-c", "1", "-W", "2", &b1.ip.to_string()]);
        let cap = cap.stop();
        assert!(
            cap.count(&format!("icmp and host {}", b1.ip)) >= 1,
            "{what}: the capture missed the node-to-node control ping"
        );
        assert!(!ok, "{what}: a1's pod reached b1's pod");
        assert!(
            !contains(cap.bytes(), MARKER),
            "{what}: the marker reached the underlay"
        );
        assert_eq!(
            cap.count(&format!("host {ip_b1}")),
            0,
            "{what}: plaintext to b1's pod on the underlay:\n{}",
            cap.text(&format!("host {ip_b1}"))
        );
        let after = drops(a1, mesh_bpf::DropReason::EncryptionRequired);
        assert!(
            after >= before + 3,
            "{what}: drops counted {before} → {after}"
        );
    };

    // 1. c2's node records withdrawn.
    control
        .block_on(w2.delete(Kind::Node, &b1.record(None).key()))
        .unwrap();
    eventually(
        "b1's route gone, c2's CIDR still listed",
        20,
        || {
            a1.routes().is_empty()
                && a1.status().routing.must_encrypt
                    == vec!["10.212.0.0/16".parse::<ipnet::Ipv4Net>().unwrap()]
        },
        diag(&a1),
    );
    no_plaintext(&a1, "c2's nodes withdrawn");
    upsert(&w2, b1.record(Some(key_b1)));
    eventually(
        "back into the tunnel",
        20,
        || a1.routes() == tunnel(&b1, &a1),
        diag(&a1),
    );
    assert!(pa1.ping_eventually(&ip_b1, 15), "encrypted again");

    // 2. The device deleted under the agent: its process ends, the agent
    // starts another; from the deletion until traffic is encrypted again,
    // marked pings cross nothing in clear.
    let device_pid = |a1: &Node| a1.status().encryption.and_then(|e| e.device_pid);
    let pid_before = device_pid(&a1).expect("the device process's pid in the status");
    let cap = Capture::start(bridge.ns(), "br0");
    a1.ns.run_ok("ip", &["link", "del", &a1.wg]);
    eventually(
        "a new device process carrying a1's traffic",
        30,
        || {
            let _ = pa1.ns.run(
                "ping",
                &["-c", "2", "-i", "0.2", "-W", "1", "-p", MARKER_HEX, &ip_b1],
            );
            device_pid(&a1).is_some_and(|p| p != pid_before)
                && a1.status().encryption.is_some_and(|e| e.peers.len() == 1)
                && a1.routes() == tunnel(&b1, &a1)
        },
        diag(&a1),
    );
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "encrypted after the new device"
    );
    let cap = cap.stop();
    assert!(
        !contains(cap.bytes(), MARKER),
        "device deleted at runtime: the marker reached the underlay"
    );
    assert_eq!(
        cap.count(&format!("host {ip_b1}")),
        0,
        "device deleted at runtime: plaintext to b1's pod on the underlay:\n{}",
        cap.text(&format!("host {ip_b1}"))
    );

    // 3. The agent restarted while its device cannot start: the device
    // outlives agents, so it is killed too, and its port taken.
    let pid = device_pid(&a1).expect("device pid");
    a1.stop_agent();
    mesh_testbed::run_ok("kill", &["-9", &pid.to_string()]);
    mesh_testbed::Wait::new("a1's device process to be gone")
        .timeout(Duration::from_secs(5))
        .until(|| !std::path::Path::new(&format!("/proc/{pid}/stat")).exists());
    let port_taken = mesh_bpf::netns::in_netns(&a1.ns.path(), || {
        std::net::UdpSocket::bind(("0.0.0.0", WG_PORT)).expect("take the WireGuard port")
    })
    .expect("enter a1's namespace");
    a1.start_agent(&pki, &api_c1, true);
    eventually(
        "a1's agent holds strict mode closed without a device",
        20,
        || {
            let st = a1.status();
            st.encryption.is_none() && st.routing.strict_mode && st.routing.strict_closed
        },
        diag(&a1),
    );
    no_plaintext(&a1, "agent restarted, device cannot start");
    assert!(
        a1.log().contains("no WireGuard device is up"),
        "the closed strict mode is not logged:\n{}",
        a1.log()
    );
    drop(port_taken);
    eventually(
        "the device starts once the port is free, traffic encrypted",
        30,
        || {
            let st = a1.status();
            st.encryption.is_some_and(|e| e.peers.len() == 1)
                && !st.routing.strict_closed
                && a1.routes() == tunnel(&b1, &a1)
        },
        diag(&a1),
    );
    assert!(
        pa1.ping_eventually(&ip_b1, 15),
        "encrypted after the device came up\n{}",
        a1.log()
    );
    drop(pa1);
    a1.stop_agent();
    b1.stop_agent();
    servers.shutdown_background();
}
