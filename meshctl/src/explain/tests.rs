use super::*;
use mesh_agent_api::datapath::PolicyAllow;

#[test]
fn targets_parse_with_and_without_port() {
    assert_eq!(
        parse_target("shop/web:80"),
        Ok(("shop".into(), "web".into(), Some(80)))
    );
    assert_eq!(
        parse_target("shop/web"),
        Ok(("shop".into(), "web".into(), None))
    );
    for bad in [
        "web",
        "shop/",
        "/web",
        "a/b/c",
        "shop/web:0",
        "shop/web:http",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

fn id(n: u32) -> Identity {
    Identity::from_u32(n).unwrap()
}

#[test]
fn policy_verdicts_follow_enforcement_identity_and_port() {
    let open = EndpointPolicy::default();
    let rules: std::collections::BTreeMap<u32, String> =
        [(7, "MeshNetworkPolicy shop/web ingress[0]".to_string())].into();
    let (st, why) = policy_verdict(
        &open,
        &rules,
        Direction::Ingress,
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
    p.allow.insert(PolicyAllow {
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
        let (st, why) = policy_verdict(&p, &rules, dir, Some(peer), port, "shop/web");
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
        Some(id(0x2_0101)),
        1,
        "shop/web",
    );
    assert_eq!(st, HopStatus::Pass, "egress is not enforced");
    // An unknown peer matches only an any-identity entry.
    let (st, _) = policy_verdict(&p, &rules, Direction::Ingress, None, 8080, "shop/web");
    assert_eq!(st, HopStatus::Fail);
    p.allow.insert(PolicyAllow {
        direction: Direction::Ingress,
        identity: None,
        port: 0,
        protocol: None,
        rule: 0,
    });
    let (st, _) = policy_verdict(&p, &rules, Direction::Ingress, None, 8080, "shop/web");
    assert_eq!(st, HopStatus::Pass);
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
