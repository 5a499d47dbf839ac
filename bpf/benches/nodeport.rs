//! Benchmark for NodePort (not a test; prints figures side by side): new
//! TCP connections/s and connect latency (p50, p99) from a host outside the
//! cluster to a NodePort with its backend on this node, through
//!   - our TC NodePort (from_netdev DNAT, to_netdev reverse NAT),
//!   - kube-proxy-style iptables DNAT in the node namespace,
//!   - the pod directly, the client routing the pod CIDR (no NAT).
//!
//! The node's TC programs stay attached in every row. XDP acceleration is
//! not implemented yet, so it has no row.
//! Env: MESH_BENCH_CONNS (default 2000).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/connect_figures.rs"]
mod connect_figures;

use connect_figures::parse;

use std::net::Ipv4Addr;

use common::Node;
use mesh_bpf::{Backend, BackendId, Datapath, Frontend, LbAlgorithm, Protocol, ServiceId};
use mesh_testbed::{BpfDir, Bridge, NetNs, require_root};

fn main() {
    require_root();
    let conns: String = std::env::var("MESH_BENCH_CONNS").unwrap_or_else(|_| "2000".into());
    let dir = BpfDir::new();
    let mut dp = Datapath::load(dir.path()).expect("load datapath");
    let node = Node::new();
    let backend = node.add_pod(3, "backend", 2001);
    node.attach(&mut dp, &[&backend]);
    backend.serve(8080);
    backend.ns.run_ok(
        "ip",
        &["route", "add", "192.168.77.0/24", "via", "169.254.1.1"],
    );
    let underlay = Bridge::new();
    underlay.attach(&node.ns, "eth0", "192.168.77.1/24");
    let client = NetNs::new("out");
    underlay.attach(&client, "eth0", "192.168.77.9/24");
    let path = node.netns_path();
    mesh_bpf::netns::in_netns(&path, || dp.attach_node_interface("eth0"))
        .unwrap()
        .expect("attach node programs");
    dp.backends()
        .unwrap()
        .upsert(
            BackendId(1),
            Backend {
                addr: backend.ip,
                port: 8080,
                proto: Protocol::Tcp,
                cluster_id: 1,
            },
        )
        .unwrap();
    let frontend = Frontend {
        addr: Ipv4Addr::new(192, 168, 77, 1),
        port: 30080,
        proto: Protocol::Tcp,
    };
    dp.services()
        .unwrap()
        .upsert(frontend, ServiceId(1), &[BackendId(1)], LbAlgorithm::Random)
        .unwrap();
    let probe = env!("CARGO_BIN_EXE_mesh-bpf-probe");
    let run = |what: &str, target: &str| {
        let _ = client.run(probe, &["connect", target, "--count", "50"]);
        let f = parse(&client.run(probe, &["connect", target, "--count", &conns]));
        eprintln!("bench: {what}: {f:?}");
        f
    };
    let dnat = format!("{}:8080", backend.ip);
    // The pod directly first: a later direct connection reusing a client
    // port of a NAT'd one would clash with its conntrack entry (the
    // kernel's or ours) while that lingers.
    client.run_ok(
        "ip",
        &["route", "add", "10.244.1.0/24", "via", "192.168.77.1"],
    );
    let direct = run("the pod directly", &dnat);
    let tc = run("TC NodePort", "192.168.77.1:30080");
    node.ns.run_ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "192.168.77.1/32",
            "-p",
            "tcp",
            "--dport",
            "30090",
            "-j",
            "DNAT",
            "--to-destination",
            &dnat,
        ],
    );
    let ipt = run("iptables DNAT", "192.168.77.1:30090");

    println!(
        "\nNodePort: {conns} new TCP connections from outside the cluster, backend on the node"
    );
    println!(
        "{:<30} {:>12} {:>10} {:>10} {:>7}",
        "path", "conn/s", "p50 us", "p99 us", "failed"
    );
    let rows = [
        ("tc", "TC NodePort (ours)", tc),
        ("iptables", "iptables DNAT", ipt),
        ("direct", "the pod directly (no NAT)", direct),
    ];
    for (_, label, f) in &rows {
        println!(
            "{label:<30} {:>12.0} {:>10.1} {:>10.1} {:>7}",
            f.conn_per_s, f.p50_us, f.p99_us, f.failed
        );
    }
    for (key, _, f) in &rows {
        println!(
            "BENCH nodeport path={key} conn_per_s={:.0} p50_us={:.1} p99_us={:.1} failed={}",
            f.conn_per_s, f.p50_us, f.p99_us, f.failed
        );
    }
}
