//! The harness the node-agent's integration tests share: the real
//! `node-agent` binary started in a node's network namespace with its log in
//! a file and waited on until its API answers, the real `mesh-cni` invoked
//! as a container runtime invokes it, pods (a namespace and a container id),
//! and the agent's `/metrics` read from inside the node.
//!
//! Each test keeps its own `Node` (what it needs of a node differs: a pod
//! CIDR, a test API server, a mesh-apiserver feed); the pieces here are what
//! those nodes had each written again.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use mesh_agent_api::AgentClient;
use mesh_testbed::{NetNs, Wait, unique_name};
use node_agent::api::AgentStatus;
use serde_json::Value;

/// The node-agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_node-agent");
/// The CNI plugin under test.
pub const CNI: &str = env!("CARGO_BIN_EXE_mesh-cni");

/// The agent in `ns`'s network namespace only: nsenter keeps the host's
/// bpffs and cgroup mounts (where its maps are pinned and its cgroup lives),
/// which `ip netns exec` would hide by remounting /sys.
pub fn agent_command(ns: &NetNs) -> Command {
    ns.nsenter(AGENT)
}

/// Spawns `cmd` (an agent command line) with no stdin or stdout and its
/// stderr appended to `log`.
pub fn spawn_agent(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("agent log {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start node-agent")
}

/// The text of an agent's log file (empty if there is none yet).
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits (every `interval`, at most `timeout`) until the agent's API on
/// `socket` answers, and returns its first status. Panics with the log if
/// the agent exits meanwhile or never answers.
pub fn wait_answering(
    agent: &mut Child,
    socket: &Path,
    log: &Path,
    timeout: Duration,
    interval: Duration,
) -> AgentStatus {
    let client = AgentClient::new(socket);
    Wait::new(format!("node-agent answering on {}", socket.display()))
        .timeout(timeout)
        .interval(interval)
        .until_some_or(
            || {
                if let Ok(status) = client.status() {
                    return Some(status);
                }
                if let Ok(Some(status)) = agent.try_wait() {
                    panic!("node-agent exited ({status}): {}", log_text(log));
                }
                None
            },
            || log_text(log),
        )
}

/// Stops the agent with SIGTERM, as the kubelet does; returns its exit status.
pub fn terminate(mut agent: Child) -> ExitStatus {
    mesh_testbed::run_ok("kill", &["-TERM", &agent.id().to_string()]);
    agent.wait().expect("wait for node-agent")
}

/// Kills the agent the hard way (a crash: its socket file stays behind).
pub fn kill(mut agent: Child) {
    let _ = agent.kill();
    let _ = agent.wait();
}

/// GET /metrics at `addr` from inside `ns` (the listener is on its loopback).
pub fn metrics(ns: &NetNs, addr: SocketAddr) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
        addr.ip(),
        addr.port()
    );
    ns.run_ok("bash", &["-c", &script])
}

/// One invocation of the CNI plugin, as a runtime makes it.
pub struct CniCall<'a> {
    /// ADD, DEL, CHECK, VERSION.
    pub command: &'a str,
    /// CNI_CONTAINERID.
    pub container: &'a str,
    /// CNI_NETNS, when there is one.
    pub netns: Option<&'a Path>,
    /// The pod named in CNI_ARGS (K8S_POD_NAMESPACE=default), when the
    /// runtime passes one.
    pub pod_name: Option<&'a str>,
    /// The network configuration, on stdin.
    pub stdin: &'a [u8],
}

/// Runs the plugin inside `node` with a runtime's environment (and nothing
/// else of the test's): returns its output.
pub fn run_cni(node: &NetNs, call: &CniCall<'_>) -> Output {
    let mut cmd = node.command(CNI);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", Path::new(CNI).parent().expect("bin dir"));
    if let Some(name) = call.pod_name {
        cmd.env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
        );
    }
    if let Some(ns) = call.netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mesh-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(call.stdin)
        .expect("write mesh-cni stdin");
    child.wait_with_output().expect("mesh-cni output")
}

/// The pod address of an ADD result (`ips[0].address` without its prefix).
pub fn pod_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    addr.split('/').next().expect("address").to_string()
}

/// A pod: a namespace and a container id.
pub struct Pod {
    pub ns: NetNs,
    pub id: String,
}

impl Pod {
    /// A fresh pod namespace `mw<prefix>…` and a unique container id.
    pub fn new(prefix: &str) -> Pod {
        Pod {
            ns: NetNs::new(prefix),
            id: format!("ctr{}", unique_name("")),
        }
    }

    /// Its namespace's path, as CNI_NETNS names it.
    pub fn path(&self) -> PathBuf {
        self.ns.path()
    }

    /// One ping to `ip` (2 s).
    pub fn ping(&self, ip: &str) -> bool {
        self.ns
            .run("ping", &["-c", "1", "-W", "2", ip])
            .status
            .success()
    }
}
