//! The encrypted lab as it stands: only WireGuard on the wire, every agent
//! and peer reported, meshctl encryption status and explain, and the MTUs
//! over a smaller underlay.

use mesh_e2e::Lab;

use super::helpers::{connect, eventually, meshctl_typed};
use super::node_agent::agent_get;
use super::requests::{pod_ip, reaches};

pub(super) fn encrypted_pod_traffic_is_only_wireguard_on_the_wire(lab: &Lab) {
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n1",
        "--namespace=shop",
        "--name=a",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=c",
    ]);
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c2",
        "--node=c2-n2",
        "--namespace=shop",
        "--name=b",
    ]);
    let (b, c) = (
        pod_ip(lab, "lab-c2", "shop", "b"),
        pod_ip(lab, "lab-c1", "shop", "c"),
    );
    // Peers come from the mesh feed: allow the first handshake and route.
    eventually("pod a reaches pod b across clusters", || {
        reaches(lab, "c1", "shop", "a", &format!("{b}:8080"))
    });
    let mut answers = vec![];
    let plain = lab.capture("net 10.0.0.0/8", || {
        answers = lab.ask("c1", "shop", "a", &format!("{b}:8080"), 3);
        answers.extend(lab.ask("c1", "shop", "a", &format!("{c}:8080"), 3));
    });
    let clusters: Vec<&str> = answers
        .iter()
        .map(|a| a["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(
        clusters,
        ["c2", "c2", "c2", "c1", "c1", "c1"],
        "cross-cluster and cross-node answers"
    );
    assert_eq!(
        plain.packets, 0,
        "pod addresses appeared on the underlay: traffic left unencrypted"
    );
    let wire = lab.capture("udp port 51871", || {
        lab.ask("c1", "shop", "a", &format!("{b}:8080"), 3);
    });
    assert!(wire.packets > 0, "no WireGuard packets on the underlay");
    assert!(
        !wire.contains("cluster=c2"),
        "the greeting is readable inside the WireGuard packets"
    );
}

pub(super) fn status_reports_wireguard_on_every_agent(lab: &Lab) {
    for c in ["c1", "c2"] {
        let (st, _) = meshctl_typed::<meshctl::report::StatusReport>(
            lab,
            &["status", "--context", &format!("lab-{c}")],
        );
        assert_eq!(
            (st.agents.ready, st.agents.encryption.as_str()),
            (2, "wireguard"),
            "{c}: {st:#?}"
        );
    }
}

pub(super) fn wg_show_reads_every_peer_with_a_handshake(lab: &Lab) {
    let out = lab.exec(
        &lab.node_ns("c1-n1"),
        std::path::Path::new("/usr/bin/wg"),
        &["show", &lab.wg_interface(1, 1), "dump"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wg show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        peers.len(),
        3,
        "c1-n1 peers with the 3 other nodes of both clusters:\n{text}"
    );
    // dump columns: public-key preshared endpoint allowed-ips latest-handshake rx tx keepalive
    let with_handshake = peers
        .iter()
        .filter(|p| p.split('\t').nth(4).is_some_and(|h| h != "0"))
        .count();
    assert!(
        with_handshake >= 2,
        "handshakes with the nodes pod a talked to:\n{text}"
    );
}

/// In the encrypted lab: `meshctl encryption status` shows every node's key
/// published and its peers; the peer no pod has talked to yet has no
/// handshake, which is named and makes the command exit 3. `meshctl explain`
/// across clusters passes the WireGuard hop with its last handshake.
pub(super) fn meshctl_encryption_status_and_explain_see_the_wireguard_peers(lab: &Lab) {
    use meshctl::report::{EncryptionStatusReport, ExplainReport, HopStatus};
    let (st, code) = meshctl_typed::<EncryptionStatusReport>(
        lab,
        &["encryption", "status", "--context", "lab-c1"],
    );
    assert_eq!(
        st.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        ["c1-n1", "c1-n2"],
        "{st:#?}"
    );
    for n in &st.nodes {
        let dev = n.device.as_ref().expect("encryption on");
        assert_eq!(n.mode, "wireguard");
        assert!(dev.key_published && dev.public_key.is_some(), "{n:#?}");
        assert_eq!(
            dev.peers.len(),
            3,
            "every other node of both clusters: {n:#?}"
        );
    }
    let n1 = st.nodes[0].device.as_ref().unwrap();
    assert!(
        n1.peers
            .iter()
            .filter(|p| p.last_handshake_seconds_ago.is_some())
            .count()
            >= 2,
        "pod a talked to c1-n2 and c2-n2: {n1:#?}"
    );
    let silent = st
        .nodes
        .iter()
        .flat_map(|n| n.device.iter().flat_map(|d| d.peers.iter()))
        .filter(|p| p.last_handshake_seconds_ago.is_none())
        .count();
    if silent > 0 {
        assert_eq!(
            code,
            Some(3),
            "a peer without handshake must fail the check: {st:#?}"
        );
        assert_eq!(st.problems.len(), silent, "{st:#?}");
        assert!(
            st.problems
                .iter()
                .all(|p| p.contains("never completed a handshake")),
            "{st:#?}"
        );
    } else {
        assert_eq!(code, Some(0), "{st:#?}");
    }

    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "--destination-context",
            "lab-c2",
            "shop/a",
            "shop/b:8080",
        ],
    );
    assert_eq!(code, Some(0), "{ex:#?}");
    assert!(ex.ok, "{ex:#?}");
    let b = &ex.backends[0];
    assert_eq!(
        (b.cluster.as_deref(), b.pod.as_deref(), b.node.as_deref()),
        (Some("c2"), Some("shop/b"), Some("c2-n2"))
    );
    let wg = b.hops.iter().find(|h| h.step == "wireguard").unwrap();
    assert!(
        wg.status == HopStatus::Pass && wg.detail.contains("last handshake"),
        "{wg:#?}"
    );
    let route = b.hops.iter().find(|h| h.step == "route").unwrap();
    assert!(
        route.status == HopStatus::Pass
            && route
                .detail
                .contains(&format!("dev {}", lab.wg_interface(1, 1))),
        "pod traffic to c2 goes through the WireGuard device: {route:#?}"
    );
}

/// The lab's underlay is 1400 bytes: the agents give the WireGuard device
/// and pods 1320 (less the tunnel's overhead), the pods' interfaces carry
/// it, and 10 MB between pods on two nodes goes through the tunnel whole.
pub(super) fn a_smaller_underlay_mtu_gives_pods_the_tunnels_and_10_mb_cross_nodes(lab: &Lab) {
    for (node, name) in [("c1-n1", "mtu-a"), ("c1-n2", "mtu-b")] {
        lab.ok(&[
            "pod",
            "add",
            "--cluster=c1",
            &format!("--node={node}"),
            "--namespace=mtu",
            &format!("--name={name}"),
            &format!("--label=app={name}"),
        ]);
    }
    let link_mtu = |ns: &str, ifname: &str| -> serde_json::Value {
        // /sys shows the namespace of whoever mounted it: ask ip instead.
        let link = std::process::Command::new("ip")
            .args(["-n", ns, "-j", "link", "show", ifname])
            .output()
            .expect("ip link");
        let v: serde_json::Value = serde_json::from_slice(&link.stdout).expect("ip -j");
        v[0]["mtu"].clone()
    };
    for node in ["c1-n1", "c1-n2"] {
        let status = agent_get(lab, "c1", node, "/v1/status");
        let wg = status["encryption"]["interface"]
            .as_str()
            .expect("a WireGuard device");
        assert_eq!(link_mtu(&lab.node_ns(node), wg), 1320, "{node}'s {wg}");
        let mtu = status["mtu"].clone();
        assert_eq!(
            (
                mtu["underlay"].as_u64(),
                mtu["tunnel"].as_u64(),
                mtu["pod"].as_u64()
            ),
            (Some(1400), Some(1320), Some(1320)),
            "{node}: {mtu}"
        );
    }
    for name in ["mtu-a", "mtu-b"] {
        let ns = lab.pod_ns("c1", "mtu", name);
        assert_eq!(link_mtu(&ns, "eth0"), 1320, "{name}'s eth0");
    }
    // 10 MB to mtu-b's echo server and back, every byte checked: full-size
    // segments both ways through the tunnel.
    let server = format!("{}:8080", pod_ip(lab, "lab-c1", "mtu", "mtu-b"));
    let out = lab.exec(
        &lab.pod_ns("c1", "mtu", "mtu-a"),
        &mesh_e2e::bin("mesh-echo"),
        &["transfer", &server, "--bytes", "10485760"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "transfer report: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["echoed"], 10485760, "{report}");
    assert_eq!(report["answer"]["pod"], "mtu/mtu-b", "{report}");
    for (node, name) in [("c1-n1", "mtu-a"), ("c1-n2", "mtu-b")] {
        lab.ok(&[
            "pod",
            "del",
            "--cluster=c1",
            &format!("--node={node}"),
            "--namespace=mtu",
            &format!("--name={name}"),
        ]);
    }
}
