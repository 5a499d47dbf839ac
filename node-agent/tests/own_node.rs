//! The agent's own Node against a real HTTPS Kubernetes API (the project's
//! test API server on loopback, spoken to by kube-rs): the pod CIDR and
//! InternalIP are read, and the WireGuard key annotation is merged in
//! without disturbing the Node's other metadata. The binary reads its pod
//! CIDR from the Node when `--pod-cidr` is not given.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use mesh_agent_api::AgentClient;
use mesh_api::WireGuardKey;
use mesh_test_apiserver::{Config, TestApiServer};
use node_agent::feed::node::{WG_PUB_KEY_ANNOTATION, publish_key, read};

async fn server_with_node(dir: &std::path::Path) -> (TestApiServer, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestApiServer::start(Config::local("own-node"))
        .await
        .expect("test API server");
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"role": "worker"},
                     "annotations": {"keep": "me"}},
        "spec": {"podCIDR": "10.1.7.0/24", "podCIDRs": ["10.1.7.0/24"]},
    }))
    .unwrap();
    let api: Api<Node> = Api::all(client.clone());
    let created = api.create(&PostParams::default(), &node).await.unwrap();
    let mut with_status = created.clone();
    with_status.status = Some(
        serde_json::from_value(serde_json::json!({"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "192.168.9.7"}
        ]}))
        .unwrap(),
    );
    api.replace_status("n1", &PostParams::default(), &with_status)
        .await
        .unwrap();
    (server, client)
}

#[tokio::test]
async fn reads_the_node_and_merges_the_key_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = server_with_node(dir.path()).await;
    let own = read(&client, "n1").await.unwrap();
    assert_eq!(own.pod_cidrs, vec!["10.1.7.0/24".parse().unwrap()]);
    assert_eq!(
        own.internal_ips,
        vec!["192.168.9.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(own.wireguard_key, None);

    let key: WireGuardKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        .parse()
        .unwrap();
    publish_key(&client, "n1", &key).await.unwrap();
    let node = Api::<Node>::all(client.clone()).get("n1").await.unwrap();
    let ann = node.metadata.annotations.unwrap();
    assert_eq!(ann[WG_PUB_KEY_ANNOTATION], key.to_string());
    assert_eq!(ann["keep"], "me", "merge patch keeps other annotations");
    assert_eq!(node.metadata.labels.unwrap()["role"], "worker");
    assert_eq!(
        read(&client, "n1").await.unwrap().wireguard_key,
        Some(key.to_string())
    );

    let missing = read(&client, "nope").await.unwrap_err().to_string();
    assert!(missing.contains("read Node nope"), "{missing}");
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_agent_takes_its_pod_cidr_from_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _client) = server_with_node(dir.path()).await;
    let socket = dir.path().join("agent.sock");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    // No mesh feed, no encryption, no kube-proxy replacement and no pods:
    // this agent attaches nothing to any interface or cgroup of the host,
    // and its maps are pinned in its own bpffs directory, so it may run in
    // the test's namespace and reach the API on loopback.
    mesh_testbed::require_root();
    let bpf = mesh_testbed::BpfDir::new();
    let cgroup = mesh_testbed::Cgroup::new();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_node-agent"))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .args([
            "--cluster-name=c1".to_string(),
            "--cluster-id=1".into(),
            "--node-name=n1".into(),
            format!("--state-dir={}", dir.path().join("state").display()),
            format!("--agent-socket={}", socket.display()),
            "--metrics-address=127.0.0.1:0".into(),
            format!("--bpf-root={}", bpf.path().display()),
            format!("--cgroup-root={}", cgroup.path().display()),
            "--kube-proxy-replacement=false".into(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(s) = AgentClient::new(&socket).status() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "agent not answering: {}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.pod_cidr, Some("10.1.7.0/24".parse().unwrap()));
    assert_eq!(status.routing.node_ip, Some("192.168.9.7".parse().unwrap()));
    assert!(status.mesh_feed.is_none() && status.encryption.is_none());
}
