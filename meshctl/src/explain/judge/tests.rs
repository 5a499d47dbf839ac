use super::*;
use mesh_agent_api::datapath::PolicyMatch;

fn id(n: u32) -> Identity {
    Identity::from_u32(n).unwrap()
}

#[test]
fn policy_verdicts_follow_enforcement_identity_and_port() {
    let open = EndpointPolicy::default();
    let rules: std::collections::BTreeMap<u32, String> = [
        (7, "MeshNetworkPolicy shop/web ingress[0]".to_string()),
        (9, "MeshNetworkPolicy shop/web ingressDeny[0]".to_string()),
    ]
    .into();
    let (st, why) = policy_verdict(
        &open,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        Some(id(0x2_0100)),
        8080,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Pass);
    assert!(why.contains("not enforced"), "{why}");

    let mut p = EndpointPolicy {
        ingress_enforced: true,
        ..Default::default()
    };
    p.allow.insert(PolicyMatch {
        direction: Direction::Ingress,
        identity: Some(id(0x2_0100)),
        port: 8080,
        protocol: Some(mesh_api::Protocol::Tcp),
        rule: 7,
    });
    let (st, why) = policy_verdict(
        &p,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        Some(id(0x2_0100)),
        8080,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Pass, "{why}");
    assert!(
        why.contains("identity 131328")
            && why.contains("port 8080")
            && why.contains("rule MeshNetworkPolicy shop/web ingress[0]"),
        "{why}"
    );
    // Another identity, another port, or egress: default deny.
    for (peer, port, dir) in [
        (id(0x2_0101), 8080, Direction::Ingress),
        (id(0x2_0100), 9090, Direction::Ingress),
    ] {
        let (st, why) = policy_verdict(&p, &rules, dir, id(0x1_0100), Some(peer), port, "shop/web");
        assert_eq!(st, HopStatus::Fail, "{why}");
        assert!(why.contains("policy_default_deny"), "{why}");
        assert!(
            why.contains("selected by MeshNetworkPolicy shop/web"),
            "the deciding policy is named: {why}"
        );
    }
    let (st, _) = policy_verdict(
        &p,
        &rules,
        Direction::Egress,
        id(0x1_0100),
        Some(id(0x2_0101)),
        1,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Pass, "egress is not enforced");
    // An unknown peer matches only an any-identity entry.
    let (st, _) = policy_verdict(
        &p,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        None,
        8080,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Fail);
    p.allow.insert(PolicyMatch {
        direction: Direction::Ingress,
        identity: None,
        port: 0,
        protocol: None,
        rule: 0,
    });
    let (st, _) = policy_verdict(
        &p,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        None,
        8080,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Pass);
    // A deny for one identity on every port wins over the more specific
    // allow of that identity on 8080, and over the allow of any peer.
    p.deny.insert(PolicyMatch {
        direction: Direction::Ingress,
        identity: Some(id(0x2_0100)),
        port: 0,
        protocol: None,
        rule: 9,
    });
    let (st, why) = policy_verdict(
        &p,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        Some(id(0x2_0100)),
        8080,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Fail, "{why}");
    assert!(
        why.contains("policy_denied")
            && why.contains("rule MeshNetworkPolicy shop/web ingressDeny[0]"),
        "{why}"
    );
    let (st, why) = policy_verdict(
        &p,
        &rules,
        Direction::Ingress,
        id(0x1_0100),
        Some(id(0x2_0101)),
        8080,
        "shop/web",
    );
    assert_eq!(
        st,
        HopStatus::Pass,
        "another identity is still allowed: {why}"
    );
}

#[test]
fn a_cluster_entry_admits_the_endpoints_own_cluster_and_its_nodes_only() {
    let mut p = EndpointPolicy {
        egress_enforced: true,
        ..Default::default()
    };
    p.allow.insert(PolicyMatch {
        direction: Direction::Egress,
        identity: Some(Identity::CLUSTER_PEERS),
        port: 443,
        protocol: Some(mesh_api::Protocol::Tcp),
        rule: 7,
    });
    let rules = Default::default();
    let own = id(0x1_0100);
    for (peer, admitted) in [
        (id(0x1_0205), true),
        (id(1), true),
        (id(6), true),
        (id(0x2_0100), false),
        (id(2), false),
        (id(7), false),
        (Identity::node_local(3).unwrap(), false),
    ] {
        let (st, why) = policy_verdict(&p, &rules, Direction::Egress, own, Some(peer), 443, "a");
        assert_eq!(
            st == HopStatus::Pass,
            admitted,
            "peer {}: {why}",
            peer.get()
        );
    }
    assert!(identity_text(Identity::CLUSTER_PEERS).contains("any peer of this cluster"));
}

#[test]
fn the_summary_is_the_first_failing_hop() {
    let hops = vec![
        hop("source", HopStatus::Pass, "ok"),
        hop("wireguard", HopStatus::Skip, "off"),
        hop("route", HopStatus::Fail, "no ipcache entry"),
        hop("ingress policy", HopStatus::Fail, "denied"),
    ];
    assert_eq!(
        hop_summary(&hops).as_deref(),
        Some("route: no ipcache entry")
    );
    assert_eq!(hop_summary(&hops[..2]), None);
}

#[test]
fn reserved_identities_are_named() {
    assert_eq!(identity_text(id(5)), "5 (init)");
    assert_eq!(identity_text(id(2)), "2 (world)");
    assert_eq!(identity_text(id(0x2_0100)), "131328");
}

fn encryption(strict: bool, handshake: Option<u64>) -> meshctl::report::EncryptionReport {
    meshctl::report::EncryptionReport {
        node: "c1-n1".into(),
        cluster: "c1".into(),
        mode: "wireguard".into(),
        strict_mode: strict,
        node_encryption: false,
        device: Some(mesh_agent_api::encryption::EncryptionStatus {
            device_pid: None,
            enabled: true,
            interface: Some("mesh-wg0".into()),
            port: Some(51871),
            public_key: Some("k".into()),
            key_published: true,
            peers: vec![mesh_agent_api::encryption::PeerReport {
                public_key: "PEERKEY0123456789".into(),
                endpoint: Some("192.168.7.2:51871".parse().unwrap()),
                allowed_ips: vec!["10.2.1.0/24".parse().unwrap()],
                last_handshake_seconds_ago: handshake,
                rx_bytes: 0,
                tx_bytes: 0,
            }],
            rejected: vec![],
        }),
    }
}

#[test]
fn the_wireguard_hop_names_the_peer_its_handshake_and_strict_mode() {
    let ip: IpAddr = "10.2.1.7".parse().unwrap();
    let other: IpAddr = "10.3.1.7".parse().unwrap();
    let h = wireguard_hop(&encryption(false, Some(4)), "c1-n1", ip, false);
    assert_eq!(h.status, HopStatus::Pass, "{h:?}");
    assert!(
        h.detail.contains("PEERKEY0…") && h.detail.contains("4s ago"),
        "{h:?}"
    );
    let h = wireguard_hop(&encryption(false, None), "c1-n1", ip, false);
    assert_eq!(h.status, HopStatus::Fail, "{h:?}");
    assert!(h.detail.contains("never completed a handshake"), "{h:?}");
    // No peer holds the address: dropped in strict mode, in the clear otherwise.
    let h = wireguard_hop(&encryption(true, Some(1)), "c1-n1", other, false);
    assert_eq!(h.status, HopStatus::Fail, "{h:?}");
    assert!(h.detail.contains("strict mode drops"), "{h:?}");
    let h = wireguard_hop(&encryption(false, Some(1)), "c1-n1", other, false);
    assert_eq!(h.status, HopStatus::Skip, "{h:?}");
    assert!(h.detail.contains("sent unencrypted"), "{h:?}");
    // Same node, or encryption off: nothing to check.
    let h = wireguard_hop(&encryption(true, None), "c1-n1", ip, true);
    assert_eq!(h.status, HopStatus::Skip);
    let off = meshctl::report::EncryptionReport {
        mode: "off".into(),
        device: None,
        ..encryption(false, None)
    };
    let h = wireguard_hop(&off, "c1-n1", ip, false);
    assert!(
        h.status == HopStatus::Skip && h.detail.contains("encryption is off"),
        "{h:?}"
    );
}

fn service_entry(ip: &str, port: u16, backends: &[(&str, u16)]) -> ServiceEntry {
    serde_json::from_value(serde_json::json!({
        "frontend": {"ip": ip, "port": port, "protocol": "TCP", "kind": "cluster-ip"},
        "backends": backends.iter().map(|(ip, port)| serde_json::json!({"ip": ip, "port": port})).collect::<Vec<_>>(),
        "affinity_timeout": null,
    }))
    .unwrap()
}

fn facts(ports: &[u16], cluster_ip: Option<&str>) -> ServiceFacts {
    ServiceFacts {
        name: "shop/web".into(),
        ports: ports.to_vec(),
        cluster_ip: cluster_ip.map(|ip| ip.parse().unwrap()),
    }
}

/// What, the Service, the port asked, the datapath, and the targets or the failure.
type ServiceCase<'a> = (
    &'a str,
    ServiceFacts,
    Option<u16>,
    &'a [ServiceEntry],
    Result<usize, &'a str>,
);

#[test]
fn the_service_hop_stops_at_the_first_thing_missing() {
    let vip = "10.96.0.10";
    let served = [service_entry(
        vip,
        80,
        &[("10.1.1.5", 8080), ("10.2.1.5", 8080)],
    )];
    let empty = [service_entry(vip, 80, &[])];
    let cases: [ServiceCase; 6] = [
        (
            "first port",
            facts(&[80, 443], Some(vip)),
            None,
            &served,
            Ok(2),
        ),
        (
            "port asked",
            facts(&[80], Some(vip)),
            Some(80),
            &served,
            Ok(2),
        ),
        (
            "no such port",
            facts(&[80], Some(vip)),
            Some(81),
            &served,
            Err("has no port 81"),
        ),
        (
            "no ports",
            facts(&[], Some(vip)),
            None,
            &served,
            Err("has no ports"),
        ),
        (
            "headless",
            facts(&[80], None),
            None,
            &served,
            Err("headless"),
        ),
        (
            "no frontend",
            facts(&[443], Some(vip)),
            None,
            &served,
            Err("no frontend 10.96.0.10:443"),
        ),
    ];
    for (what, svc, wanted, datapath, want) in cases {
        let got = service_frontend(&svc, wanted, datapath, None, "c1-n1");
        match (got, want) {
            (Ok(f), Ok(n)) => {
                assert_eq!(f.targets.len(), n, "{what}");
                assert_eq!(f.vip.to_string(), vip, "{what}");
                assert_eq!(f.hop.status, HopStatus::Pass, "{what}");
                assert!(
                    f.hop.detail.contains("not global"),
                    "{what}: {}",
                    f.hop.detail
                );
            }
            (Err(h), Err(needle)) => {
                assert_eq!(h.status, HopStatus::Fail, "{what}");
                assert!(h.detail.contains(needle), "{what}: {}", h.detail);
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
    let h = service_frontend(&facts(&[80], Some(vip)), None, &empty, None, "c1-n1").unwrap_err();
    assert!(
        h.detail.contains("no_service_backend") && h.detail.contains("not global"),
        "{}",
        h.detail
    );
}

fn remote(
    connected: bool,
    synced: bool,
    stale_since: Option<u64>,
) -> mesh_api::clustermesh::RemoteStatus {
    mesh_api::clustermesh::RemoteStatus {
        name: "c2".into(),
        connected,
        synced,
        stale_since,
        last_error: Some("connection refused".into()),
        ..Default::default()
    }
}

#[test]
fn the_remote_cluster_hop_follows_the_mesh_apiserver() {
    let status = |r: Option<mesh_api::clustermesh::RemoteStatus>| MeshStatus {
        cluster: "c1".into(),
        cluster_id: 1,
        pod_cidrs: vec![],
        version: "0.1.0".into(),
        replica: "r1".into(),
        leader: true,
        updated_at: 0,
        store: Default::default(),
        watch_clients: 0,
        remotes: r.into_iter().map(|r| (r.name.clone(), r)).collect(),
        refused_entries: vec![],
        refused_peers: vec![],
        refused_exports: Vec::new(),
        certificates: Vec::new(),
        swept_clusters: 0,
    };
    assert_eq!(
        remote_cluster_hop(Some(&status(None)), "c1", "c1"),
        None,
        "own cluster"
    );
    for (what, st, want, needle) in [
        (
            "synced",
            Some(status(Some(remote(true, true, None)))),
            HopStatus::Pass,
            "connected and synced",
        ),
        (
            "stale",
            Some(status(Some(remote(false, true, Some(7))))),
            HopStatus::Fail,
            "unreachable since 7",
        ),
        (
            "not synced",
            Some(status(Some(remote(true, false, None)))),
            HopStatus::Fail,
            "connected, not synced",
        ),
        (
            "down",
            Some(status(Some(remote(false, false, None)))),
            HopStatus::Fail,
            "not connected (connection refused)",
        ),
        (
            "unknown",
            Some(status(None)),
            HopStatus::Fail,
            "run meshctl connect",
        ),
        ("no status", None, HopStatus::Fail, "run meshctl connect"),
    ] {
        let h = remote_cluster_hop(st.as_ref(), "c2", "c1").unwrap();
        assert_eq!(h.status, want, "{what}");
        assert!(h.detail.contains(needle), "{what}: {}", h.detail);
    }
}

#[test]
fn the_route_hop_prefers_the_own_pod_cidr_then_the_longest_route() {
    let routes: Vec<Route> = serde_json::from_value(serde_json::json!([
        {"dst": "10.2.0.0/16", "next_hop": {"via": "192.168.77.20"}},
        {"dst": "10.2.1.0/24", "next_hop": {"dev": "mw-wg0"}},
    ]))
    .unwrap_or_else(|e| panic!("route fixture: {e}"));
    let own: IpNet = "10.1.1.0/24".parse().unwrap();
    let entry = IpcacheEntry {
        cidr: "10.2.1.5/32".parse().unwrap(),
        identity: id(131_328),
        node_ip: None,
        encrypt: true,
    };
    for (what, ip, want, same, needle) in [
        (
            "own node",
            "10.1.1.7",
            HopStatus::Pass,
            true,
            "on c1-n1 itself",
        ),
        (
            "longest route",
            "10.2.1.5",
            HopStatus::Pass,
            false,
            "routes 10.2.1.0/24 dev mw-wg0",
        ),
        (
            "shorter route",
            "10.2.9.5",
            HopStatus::Pass,
            false,
            "routes 10.2.0.0/16 via 192.168.77.20",
        ),
        (
            "no route",
            "10.9.0.1",
            HopStatus::Fail,
            false,
            "has no route to 10.9.0.1",
        ),
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let (h, same_node) = route_hop("c1-n1", Some(own), &routes, &[], Some(&entry), ip);
        assert_eq!((h.status, same_node), (want, same), "{what}: {}", h.detail);
        assert!(h.detail.contains(needle), "{what}: {}", h.detail);
        assert!(
            h.detail.contains("identity 131328, encrypt"),
            "{what}: {}",
            h.detail
        );
    }
    let (h, _) = route_hop(
        "c1-n1",
        None,
        &routes,
        &[],
        None,
        "10.2.1.5".parse().unwrap(),
    );
    assert!(
        h.detail.contains("no ipcache entry") && h.detail.contains("(world)"),
        "{}",
        h.detail
    );
}

fn endpoint(ip: &str, identity: u32) -> Endpoint {
    serde_json::from_value(serde_json::json!({
        "id": 7, "container_id": "c", "ifname": "eth0", "netns": "/run/netns/x",
        "host_ifname": "mw1", "host_ifindex": 9, "ips": [ip], "identity": identity,
    }))
    .unwrap()
}

#[test]
fn the_far_end_says_what_it_could_check() {
    let ip: IpAddr = "10.2.1.5".parse().unwrap();
    let src: IpAddr = "10.1.1.7".parse().unwrap();
    let pod = |agent: Result<FarAgent, String>| {
        FarEvidence::Pod(FarPod {
            pod: "shop/web-1".into(),
            node: "c2-n1".into(),
            cluster: Some("c2".into()),
            agent,
        })
    };
    let agent = |eps: Vec<Endpoint>| FarAgent {
        endpoints: eps,
        policies: vec![],
        ipcache: vec![],
    };
    let steps = |hops: Vec<Hop>| -> Vec<(String, HopStatus)> {
        hops.into_iter().map(|h| (h.step, h.status)).collect()
    };
    let s = |step: &str, st: HopStatus| (step.to_string(), st);
    assert_eq!(
        steps(far_end_hops(
            &FarEvidence::NoContext {
                cluster: Some("c2".into())
            },
            ip,
            80,
            src
        )),
        vec![s("destination", HopStatus::Skip)]
    );
    assert_eq!(
        steps(far_end_hops(
            &FarEvidence::NoPod {
                context: "lab-c2".into()
            },
            ip,
            80,
            src
        )),
        vec![s("destination", HopStatus::Fail)]
    );
    assert_eq!(
        steps(far_end_hops(&pod(Err("unreachable".into())), ip, 80, src)),
        vec![s("destination", HopStatus::Skip)]
    );
    assert_eq!(
        steps(far_end_hops(
            &pod(Ok(agent(vec![endpoint("10.2.1.6", 131_329)]))),
            ip,
            80,
            src
        )),
        vec![s("destination", HopStatus::Fail)]
    );
    let hops = far_end_hops(
        &pod(Ok(agent(vec![endpoint("10.2.1.5", 131_329)]))),
        ip,
        80,
        src,
    );
    assert_eq!(
        steps(hops.clone()),
        vec![
            s("destination", HopStatus::Pass),
            s("ingress policy", HopStatus::Pass)
        ]
    );
    assert!(
        hops[0]
            .detail
            .contains("shop/web-1 on node c2-n1 (cluster c2), identity 131329"),
        "{}",
        hops[0].detail
    );
    assert!(
        hops[1].detail.contains("ingress not enforced"),
        "{}",
        hops[1].detail
    );
}

#[test]
fn the_verdict_needs_clean_hops_and_one_passing_backend() {
    let backend = |ok: bool| meshctl::report::BackendPath {
        ip: if ok { "10.2.1.5" } else { "10.2.1.6" }.into(),
        port: 8080,
        cluster: None,
        pod: None,
        node: None,
        hops: vec![hop(
            "route",
            if ok { HopStatus::Pass } else { HopStatus::Fail },
            "r",
        )],
        ok,
    };
    let report = |hops: Vec<Hop>, backends: Vec<meshctl::report::BackendPath>| ExplainReport {
        source: "shop/a".into(),
        destination: "shop/web".into(),
        hops,
        backends,
        flows: vec![],
        ok: false,
        summary: String::new(),
    };
    let r = finish(report(vec![], vec![backend(true), backend(false)]));
    assert!(r.ok);
    assert!(
        r.summary.contains("1 of 2 backend(s)") && r.summary.contains("10.2.1.6 (route: r)"),
        "{}",
        r.summary
    );
    let r = finish(report(vec![], vec![backend(false)]));
    assert!(!r.ok);
    assert_eq!(
        r.summary,
        "no backend passes every hop: 10.2.1.6 (route: r)"
    );
    let r = finish(report(vec![], vec![]));
    assert_eq!((r.ok, r.summary.as_str()), (false, "no backend to reach"));
    let r = finish(report(
        vec![hop("source", HopStatus::Fail, "no pod")],
        vec![backend(true)],
    ));
    assert_eq!((r.ok, r.summary.as_str()), (false, "source: no pod"));
}
