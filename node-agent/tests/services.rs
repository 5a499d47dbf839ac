//! Kube-proxy replacement end to end: the real `node-agent` (eBPF datapath)
//! in a node namespace, pods made by the real `mesh-cni`, and a real test
//! Kubernetes API server listening on the node namespace's loopback. A
//! Service with two backend pods is served at its ClusterIP through the TC
//! path (client outside the agent's cgroup) and the socket LB (client inside
//! it); deleting a backend pod removes it from the service map; restarting
//! the agent under a continuous TCP stream keeps the stream and leaves the
//! maps as they were.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node as KNode, Pod as KPod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mesh_agent_api::AgentClient;
use mesh_test_apiserver::{Config, TestApiServer};
use mesh_testbed::{BpfDir, Cgroup, NetNs, Wait, require_root};
use serde_json::{Value, json};

mod common;

use common::{CniCall, Pod as TestPod, pod_ip};
const POD_CIDR: &str = "10.71.0.0/24";

/// The node: namespace, test API server on its loopback, the agent.
struct Node {
    ns: NetNs,
    dir: tempfile::TempDir,
    bpf: BpfDir,
    cgroup: Cgroup,
    agent: Option<Child>,
    rt: Option<tokio::runtime::Runtime>,
    api: Option<TestApiServer>,
    client: Option<kube::Client>,
}

impl Node {
    fn new() -> Node {
        require_root();
        let ns = NetNs::new("nd");
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        let path = ns.path();
        // The server's listener and the runtime's worker threads are created
        // on a thread inside the node namespace: sockets (and threads made
        // by those threads) live there, so the agent reaches the server on
        // its own loopback and nothing listens in the host namespace.
        let (rt, api) = mesh_bpf::netns::in_netns(&path, || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let api = rt
                .block_on(TestApiServer::start(Config::local("svc-test")))
                .expect("test API server");
            (rt, api)
        })
        .expect("enter node namespace");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
        std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig()).expect("kubeconfig");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).expect("kubeconfig");
        let client = run_in(&rt, async move {
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("client config");
            kube::Client::try_from(config).expect("client")
        });
        Node {
            ns,
            dir,
            bpf: BpfDir::new(),
            cgroup: Cgroup::new(),
            agent: None,
            rt: Some(rt),
            api: Some(api),
            client: Some(client),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn log_text(&self) -> String {
        common::log_text(&self.log())
    }

    fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let mut cmd = common::agent_command(&self.ns);
        cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .args([
                "--cluster-name=c1",
                "--cluster-id=1",
                &format!("--node-name={}", self.ns.name()),
                &format!("--pod-cidr={POD_CIDR}"),
                &format!("--state-dir={}", self.dir.path().join("state").display()),
                &format!("--agent-socket={}", self.socket().display()),
                &format!("--bpf-root={}", self.bpf.path().display()),
                &format!("--cgroup-root={}", self.cgroup.path().display()),
                &format!("--wireguard-interface={}", self.ns.name()),
                "--metrics-address=127.0.0.1:0",
                "--log-format=json",
            ]);
        let (socket, log) = (self.socket(), self.log());
        let agent = self.agent.insert(common::spawn_agent(&mut cmd, &log));
        let status = common::wait_answering(
            agent,
            &socket,
            &log,
            Duration::from_secs(20),
            Duration::from_millis(50),
        );
        assert_eq!(status.datapath, "ebpf");
    }

    fn stop_agent(&mut self) {
        let status = common::terminate(self.agent.take().expect("agent running"));
        assert!(
            status.success(),
            "node-agent exit {status}: {}",
            self.log_text()
        );
    }

    fn add(&self, pod: &TestPod) -> String {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "mesh-cni",
            "agentSocket": self.socket(), "stateDir": self.dir.path().join("state"),
            "mtu": 1500, "podCIDR": POD_CIDR,
        });
        let out = common::run_cni(
            &self.ns,
            &CniCall {
                command: "ADD",
                container: &pod.id,
                netns: Some(&pod.path()),
                pod_name: None,
                stdin: conf.to_string().as_bytes(),
            },
        );
        assert!(
            out.status.success(),
            "ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("ADD result");
        pod_ip(&v)
    }

    fn kube<T: Send + 'static>(
        &self,
        f: impl FnOnce(kube::Client) -> std::pin::Pin<Box<dyn Future<Output = T> + Send>>,
    ) -> T {
        let client = self.client.clone().expect("client");
        run_in(self.rt.as_ref().expect("runtime"), f(client))
    }

    /// (services with backend addresses, ipcache, endpoints, policy) from the pinned maps.
    fn maps(&self) -> Value {
        let d = mesh_bpf::dump(self.bpf.path()).expect("dump maps");
        json!({ "services": d.services, "backends": d.backends, "ipcache": d.ipcache,
                "endpoints": d.endpoints, "policy": d.policy })
    }

    /// Backend addresses of the frontend `vip:port` in the service map.
    fn backends_of(&self, vip: &str, port: u16) -> BTreeSet<String> {
        let lb = mesh_bpf::LoadBalancer::open(self.bpf.path()).expect("open LB");
        lb.dump()
            .expect("dump LB")
            .into_iter()
            .filter(|v| v.frontend.addr.to_string() == vip && v.frontend.port == port)
            .flat_map(|v| v.backends)
            .map(|b| format!("{}:{}", b.addr, b.port))
            .collect()
    }

    fn wait_backends(&self, vip: &str, port: u16, want: &BTreeSet<String>) {
        Wait::new(format!("service {vip}:{port} with backends {want:?}"))
            .timeout(Duration::from_secs(20))
            .interval(Duration::from_millis(100))
            .until_ok(|| {
                let got = self.backends_of(vip, port);
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("backends {got:?}\nagent log: {}", self.log_text()))
                }
            });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.client.take();
        self.api.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on a worker thread of `rt` (inside the node namespace).
fn run_in<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(rt.spawn(fut)).expect("task")
}

/// What these tests do with a pod: serve a banner, ask a service.
impl TestPod {
    /// An echo server on 8080 that first says `name`.
    fn serve(&self, name: &str) {
        self.ns.spawn(
            "socat",
            &[
                "TCP-LISTEN:8080,reuseaddr,fork",
                &format!("SYSTEM:echo {name}; exec cat"),
            ],
        );
    }

    /// One request to `ip:port`; the banner of the backend that answered.
    /// With `cgroup`, the client joins it first (socket LB).
    fn request(&self, ip: &str, port: u16, cgroup: Option<&Path>) -> String {
        let join = cgroup
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
            .unwrap_or_default();
        // nsenter (not `ip netns exec`, which remounts /sys) so the cgroup
        // directory is visible.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args([
                "bash",
                "-c",
                &format!("{join}echo hi | socat -t2 - TCP:{ip}:{port},connect-timeout=2"),
            ])
            .output()
            .expect("socat");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// Banners seen over `n` requests.
    fn answers(&self, ip: &str, port: u16, cgroup: Option<&Path>, n: usize) -> BTreeSet<String> {
        (0..n).map(|_| self.request(ip, port, cgroup)).collect()
    }
}

fn pod_object(name: &str, node: &str) -> KPod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "echo", "image": "echo",
                 "ports": [{"containerPort": 8080}]}]}
    }))
    .expect("pod")
}

#[test]
fn cluster_ip_is_served_by_ready_pods_and_survives_an_agent_restart() {
    let mut node = Node::new();
    node.start_agent();
    let (b1, b2, client) = (
        TestPod::new("pod"),
        TestPod::new("pod"),
        TestPod::new("pod"),
    );
    let ip1 = node.add(&b1);
    let ip2 = node.add(&b2);
    node.add(&client);
    b1.serve("b1");
    b2.serve("b2");

    let vip = create_web(&node, &ip1, &ip2, None);
    let both: BTreeSet<String> = [format!("{ip1}:8080"), format!("{ip2}:8080")].into();
    node.wait_backends(&vip, 80, &both);
    let log = node.log_text();
    assert!(
        log.contains("default/sctp") && log.contains("TCP and UDP"),
        "the SCTP service is named in a warning: {log}"
    );

    let addr = AgentClient::new(node.socket())
        .status()
        .expect("status")
        .metrics_address
        .expect("metrics address");
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
        addr.ip(),
        addr.port()
    );
    let metrics = node.ns.run_ok("bash", &["-c", &script]);
    assert!(
        metrics.contains("meshwork_errors_total{reason=\"invalid-service\"} 1"),
        "the skipped Service is counted once: {metrics}"
    );

    // TC path: the client is not in the agent's cgroup.
    let want: BTreeSet<String> = ["b1".to_string(), "b2".to_string()].into();
    let seen = client.answers(&vip, 80, None, 24);
    assert_eq!(seen, want, "via TC both backends answer");
    // Socket LB: the client joins the agent's cgroup first.
    let seen = client.answers(&vip, 80, Some(node.cgroup.path()), 24);
    assert_eq!(seen, want, "via the socket LB both backends answer");

    // Restart under a continuous TCP stream (TC path: CT entries must hold).
    let before = node.maps();
    let mut stream = client
        .ns
        .command("socat")
        .args(["-", &format!("TCP:{vip}:80,connect-timeout=2")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("stream client");
    let mut input = stream.stdin.take().expect("stdin");
    let (tx, rx) = mpsc::channel();
    let mut output = BufReader::new(stream.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        let mut line = String::new();
        while output.read_line(&mut line).unwrap_or(0) > 0 {
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stream banner");
    assert!(want.contains(&banner), "banner {banner}");
    let mut seq = 0;
    let mut ping = |rx: &mpsc::Receiver<String>| {
        seq += 1;
        writeln!(input, "ping{seq}").expect("stream write");
        let got = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(
            got.as_deref(),
            Ok(format!("ping{seq}").as_str()),
            "stream echo {seq}"
        );
    };
    ping(&rx);
    node.stop_agent();
    ping(&rx);
    // New connections keep being served while no agent runs (pinned
    // programs and maps), through both paths.
    assert!(want.contains(&client.request(&vip, 80, None)));
    assert!(want.contains(&client.request(&vip, 80, Some(node.cgroup.path()))));
    node.start_agent();
    for _ in 0..10 {
        ping(&rx);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the restarted feed sync and reconcile, then compare.
    std::thread::sleep(Duration::from_secs(2));
    ping(&rx);
    assert_eq!(
        node.maps(),
        before,
        "maps after the restart equal the maps before"
    );
    assert!(
        node.log_text().contains("Kubernetes service feed synced"),
        "the restarted agent synced its feed"
    );
    // The restarted agent's first reconcile wrote nothing: the maps already
    // held its endpoints, their ipcache entries and the services.
    let restored: Vec<Value> = node
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "endpoints restored from the state dir and reconciled"
        })
        .collect();
    assert_eq!(restored.len(), 2, "two starts logged");
    let second = &restored[1]["fields"];
    assert_eq!(
        (
            &second["endpoints"],
            &second["upserted"],
            &second["removed"],
            &second["failed"]
        ),
        (&json!(3), &json!(0), &json!(0), &json!(0)),
        "restart reconciled in place with zero writes: {second}"
    );
    drop(stream.kill());
    let _ = stream.wait();

    // Deleting a backend pod removes it from the service.
    node.kube(|c| {
        Box::pin(async move {
            let pods: Api<KPod> = Api::namespaced(c, "default");
            pods.delete("b2", &DeleteParams::default())
                .await
                .expect("delete pod");
        })
    });
    let only: BTreeSet<String> = [format!("{ip1}:8080")].into();
    node.wait_backends(&vip, 80, &only);
    let seen = client.answers(&vip, 80, None, 12);
    assert_eq!(
        seen,
        ["b1".to_string()].into(),
        "new connections avoid the removed backend"
    );
}

/// Creates Service `web` (port 80 → 8080; type NodePort when `node_port`),
/// a Service with an unsupported protocol, and the Pods b1/b2 at `ip1`/`ip2`
/// reported Ready as the kubelet would. Returns the ClusterIP.
fn create_web(node: &Node, ip1: &str, ip2: &str, node_port: Option<u16>) -> String {
    let nodename = node.ns.name().to_string();
    let (i1, i2) = (ip1.to_string(), ip2.to_string());
    node.kube(move |c| {
        Box::pin(async move {
            let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
            let mut port = json!({"name": "http", "port": 80, "targetPort": 8080});
            let mut spec = json!({"selector": {"app": "web"}});
            if let Some(np) = node_port {
                port["nodePort"] = json!(np);
                spec["type"] = json!("NodePort");
            }
            spec["ports"] = json!([port]);
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "default"}, "spec": spec
            }))
            .expect("service");
            let svc = svcs
                .create(&PostParams::default(), &svc)
                .await
                .expect("create service");
            // Broken services must not disturb the others.
            let bad: Service = serde_json::from_value(json!({
                "metadata": {"name": "sctp", "namespace": "default"},
                "spec": {"ports": [{"port": 9, "protocol": "SCTP"}]}
            }))
            .expect("service");
            svcs.create(&PostParams::default(), &bad)
                .await
                .expect("create sctp service");
            let pods: Api<KPod> = Api::namespaced(c, "default");
            for (name, ip) in [("b1", i1), ("b2", i2)] {
                pods.create(&PostParams::default(), &pod_object(name, &nodename))
                    .await
                    .expect("create pod");
                pods.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip,
                        "podIPs": [{"ip": ip}],
                        "conditions": [{"type": "Ready", "status": "True"}]}})),
                )
                .await
                .expect("pod status");
            }
            svc.spec.and_then(|s| s.cluster_ip).expect("clusterIP")
        })
    })
}

#[test]
fn node_port_on_the_node_address_reaches_the_backends_from_another_node() {
    let mut node = Node::new();
    // Another "node": a namespace on a veth to ours, no default route.
    let peer = NetNs::new("peer");
    mesh_testbed::veth(&node.ns, "eth0", &peer, "eth0");
    node.ns.addr("eth0", "192.168.77.1/24");
    peer.addr("eth0", "192.168.77.2/24");
    // This node's Node object carries its address (the kubelet's job).
    let name = node.ns.name().to_string();
    node.kube(move |c| {
        Box::pin(async move {
            let nodes: Api<KNode> = Api::all(c);
            let n: KNode =
                serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
            nodes
                .create(&PostParams::default(), &n)
                .await
                .expect("create node");
            nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"addresses": [
                        {"type": "InternalIP", "address": "192.168.77.1"}]}})),
                )
                .await
                .expect("node status");
        })
    });
    node.start_agent();
    let (b1, b2, client) = (
        TestPod::new("pod"),
        TestPod::new("pod"),
        TestPod::new("pod"),
    );
    let ip1 = node.add(&b1);
    let ip2 = node.add(&b2);
    node.add(&client);
    b1.serve("b1");
    b2.serve("b2");
    let vip = create_web(&node, &ip1, &ip2, Some(30080));
    let both: BTreeSet<String> = [format!("{ip1}:8080"), format!("{ip2}:8080")].into();
    node.wait_backends(&vip, 80, &both);
    node.wait_backends("192.168.77.1", 30080, &both);

    let want: BTreeSet<String> = ["b1".to_string(), "b2".to_string()].into();
    let seen: BTreeSet<String> = (0..24)
        .map(|_| {
            let out = peer
                .command("bash")
                .args([
                    "-c",
                    "echo hi | socat -t2 - TCP:192.168.77.1:30080,connect-timeout=2",
                ])
                .output()
                .expect("socat");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        seen,
        want,
        "NodePort from the other node reaches both backends\n{}",
        node.log_text()
    );
    // The ClusterIP keeps working alongside.
    assert_eq!(client.answers(&vip, 80, None, 12), want);

    // A restarted agent recognises its NodePort frontends: maps unchanged.
    let before = node.maps();
    node.stop_agent();
    node.start_agent();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node.maps(),
        before,
        "maps after the restart equal the maps before"
    );
    let services = AgentClient::new(node.socket())
        .request("GET", "/v1/services", None)
        .expect("services");
    let services: Value = serde_json::from_slice(&services.1).expect("json");
    assert!(
        services
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["frontend"]["kind"] == "node-port" && s["frontend"]["port"] == 30080),
        "{services}"
    );
}
