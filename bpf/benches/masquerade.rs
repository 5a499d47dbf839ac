//! Benchmark for BPF masquerade (not a test; prints figures side by side):
//! TCP connections/s and connect latency (p50, p99) from a pod to a host
//! outside the cluster network (one that cannot route pod addresses back)
//! through
//!   - BPF masquerade (nat.h: SNAT in to_netdev, reverse in from_netdev),
//!   - iptables `MASQUERADE` in the node namespace (netfilter conntrack),
//!   - no NAT at all, the outside host routing the pod CIDR (the limit).
//!
//! The node's TC programs stay attached in every row (conntrack and policy
//! cost the same); only the translation differs. Each connection is new
//! (a new source port), so every row pays for a new translation.
//! Env: MESH_BENCH_CONNS (default 2000).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/connect_figures.rs"]
mod connect_figures;

use connect_figures::parse;

use std::net::Ipv4Addr;

use common::Node;
use mesh_bpf::{Datapath, MasqueradeConfig};
use mesh_testbed::{BpfDir, Bridge, NetNs, require_root};

fn main() {
    require_root();
    let conns: String = std::env::var("MESH_BENCH_CONNS").unwrap_or_else(|_| "2000".into());
    let dir = BpfDir::new();
    let mut dp = Datapath::load(dir.path()).expect("load datapath");
    let node = Node::new();
    let client = node.add_pod(1, "client", 1001);
    node.attach(&mut dp, &[&client]);
    let underlay = Bridge::new();
    underlay.attach(&node.ns, "eth0", "192.168.77.1/24");
    let outside = NetNs::new("out");
    underlay.attach(&outside, "eth0", "192.168.77.9/24");
    client.ns.run_ok(
        "ip",
        &["route", "add", "192.168.77.0/24", "via", "169.254.1.1"],
    );
    outside.spawn(
        env!("CARGO_BIN_EXE_mesh-bpf-probe"),
        &["serve", "--port", "8080", "--name", "outside"],
    );
    let path = node.netns_path();
    mesh_bpf::netns::in_netns(&path, || dp.attach_node_interface("eth0"))
        .unwrap()
        .expect("attach node programs");
    let mut masq = dp.masquerade().unwrap();
    masq.sync_exempt(&[(Ipv4Addr::new(10, 244, 0, 0), 16)].into_iter().collect())
        .unwrap();
    let config = MasqueradeConfig {
        node_addr: Ipv4Addr::new(192, 168, 77, 1),
        masquerade: true,
        pod_cidr: (Ipv4Addr::new(10, 244, 1, 0), 24),
        ports: 61000..=65535,
    };
    let run = |what: &str| {
        // Warm up (and wait for the server), then measure.
        let _ = client.probe(&["connect", "192.168.77.9:8080", "--count", "50"]);
        let f = parse(&client.probe(&["connect", "192.168.77.9:8080", "--count", &conns]));
        eprintln!("bench: {what}: {f:?}");
        f
    };

    masq.set_config(Some(&config)).unwrap();
    let bpf = run("BPF masquerade");
    masq.set_config(None).unwrap();
    let rule = [
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.244.1.0/24",
        "-o",
        "eth0",
        "-j",
        "MASQUERADE",
    ];
    node.ns.run_ok("iptables", &rule);
    let ipt = run("iptables MASQUERADE");
    let mut del = rule;
    del[2] = "-D";
    node.ns.run_ok("iptables", &del);
    outside.run_ok(
        "ip",
        &["route", "add", "10.244.1.0/24", "via", "192.168.77.1"],
    );
    let direct = run("no NAT (routed pod CIDR)");

    println!(
        "\nSNAT'd egress: {conns} new TCP connections from a pod to a host outside the cluster network"
    );
    println!(
        "{:<30} {:>12} {:>10} {:>10} {:>7}",
        "path", "conn/s", "p50 us", "p99 us", "failed"
    );
    let rows = [
        ("bpf", "BPF masquerade", bpf),
        ("iptables", "iptables MASQUERADE", ipt),
        ("direct", "no NAT (the limit)", direct),
    ];
    for (_, label, f) in &rows {
        println!(
            "{label:<30} {:>12.0} {:>10.1} {:>10.1} {:>7}",
            f.conn_per_s, f.p50_us, f.p99_us, f.failed
        );
    }
    for (key, _, f) in &rows {
        println!(
            "BENCH masquerade_egress path={key} conn_per_s={:.0} p50_us={:.1} p99_us={:.1} failed={}",
            f.conn_per_s, f.p50_us, f.p99_us, f.failed
        );
    }
}
