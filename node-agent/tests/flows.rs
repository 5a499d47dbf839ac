//! Flow observation end to end: the real `node-agent` (eBPF datapath) in a
//! node namespace, two pods wired by the real `mesh-cni`, real TCP between
//! them and to a service without backends. What the TC programs saw comes
//! back from `GET /v1/flows` named (pod, cluster, node) with its verdict and
//! drop reason, by filter and as a follow stream; `/v1/policies` and
//! `/v1/encryption` describe the same endpoints and the device.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mesh_testbed::{BpfDir, Cgroup, NetNs, require_root, unique_name};
use node_agent::client::AgentClient;
use node_agent::datapath::{Frontend, FrontendKind, ServiceEntry};
use node_agent::flows::{FlowFilter, FlowRecord, Verdict};
use serde_json::{Value, json};

const CNI: &str = env!("CARGO_BIN_EXE_mesh-cni");
const AGENT: &str = env!("CARGO_BIN_EXE_node-agent");
const POD_CIDR: &str = "10.73.0.0/24";
/// A ClusterIP with no backends (inside the pods' namespaces only).
const EMPTY_VIP: &str = "10.96.73.1";

struct Node {
    ns: NetNs,
    dir: tempfile::TempDir,
    bpf: BpfDir,
    cgroup: Cgroup,
    agent: Option<Child>,
}

impl Node {
    fn start() -> Node {
        require_root();
        let mut node = Node {
            ns: NetNs::new("nd"),
            dir: tempfile::tempdir().expect("tempdir"),
            bpf: BpfDir::new(),
            cgroup: Cgroup::new(),
            agent: None,
        };
        std::fs::create_dir_all(node.dir.path().join("state")).expect("state dir");
        let log = std::fs::File::create(node.log()).expect("agent log");
        // nsenter keeps the host's bpffs and cgroup mounts (ip netns exec
        // would remount /sys).
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", node.ns.name()))
            .arg("--")
            .arg(AGENT)
            .args([
                "--cluster-name=c1",
                "--cluster-id=1",
                &format!("--node-name={}", node.ns.name()),
                &format!("--pod-cidr={POD_CIDR}"),
                &format!("--state-dir={}", node.dir.path().join("state").display()),
                &format!("--agent-socket={}", node.socket().display()),
                &format!("--bpf-root={}", node.bpf.path().display()),
                &format!("--cgroup-root={}", node.cgroup.path().display()),
                &format!("--wireguard-interface={}", node.ns.name()),
                "--metrics-address=127.0.0.1:0",
            ])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node-agent");
        node.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while node.client().status().is_err() {
            assert!(
                Instant::now() < deadline,
                "node-agent did not answer within 15 s: {}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.socket())
    }

    /// Wires `pod` with mesh-cni (pod `default/<container id>`); returns its IP.
    fn add(&self, pod: &Pod) -> String {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meshwork", "type": "mesh-cni",
            "agentSocket": self.socket(), "stateDir": self.dir.path().join("state"),
            "mtu": 1500, "podCIDR": POD_CIDR,
        });
        let mut child = self
            .ns
            .command(CNI)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &pod.id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", pod.path())
            .env("CNI_PATH", Path::new(CNI).parent().expect("bin dir"))
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
                    pod.id
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mesh-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write conf");
        let out = child.wait_with_output().expect("mesh-cni");
        assert!(
            out.status.success(),
            "ADD failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            self.log_text()
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
        v["ips"][0]["address"]
            .as_str()
            .expect("address")
            .split('/')
            .next()
            .expect("ip")
            .to_string()
    }

    /// Polls `/v1/flows` with `filter` until `pred` holds for one flow.
    fn wait_flow(&self, filter: &FlowFilter, pred: impl Fn(&FlowRecord) -> bool) -> FlowRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let flows = self.client().flows(filter).expect("GET /v1/flows");
            if let Some(f) = flows.iter().find(|f| pred(f)) {
                return f.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching flow within 10 s for {filter:?}; flows: {flows:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Pod {
    ns: NetNs,
    id: String,
}

impl Pod {
    fn new() -> Pod {
        Pod {
            ns: NetNs::new("pod"),
            id: format!("ctr{}", unique_name("")),
        }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(self.ns.name())
    }

    /// One TCP connection attempt to `ip:port` carrying `text`; true when
    /// the echo came back.
    fn tcp(&self, ip: &str, port: u16, text: &str) -> bool {
        let out = self
            .ns
            .command("bash")
            .args([
                "-c",
                &format!("echo {text} | socat -t1 - TCP:{ip}:{port},connect-timeout=1"),
            ])
            .output()
            .expect("socat");
        String::from_utf8_lossy(&out.stdout).trim() == text
    }
}

#[test]
fn flows_from_real_packets_are_served_named_filtered_and_followed() {
    let node = Node::start();
    let (client, server) = (Pod::new(), Pod::new());
    let client_ip = node.add(&client);
    let server_ip = node.add(&server);
    server
        .ns
        .spawn("socat", &["TCP-LISTEN:8080,reuseaddr,fork", "EXEC:cat"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.tcp(&server_ip, 8080, "hello") {
        assert!(Instant::now() < deadline, "client never reached the server");
        std::thread::sleep(Duration::from_millis(100));
    }
    let client_name = format!("default/{}", client.id);

    // A forwarded flow, named on both sides.
    let fwd = node.wait_flow(
        &FlowFilter {
            pod: Some(client_name.clone()),
            verdict: Some(Verdict::Forwarded),
            ..FlowFilter::default()
        },
        |f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(server_ip.as_str()),
    );
    assert_eq!(fwd.protocol, "tcp");
    assert_eq!(fwd.drop_reason, None);
    assert_eq!(fwd.destination.port, 8080);
    assert_eq!(fwd.source.ip.unwrap().to_string(), client_ip);
    assert_eq!(fwd.source.pod.as_deref(), Some(client.id.as_str()));
    assert_eq!(fwd.source.namespace.as_deref(), Some("default"));
    assert_eq!(fwd.destination.pod.as_deref(), Some(server.id.as_str()));
    assert_eq!(fwd.source.cluster.as_deref(), Some("c1"));
    assert_eq!(fwd.node, node.ns.name());

    // A service without backends: the datapath drops, the flow says why.
    let empty = ServiceEntry {
        frontend: Frontend {
            ip: EMPTY_VIP.parse().unwrap(),
            port: 80,
            protocol: mesh_api::Protocol::Tcp,
            kind: FrontendKind::ClusterIp,
        },
        backends: vec![],
        affinity_timeout: None,
    };
    let body = serde_json::to_vec(&vec![empty]).unwrap();
    let (status, resp) = node
        .client()
        .request("PUT", "/v1/services", Some(&body))
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));

    // A follower started before the drop receives it.
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = node.client();
    let follow_filter = FlowFilter {
        verdict: Some(Verdict::Dropped),
        pod: Some(client.id.clone()),
        ..FlowFilter::default()
    };
    std::thread::spawn(move || {
        // Ends when the agent is killed at the end of the test.
        let _ = follower.follow_flows(&follow_filter, |f| tx.send(f).is_ok());
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !client.tcp(EMPTY_VIP, 80, "nobody"),
        "a service without backends answered"
    );
    let dropped = node.wait_flow(
        &FlowFilter {
            verdict: Some(Verdict::Dropped),
            namespace: Some("default".into()),
            ..FlowFilter::default()
        },
        |f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(EMPTY_VIP),
    );
    assert_eq!(dropped.drop_reason.as_deref(), Some("no_service_backend"));
    assert_eq!(dropped.destination.port, 80);
    assert_eq!(dropped.source.pod.as_deref(), Some(client.id.as_str()));
    assert_eq!(dropped.observation, "from-pod");
    let streamed = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the follow stream delivered the drop");
    assert_eq!(streamed.verdict, Verdict::Dropped);
    assert_eq!(streamed.drop_reason.as_deref(), Some("no_service_backend"));

    // Filters exclude: the forwarded flow is not a drop, and no flow is
    // from the future or of another cluster.
    let none = node
        .client()
        .flows(&FlowFilter {
            cluster: Some("c9".into()),
            ..FlowFilter::default()
        })
        .unwrap();
    assert!(none.is_empty(), "{none:#?}");
    let later = node
        .client()
        .flows(&FlowFilter {
            since: Some(dropped.time_unix_ms + 60_000),
            ..FlowFilter::default()
        })
        .unwrap();
    assert!(later.is_empty(), "{later:#?}");
    let last = node
        .client()
        .flows(&FlowFilter {
            last: Some(1),
            ..FlowFilter::default()
        })
        .unwrap();
    assert_eq!(last.len(), 1);

    // A bad filter is refused with what is allowed.
    let (status, resp) = node
        .client()
        .request("GET", "/v1/flows?verdict=sideways", None)
        .unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("forwarded, dropped"), "{text}");

    // Policies: both endpoints, nothing enforced. Encryption: off.
    let policies = node.client().policies().unwrap();
    let pods: Vec<_> = policies.iter().filter_map(|p| p.pod.clone()).collect();
    assert!(
        pods.contains(&client.id) && pods.contains(&server.id),
        "{policies:#?}"
    );
    assert!(
        policies
            .iter()
            .all(|p| !p.policy.ingress_enforced && !p.policy.egress_enforced)
    );
    let enc = node.client().encryption().unwrap();
    assert_eq!((enc.mode.as_str(), enc.device.is_none()), ("off", true));
    assert_eq!(enc.node, node.ns.name());
}
