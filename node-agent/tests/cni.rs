//! The real `mesh-cni` plugin, invoked exactly as a container runtime does
//! (CNI_* environment, configuration on stdin, CNI_NETNS a /var/run/netns
//! path), inside a "node" namespace where the real `node-agent` binary runs.
//! Pods are namespaces; traffic is real ping and TCP between them, and what
//! the datapath saw of it comes back from the agent's flow log.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use mesh_agent_api::AgentClient;
use mesh_testbed::{Bridge, NetNs, require_root};
use node_agent::endpoint::host_ifname;
use serde_json::{Value, json};

mod common;

use common::{AGENT, CniCall, Pod, pod_ip};

/// A node: a namespace, a state dir and socket in a temp dir, the agent.
struct Node {
    ns: NetNs,
    dir: tempfile::TempDir,
    bpf: mesh_testbed::BpfDir,
    cgroup: mesh_testbed::Cgroup,
    pod_cidr: String,
    agent: Option<Child>,
}

impl Node {
    fn agent_command(&self) -> std::process::Command {
        common::agent_command(&self.ns)
    }

    fn new(pod_cidr: &str) -> Node {
        require_root();
        let node = Node {
            ns: NetNs::new("nd"),
            dir: tempfile::tempdir().expect("tempdir"),
            bpf: mesh_testbed::BpfDir::new(),
            cgroup: mesh_testbed::Cgroup::new(),
            pod_cidr: pod_cidr.to_string(),
            agent: None,
        };
        std::fs::create_dir_all(node.state_dir()).expect("state dir");
        node
    }

    fn with_agent(pod_cidr: &str) -> Node {
        let mut node = Node::new(pod_cidr);
        node.start_agent();
        node
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.socket())
    }

    fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let mut cmd = self.agent_command();
        cmd.args([
            "--cluster-name=c1",
            "--cluster-id=1",
            &format!("--node-name={}", self.ns.name()),
            &format!("--pod-cidr={}", self.pod_cidr),
            &format!("--state-dir={}", self.state_dir().display()),
            &format!("--agent-socket={}", self.socket().display()),
            &format!("--bpf-root={}", self.bpf.path().display()),
            &format!("--cgroup-root={}", self.cgroup.path().display()),
            &format!("--wireguard-interface={}", self.ns.name()),
            "--metrics-address=127.0.0.1:0",
        ]);
        let (socket, log) = (self.socket(), self.log());
        let agent = self.agent.insert(common::spawn_agent(&mut cmd, &log));
        common::wait_answering(
            agent,
            &socket,
            &log,
            Duration::from_secs(15),
            Duration::from_millis(50),
        );
    }

    /// Kills the agent the hard way (a crash: its socket file stays behind).
    fn kill_agent(&mut self) {
        if let Some(child) = self.agent.take() {
            common::kill(child);
        }
    }

    /// Stops the agent with SIGTERM, as the kubelet does; returns its exit status.
    fn stop_agent(&mut self) -> std::process::ExitStatus {
        common::terminate(self.agent.take().expect("agent running"))
    }

    fn log_text(&self) -> String {
        common::log_text(&self.log())
    }

    /// The network configuration a runtime would pass.
    fn conf(&self, with_cidr: bool) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "meshwork",
            "type": "mesh-cni",
            "agentSocket": self.socket(),
            "stateDir": self.state_dir(),
            "mtu": 1500,
        });
        if with_cidr {
            c["podCIDR"] = json!(self.pod_cidr);
        }
        c
    }

    /// Runs the plugin in the node's namespace; returns (success, stdout JSON or Null).
    fn cni(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        stdin: &[u8],
    ) -> (bool, Value) {
        let out = common::run_cni(
            &self.ns,
            &CniCall {
                command,
                container,
                netns,
                pod_name: Some(container),
                stdin,
            },
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("mesh-cni printed non-JSON ({e}): {stdout}"))
        };
        (out.status.success(), value)
    }

    fn add(&self, pod: &Pod) -> Value {
        let (ok, out) = self.cni(
            "ADD",
            &pod.id,
            Some(&pod.path()),
            self.conf(true).to_string().as_bytes(),
        );
        assert!(
            ok,
            "ADD {} failed: {out}\nagent log: {}",
            pod.id,
            self.log_text()
        );
        out
    }

    fn del(&self, pod: &Pod) -> (bool, Value) {
        self.cni(
            "DEL",
            &pod.id,
            Some(&pod.path()),
            self.conf(true).to_string().as_bytes(),
        )
    }

    /// Host-side veths of pods in the node's namespace.
    fn pod_links(&self) -> Vec<String> {
        let out = self.ns.run_ok("ip", &["-j", "link", "show"]);
        let links: Vec<Value> = serde_json::from_str(&out).expect("ip -j link");
        links
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("mw"))
            .map(str::to_string)
            .collect()
    }

    /// Addresses with an allocation file under the IPAM dir.
    fn ipam_files(&self) -> BTreeSet<Ipv4Addr> {
        let mut out = BTreeSet::new();
        let root = self.state_dir().join("ipam");
        for cidr in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(cidr.path())
                .expect("read ipam dir")
                .flatten()
            {
                if let Ok(ip) = f.file_name().to_string_lossy().parse() {
                    out.insert(ip);
                }
            }
        }
        out
    }

    /// GET /metrics from inside the node's namespace (the listener is on its loopback).
    fn metrics(&self) -> String {
        let addr = self
            .client()
            .status()
            .expect("status")
            .metrics_address
            .expect("metrics address");
        common::metrics(&self.ns, addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// What these tests do with a pod besides ping: TCP echo.
impl Pod {
    /// Starts a TCP echo server on `port`.
    fn serve_echo(&self, port: u16) {
        self.ns.spawn(
            "socat",
            &[&format!("TCP-LISTEN:{port},reuseaddr,fork"), "EXEC:cat"],
        );
    }

    /// Sends `text` over TCP and returns what came back (retrying while the
    /// server starts).
    fn tcp_echo(&self, ip: &str, port: u16, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .ns
                .command("bash")
                .args([
                    "-c",
                    &format!("echo {text} | socat -t2 - TCP:{ip}:{port},connect-timeout=2"),
                ])
                .output()
                .expect("socat");
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !got.is_empty() {
                return got;
            }
            if Instant::now() > deadline {
                return format!("failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn pods_on_one_node_are_wired_registered_reachable_and_deleted() {
    let bridge = Bridge::new();
    let node = Node::with_agent("10.60.1.0/24");
    bridge.attach(&node.ns, "eth0", "192.168.60.1/24");
    let (a, b) = (Pod::new("pod"), Pod::new("pod"));
    let ra = node.add(&a);
    let rb = node.add(&b);

    // The result: CNI 1.0 shape, addresses from the CIDR, distinct.
    let (ip_a, ip_b) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ip_a, ip_b);
    for (r, ip, pod) in [(&ra, &ip_a, &a), (&rb, &ip_b, &b)] {
        assert_eq!(r["cniVersion"], "1.0.0");
        let parsed: Ipv4Addr = ip.parse().expect("ipv4");
        assert_eq!(
            parsed.octets()[..3],
            [10, 60, 1],
            "{ip} not in 10.60.1.0/24"
        );
        assert_eq!(r["ips"][0]["address"], format!("{ip}/32"));
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["interfaces"][0]["name"], host_ifname(&pod.id, "eth0"));
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(
            r["interfaces"][1]["sandbox"],
            pod.path().display().to_string()
        );
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        // What the pod really has.
        let addrs = pod
            .ns
            .run_ok("ip", &["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("{ip}/32")), "{addrs}");
        let routes = pod.ns.run_ok("ip", &["route", "show", "default"]);
        assert!(routes.contains("via 169.254.1.1 dev eth0"), "{routes}");
        let host_routes = node
            .ns
            .run_ok("ip", &["route", "show", &format!("{ip}/32")]);
        assert!(
            host_routes.contains(&host_ifname(&pod.id, "eth0")),
            "{host_routes}"
        );
    }

    // Traffic: pod↔pod (ping both ways, TCP), pod→node.
    assert!(a.ping(&ip_b), "pod a cannot ping pod b");
    assert!(b.ping(&ip_a), "pod b cannot ping pod a");
    b.serve_echo(7000);
    assert_eq!(a.tcp_echo(&ip_b, 7000, "meshwork-hello"), "meshwork-hello");
    assert!(a.ping("192.168.60.1"), "pod a cannot reach its node");

    // The agent knows both, with the host veth's real ifindex.
    let eps = node.client().endpoints().expect("endpoints");
    assert_eq!(eps.len(), 2);
    for (pod, ip) in [(&a, &ip_a), (&b, &ip_b)] {
        let ep = eps
            .iter()
            .find(|e| e.registration.container_id == pod.id)
            .expect("endpoint registered");
        assert_eq!(
            ep.registration.ips,
            vec![ip.parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(ep.registration.pod_name.as_deref(), Some(pod.id.as_str()));
        let link = node.ns.run_ok(
            "ip",
            &["-j", "link", "show", "dev", &ep.registration.host_ifname],
        );
        let link: Vec<Value> = serde_json::from_str(&link).expect("json");
        assert_eq!(link[0]["ifindex"], ep.registration.host_ifindex);
    }

    // CHECK passes on a healthy pod.
    let mut check = node.conf(true);
    check["prevResult"] = ra.clone();
    let (ok, out) = node.cni(
        "CHECK",
        &a.id,
        Some(&a.path()),
        check.to_string().as_bytes(),
    );
    assert!(ok, "CHECK of a healthy pod failed: {out}");

    // DEL: veth gone, address released, endpoint gone; again: still success.
    let (ok, out) = node.del(&a);
    assert!(ok, "DEL failed: {out}");
    assert!(!node.pod_links().contains(&host_ifname(&a.id, "eth0")));
    assert!(!node.ipam_files().contains(&ip_a.parse().expect("ip")));
    assert_eq!(node.client().endpoints().expect("endpoints").len(), 1);
    let (ok, out) = node.del(&a);
    assert!(ok, "second DEL must succeed: {out}");
    // CHECK now reports what is missing, with our code.
    let (ok, out) = node.cni(
        "CHECK",
        &a.id,
        Some(&a.path()),
        check.to_string().as_bytes(),
    );
    assert!(!ok);
    assert_eq!(out["code"], 103, "{out}");
    // b still works.
    assert!(b.ping("192.168.60.1"));

    let metrics = node.metrics();
    assert!(metrics.contains("meshwork_endpoints 1\n"), "{metrics}");
    assert!(
        metrics.contains("meshwork_cni_registrations_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshwork_cni_deregistrations_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn twenty_concurrent_adds_get_distinct_addresses() {
    let node = Node::with_agent("10.61.0.0/24");
    let pods: Vec<Pod> = (0..20).map(|_| Pod::new("pod")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.add(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let ips: BTreeSet<String> = results.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 20, "addresses not distinct: {ips:?}");
    assert_eq!(node.ipam_files().len(), 20);
    assert_eq!(node.client().endpoints().expect("endpoints").len(), 20);
    assert_eq!(node.pod_links().len(), 20);
    // Spot-check the datapath of the concurrent pods: first ↔ last.
    assert!(pods[0].ping(&pod_ip(&results[19])));

    std::thread::scope(|s| {
        for p in &pods {
            let node = &node;
            s.spawn(move || {
                let (ok, out) = node.del(p);
                assert!(ok, "DEL failed: {out}");
            });
        }
    });
    assert!(node.pod_links().is_empty(), "{:?}", node.pod_links());
    assert!(node.ipam_files().is_empty(), "{:?}", node.ipam_files());
    assert!(node.client().endpoints().expect("endpoints").is_empty());
}

#[test]
fn exhausted_pod_cidr_is_a_cni_error_and_other_pods_keep_working() {
    let node = Node::with_agent("10.62.0.0/30");
    let (a, b, c) = (Pod::new("pod"), Pod::new("pod"), Pod::new("pod"));
    let (ra, rb) = (node.add(&a), node.add(&b));
    let (ok, out) = node.cni(
        "ADD",
        &c.id,
        Some(&c.path()),
        node.conf(true).to_string().as_bytes(),
    );
    assert!(!ok, "third ADD in a /30 must fail");
    assert_eq!(out["code"], 100, "{out}");
    assert_eq!(out["cniVersion"], "1.0.0");
    let msg = out["msg"].as_str().expect("msg");
    assert!(
        msg.contains("10.62.0.0/30") && msg.contains("exhausted"),
        "{msg}"
    );
    assert!(
        msg.contains("delete unused pods") && msg.contains("larger pod CIDR"),
        "{msg}"
    );
    // Nothing of c was left behind; a and b still talk.
    assert_eq!(node.pod_links().len(), 2);
    assert!(!node.pod_links().contains(&host_ifname(&c.id, "eth0")));
    assert!(c.ns.run("ip", &["link", "show", "eth0"]).status.code() != Some(0));
    assert_eq!(node.ipam_files().len(), 2);
    assert!(a.ping(&pod_ip(&rb)));
    assert!(b.ping(&pod_ip(&ra)));
    // Freeing one address makes room again.
    assert!(node.del(&a).0);
    let rc = node.add(&c);
    assert_eq!(pod_ip(&rc), pod_ip(&ra));
}

#[test]
fn bad_input_gets_the_spec_error_codes() {
    let node = Node::new("10.63.0.0/24");
    let pod = Pod::new("pod");
    let conf = node.conf(true);

    let (ok, out) = node.cni(
        "ADD",
        &pod.id,
        Some(&pod.path()),
        b"{\"cniVersion\": \"1.0.0\", ",
    );
    assert!(!ok);
    assert_eq!(out["code"], 6, "malformed JSON: {out}");

    let (ok, out) = node.cni(
        "FROB",
        &pod.id,
        Some(&pod.path()),
        conf.to_string().as_bytes(),
    );
    assert!(!ok);
    assert_eq!(out["code"], 4, "unknown command: {out}");
    assert!(out["msg"].as_str().expect("msg").contains("FROB"));

    let (ok, out) = node.cni("VERSION", &pod.id, None, b"");
    assert!(ok);
    assert_eq!(out["cniVersion"], "1.0.0");
    let versions: Vec<&str> = out["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"0.4.0"),
        "{out}"
    );

    let mut old = conf.clone();
    old["cniVersion"] = json!("0.1.0");
    let (ok, out) = node.cni(
        "ADD",
        &pod.id,
        Some(&pod.path()),
        old.to_string().as_bytes(),
    );
    assert!(!ok);
    assert_eq!(out["code"], 1, "incompatible version: {out}");

    let mut no_type = conf.clone();
    no_type.as_object_mut().expect("object").remove("type");
    let (ok, out) = node.cni(
        "ADD",
        &pod.id,
        Some(&pod.path()),
        no_type.to_string().as_bytes(),
    );
    assert!(!ok);
    assert_eq!(out["code"], 7, "missing type: {out}");

    let mut bad_cidr = conf.clone();
    bad_cidr["podCIDR"] = json!("10.63.0.1/24");
    let (ok, out) = node.cni(
        "ADD",
        &pod.id,
        Some(&pod.path()),
        bad_cidr.to_string().as_bytes(),
    );
    assert!(!ok);
    assert_eq!(out["code"], 7, "bad podCIDR: {out}");
    assert!(
        out["msg"].as_str().expect("msg").contains("10.63.0.0/24"),
        "{out}"
    );

    let (ok, out) = node.cni("ADD", &pod.id, None, conf.to_string().as_bytes());
    assert!(!ok);
    assert_eq!(out["code"], 4, "missing CNI_NETNS: {out}");
    assert!(out["msg"].as_str().expect("msg").contains("CNI_NETNS"));

    // None of these left anything behind.
    assert!(node.pod_links().is_empty());
    assert!(node.ipam_files().is_empty());
}

#[test]
fn agent_down_is_try_again_later_and_nothing_leaks() {
    let mut node = Node::with_agent("10.64.0.0/24");
    let survivor = Pod::new("pod");
    node.add(&survivor);
    node.kill_agent();

    let pod = Pod::new("pod");
    // With the CIDR in the config, the plugin gets as far as registration
    // (address allocated, veth made), then must undo it all.
    for with_cidr in [true, false] {
        let (ok, out) = node.cni(
            "ADD",
            &pod.id,
            Some(&pod.path()),
            node.conf(with_cidr).to_string().as_bytes(),
        );
        assert!(!ok, "ADD without an agent must fail");
        assert_eq!(out["code"], 11, "{out}");
        assert!(
            out["msg"]
                .as_str()
                .expect("msg")
                .contains("try again later"),
            "{out}"
        );
        assert_eq!(node.pod_links(), vec![host_ifname(&survivor.id, "eth0")]);
        assert_eq!(node.ipam_files().len(), 1, "an address leaked");
        assert!(
            !pod.ns.run("ip", &["link", "show", "eth0"]).status.success(),
            "pod eth0 leaked"
        );
    }

    // Back up: the same ADD now succeeds.
    node.start_agent();
    node.add(&pod);
    assert_eq!(node.client().endpoints().expect("endpoints").len(), 2);
}

#[test]
fn restarted_agent_recovers_endpoints_from_its_state_dir() {
    let mut node = Node::with_agent("10.65.0.0/24");
    let (a, b, gone) = (Pod::new("pod"), Pod::new("pod"), Pod::new("pod"));
    let rb = node.add(&b);
    node.add(&a);
    node.add(&gone);
    let before = node.client().endpoints().expect("endpoints");
    assert_eq!(before.len(), 3);

    // A second agent may not steal the socket of a live one.
    let second = node
        .ns
        .command(AGENT)
        .args([
            "--cluster-name=c1",
            "--cluster-id=1",
            "--node-name=second",
            &format!("--bpf-root={}", node.bpf.path().display()),
            &format!("--cgroup-root={}", node.cgroup.path().display()),
            &format!("--state-dir={}", node.state_dir().display()),
            &format!("--agent-socket={}", node.socket().display()),
            "--metrics-address=127.0.0.1:0",
        ])
        .output()
        .expect("run a second agent");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another node-agent is serving this socket"),
        "{stderr}"
    );
    assert_eq!(
        node.client()
            .endpoints()
            .expect("first agent still serves")
            .len(),
        3
    );

    // Graceful stop (SIGTERM): exit 0, socket removed; then start again.
    let status = node.stop_agent();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(
        !node.socket().exists(),
        "socket left behind after a graceful stop"
    );
    node.start_agent();
    assert_eq!(node.client().endpoints().expect("endpoints"), before);

    node.kill_agent(); // crash: the socket file stays behind
    assert!(node.socket().exists());
    // While the agent is down, one pod's veth disappears (pod deleted, or
    // lost in a reboot).
    node.ns
        .run_ok("ip", &["link", "del", &host_ifname(&gone.id, "eth0")]);
    node.start_agent();
    let after = node.client().endpoints().expect("endpoints");
    let expected: Vec<_> = before
        .iter()
        .filter(|e| e.registration.container_id != gone.id)
        .cloned()
        .collect();
    assert_eq!(
        after, expected,
        "endpoints (ids, ifindexes, IPs) must survive a restart; the dead one is dropped"
    );
    let log = node.log_text();
    assert!(log.contains("endpoints restored"), "{log}");
    assert!(log.contains("endpoint dropped"), "{log}");

    // Pods kept working through it, and DEL works against the new agent.
    assert!(a.ping(&pod_ip(&rb)));
    assert!(node.del(&b).0);
    assert_eq!(node.client().endpoints().expect("endpoints").len(), 1);
}

#[test]
fn local_api_refuses_bad_requests_and_counts_them() {
    let node = Node::with_agent("10.67.0.0/24");
    let client = node.client();
    assert_eq!(
        client.request("GET", "/healthz", None).expect("healthz"),
        (200, b"ok".to_vec())
    );
    let status = client.status().expect("status");
    assert_eq!(status.cluster_name, "c1");
    assert_eq!(status.pod_cidr, Some("10.67.0.0/24".parse().expect("cidr")));
    assert_eq!(status.datapath, "ebpf");

    let (code, body) = client
        .request("POST", "/v1/endpoints", Some(b"{\"container_id\": 5}"))
        .expect("post");
    assert_eq!(code, 400);
    let body: Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(body["reason"], "bad-request");

    let foreign = json!({
        "container_id": "x1", "ifname": "eth0", "netns": "/var/run/netns/x1",
        "host_ifname": "mwx1", "host_ifindex": 7, "ips": ["10.99.0.5"],
    });
    let (code, body) = client
        .request(
            "POST",
            "/v1/endpoints",
            Some(foreign.to_string().as_bytes()),
        )
        .expect("post");
    assert_eq!(code, 400);
    let body: Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(body["reason"], "invalid-endpoint");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("outside this node's pod CIDR 10.67.0.0/24"),
        "{body}"
    );

    assert!(
        !client
            .deregister("never-registered", "eth0")
            .expect("delete unknown")
    );
    assert!(client.endpoints().expect("endpoints").is_empty());
    let metrics = node.metrics();
    assert!(
        metrics.contains("meshwork_errors_total{reason=\"bad-request\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshwork_errors_total{reason=\"invalid-endpoint\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meshwork_endpoints 0"), "{metrics}");

    // Desired services from the local source go through the reconciler into the datapath.
    let svc = |port: u16, backend_port: u16| {
        json!({
            "frontend": {"ip": "10.96.0.10", "port": port, "protocol": "TCP", "kind": "cluster-ip"},
            "backends": [{"ip": "10.67.0.5", "port": backend_port}],
            "affinity_timeout": null,
        })
    };
    let put = |body: Value| {
        let (code, body) = client
            .request("PUT", "/v1/services", Some(body.to_string().as_bytes()))
            .expect("put services");
        (code, serde_json::from_slice::<Value>(&body).expect("json"))
    };
    let (code, report) = put(json!([svc(53, 5353)]));
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["upserted"], json!(["service 10.96.0.10:53/TCP"]));
    let (code, body) = client
        .request("GET", "/v1/services", None)
        .expect("get services");
    assert_eq!(code, 200);
    let installed: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(installed, json!([svc(53, 5353)]));
    // A CIDR entry with a node-local (policy CIDR) identity round-trips
    // through the real LPM map.
    let cidr_entry = json!([{"cidr": "198.51.100.0/24", "identity": (1u32 << 24) | 1,
        "node_ip": null, "encrypt": false}]);
    let (code, body) = client
        .request(
            "PUT",
            "/v1/ipcache",
            Some(cidr_entry.to_string().as_bytes()),
        )
        .expect("put ipcache");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (_, body) = client
        .request("GET", "/v1/ipcache", None)
        .expect("get ipcache");
    let ipcache: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        ipcache
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["cidr"] == "198.51.100.0/24" && e["identity"] == (1u32 << 24) | 1),
        "{ipcache}"
    );
    // Map pressure and reconcile latency are exported.
    let metrics = node.metrics();
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("{line} missing:\n{metrics}"))
            .trim()
            .parse()
            .expect("number")
    };
    assert_eq!(
        value("meshwork_datapath_map_entries{map=\"mw_services\"} "),
        1.0
    );
    assert!(value("meshwork_datapath_map_capacity{map=\"mw_services\"} ") >= 1024.0);
    assert!(value("meshwork_datapath_map_capacity{map=\"mw_ct\"} ") > 0.0);
    assert!(value("meshwork_reconcile_duration_seconds_count ") >= 1.0);
    assert!(value("meshwork_reconcile_duration_seconds_sum ") > 0.0);
    // A bad port is refused with the reason, and what was installed stays.
    for (bad, wanted) in [
        (json!([svc(0, 80)]), "port 0"),
        (json!([svc(80, 0)]), "backend 10.67.0.5 has port 0"),
        (
            serde_json::from_str(&json!([svc(53, 80)]).to_string().replace(":53,", ":70000,"))
                .expect("json"),
            "70000",
        ),
    ] {
        let (code, body) = put(bad);
        assert_eq!(code, 400, "{body}");
        assert!(
            body["error"].as_str().expect("error").contains(wanted),
            "{wanted:?}: {body}"
        );
    }
    let (_, body) = client
        .request("GET", "/v1/services", None)
        .expect("get services");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json"),
        json!([svc(53, 5353)])
    );
    let metrics = node.metrics();
    assert!(
        metrics.contains("meshwork_datapath_services 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshwork_errors_total{reason=\"invalid-service\"} 2"),
        "{metrics}"
    );
}

#[test]
fn pods_on_two_nodes_reach_each_other_with_native_routing() {
    let bridge = Bridge::new();
    let n1 = Node::with_agent("10.66.1.0/24");
    let n2 = Node::with_agent("10.66.2.0/24");
    bridge.attach(&n1.ns, "eth0", "192.168.66.1/24");
    bridge.attach(&n2.ns, "eth0", "192.168.66.2/24");
    n1.ns.run_ok(
        "ip",
        &["route", "add", "10.66.2.0/24", "via", "192.168.66.2"],
    );
    n2.ns.run_ok(
        "ip",
        &["route", "add", "10.66.1.0/24", "via", "192.168.66.1"],
    );
    let (a, b) = (Pod::new("pod"), Pod::new("pod"));
    let ra = n1.add(&a);
    let rb = n2.add(&b);
    assert!(
        a.ping(&pod_ip(&rb)),
        "pod on node 1 cannot ping pod on node 2"
    );
    assert!(
        b.ping(&pod_ip(&ra)),
        "pod on node 2 cannot ping pod on node 1"
    );
    b.serve_echo(7100);
    assert_eq!(
        a.tcp_echo(&pod_ip(&rb), 7100, "across-nodes"),
        "across-nodes"
    );
    assert!(a.ping("192.168.66.2"), "pod cannot reach the other node");
}

#[test]
fn del_succeeds_for_unknown_containers_and_vanished_namespaces() {
    let node = Node::with_agent("10.68.0.0/24");
    // Never added: success, nothing to do.
    let (ok, out) = node.cni(
        "DEL",
        "never-added",
        None,
        node.conf(true).to_string().as_bytes(),
    );
    assert!(ok, "DEL of an unknown container must succeed: {out}");

    // The pod's namespace is gone before DEL (the runtime tore it down).
    let pod = Pod::new("pod");
    let id = pod.id.clone();
    let path = pod.path();
    let ip: Ipv4Addr = pod_ip(&node.add(&pod)).parse().expect("ip");
    drop(pod);
    assert!(!path.exists());
    let (ok, out) = node.cni(
        "DEL",
        &id,
        Some(&path),
        node.conf(true).to_string().as_bytes(),
    );
    assert!(ok, "DEL after the netns vanished must succeed: {out}");
    assert!(!node.ipam_files().contains(&ip), "address not released");
    assert!(node.pod_links().is_empty());
    assert!(node.client().endpoints().expect("endpoints").is_empty());
}

/// Polls `/v1/flows` with `filter` until `pred` holds for one flow.
fn wait_flow(
    node: &Node,
    filter: &node_agent::flows::FlowFilter,
    pred: impl Fn(&node_agent::flows::FlowRecord) -> bool,
) -> node_agent::flows::FlowRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flows = node.client().flows(filter).expect("GET /v1/flows");
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

/// Flows from real packets: the TC programs' events come back from
/// `GET /v1/flows` named (pod, cluster, node) with verdict and drop reason,
/// by filter and as a follow stream; `/v1/policies` and `/v1/encryption`
/// describe the same endpoints and the device.
#[test]
fn flows_from_real_packets_are_served_named_filtered_and_followed() {
    // A ClusterIP without backends (dialled only from inside a pod).
    let empty_vip = "10.96.73.1";
    let node = Node::with_agent("10.73.0.0/24");
    let (client, server) = (Pod::new("pod"), Pod::new("pod"));
    let client_ip = pod_ip(&node.add(&client));
    let server_ip = pod_ip(&node.add(&server));
    server.serve_echo(8080);
    assert_eq!(client.tcp_echo(&server_ip, 8080, "hello"), "hello");
    let client_name = format!("default/{}", client.id);

    // A forwarded flow, named on both sides.
    let fwd = wait_flow(
        &node,
        &node_agent::flows::FlowFilter {
            pod: Some(client_name.clone()),
            verdict: Some(node_agent::flows::Verdict::Forwarded),
            ..node_agent::flows::FlowFilter::default()
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
    let empty = node_agent::datapath::ServiceEntry {
        frontend: node_agent::datapath::Frontend {
            ip: empty_vip.parse().unwrap(),
            port: 80,
            protocol: mesh_api::Protocol::Tcp,
            kind: node_agent::datapath::FrontendKind::ClusterIp,
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
    let follow_filter = node_agent::flows::FlowFilter {
        verdict: Some(node_agent::flows::Verdict::Dropped),
        pod: Some(client.id.clone()),
        ..node_agent::flows::FlowFilter::default()
    };
    std::thread::spawn(move || {
        // Ends when the agent is killed at the end of the test.
        let _ = follower.follow_flows(&follow_filter, |f| tx.send(f).is_ok());
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .ns
        .command("bash")
        .args([
            "-c",
            &format!("echo nobody | socat -t1 - TCP:{empty_vip}:80,connect-timeout=1"),
        ])
        .output()
        .expect("socat");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("nobody"),
        "a service without backends answered"
    );
    let dropped = wait_flow(
        &node,
        &node_agent::flows::FlowFilter {
            verdict: Some(node_agent::flows::Verdict::Dropped),
            namespace: Some("default".into()),
            ..node_agent::flows::FlowFilter::default()
        },
        |f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(empty_vip),
    );
    assert_eq!(dropped.drop_reason.as_deref(), Some("no_service_backend"));
    assert_eq!(dropped.destination.port, 80);
    assert_eq!(dropped.source.pod.as_deref(), Some(client.id.as_str()));
    assert_eq!(dropped.observation, "from-pod");
    let streamed = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the follow stream delivered the drop");
    assert_eq!(streamed.verdict, node_agent::flows::Verdict::Dropped);
    assert_eq!(streamed.drop_reason.as_deref(), Some("no_service_backend"));

    // Filters exclude: the forwarded flow is not a drop, and no flow is
    // from the future or of another cluster.
    let none = node
        .client()
        .flows(&node_agent::flows::FlowFilter {
            cluster: Some("c9".into()),
            ..node_agent::flows::FlowFilter::default()
        })
        .unwrap();
    assert!(none.is_empty(), "{none:#?}");
    let later = node
        .client()
        .flows(&node_agent::flows::FlowFilter {
            since: Some(dropped.time_unix_ms + 60_000),
            ..node_agent::flows::FlowFilter::default()
        })
        .unwrap();
    assert!(later.is_empty(), "{later:#?}");
    let last = node
        .client()
        .flows(&node_agent::flows::FlowFilter {
            last: Some(1),
            ..node_agent::flows::FlowFilter::default()
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
    let counted = node
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("meshwork_flow_events_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("meshwork_flow_events_total in /metrics");
    assert!(counted >= 2, "flow events counted: {counted}");
    let enc = node.client().encryption().unwrap();
    assert_eq!((enc.mode.as_str(), enc.device.is_none()), ("off", true));
    assert_eq!(enc.node, node.ns.name());
}
