//! What a node's agent reports: its local API (over its unix socket in the
//! lab's state dir), its status and its `/metrics` counters.

use std::time::Duration;

use mesh_e2e::Lab;
use mesh_testbed::Wait;

use super::helpers::T;

/// `GET <path>` on node `node`'s agent API (its unix socket in the lab's
/// state dir), as JSON.
pub(super) fn agent_get(lab: &Lab, cluster: &str, node: &str, path: &str) -> serde_json::Value {
    agent_request(lab, cluster, node, "GET", path)
}

/// `<method> <path>` on node `node`'s agent API, as JSON.
pub(super) fn agent_request(
    lab: &Lab,
    cluster: &str,
    node: &str,
    method: &str,
    path: &str,
) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let sock = lab
        .dir
        .join(cluster)
        .join("nodes")
        .join(node)
        .join("agent.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("agent socket {}: {e}", sock.display()));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: agent\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{node} {path}: {e}: {text}"))
}

/// Waits until `check` holds for node `node`'s agent status.
pub(super) fn wait_agent(
    lab: &Lab,
    cluster: &str,
    node: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    Wait::new(format!("{node}: {what}"))
        .timeout(T)
        .interval(Duration::from_millis(300))
        .until_ok(|| {
            let st = agent_get(lab, cluster, node, "/v1/status");
            if check(&st) {
                Ok(())
            } else {
                Err(format!("status: {st}"))
            }
        });
}

/// A counter of node `node`'s `/metrics` (read inside its namespace).
pub(super) fn agent_metric(lab: &Lab, cluster: &str, node: &str, series: &str) -> u64 {
    let addr = agent_get(lab, cluster, node, "/v1/status")["metrics_address"]
        .as_str()
        .expect("metrics address")
        .to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port}; printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = lab.exec(
        &lab.node_ns(node),
        std::path::Path::new("/bin/bash"),
        &["-c", &script],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The datapath's packet counter for `reason` on node `node` (its agent's
/// `/metrics`, read inside the node's namespace).
pub(super) fn datapath_packets(lab: &Lab, node: &str, reason: &str) -> u64 {
    let out = lab.exec(
        &lab.node_ns(node),
        std::path::Path::new("curl"),
        &["-sS", "--max-time", "5", "http://127.0.0.1:9962/metrics"],
    );
    assert!(out.status.success(), "metrics of {node}: {out:?}");
    let prefix = format!("meshwork_datapath_packets_total{{reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|n| n.trim().parse().expect("counter value"))
        .unwrap_or(0)
}
