use super::*;
use mesh_agent_api::encryption::{EncryptionStatus, PeerReport};

fn node(name: &str, handshake: Option<u64>, published: bool) -> EncryptionReport {
    EncryptionReport {
        node: name.into(),
        cluster: "c1".into(),
        mode: "wireguard".into(),
        strict_mode: false,
        node_encryption: false,
        device: Some(EncryptionStatus {
            device_pid: None,
            enabled: true,
            interface: Some("mesh-wg0".into()),
            port: Some(51871),
            public_key: Some("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".into()),
            key_published: published,
            peers: vec![PeerReport {
                public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                endpoint: Some("192.168.7.2:51871".parse().unwrap()),
                allowed_ips: vec!["10.2.1.0/24".parse().unwrap()],
                last_handshake_seconds_ago: handshake,
                rx_bytes: 1,
                tx_bytes: 2,
            }],
            rejected: vec![],
        }),
    }
}

#[test]
fn a_healthy_mesh_has_no_problems() {
    assert!(problems(&[node("n1", Some(3), true), node("n2", Some(0), true)]).is_empty());
}

#[test]
fn a_peer_without_handshake_an_unpublished_key_and_mixed_modes_are_named() {
    let mut off = node("n3", None, false);
    off.mode = "off".into();
    off.device = None;
    let p = problems(&[node("n1", None, true), node("n2", Some(1), false), off]);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p[0].contains("n1=wireguard") && p[0].contains("n3=off"),
        "{p:#?}"
    );
    assert!(
        p[1].contains("node n1")
            && p[1].contains("AAAAAAAA…")
            && p[1].contains("192.168.7.2:51871")
            && p[1].contains("never completed a handshake")
            && p[1].contains("UDP 51871"),
        "{p:#?}"
    );
    assert!(
        p[2].contains("node n2") && p[2].contains("not on its Node"),
        "{p:#?}"
    );
}

#[test]
fn ages_and_keys_are_short() {
    assert_eq!(age(None), "never");
    assert_eq!(age(Some(5)), "5s ago");
    assert_eq!(age(Some(600)), "10m ago");
    assert_eq!(age(Some(7200)), "2h ago");
    assert_eq!(short_key("abcdefghijk"), "abcdefgh…");
    assert_eq!(short_key("abc"), "abc");
}

#[test]
fn strict_mode_without_a_device_is_named() {
    let mut closed = node("n2", Some(1), true);
    closed.strict_mode = true;
    closed.mode = "off".into();
    closed.device = None;
    let mut healthy = node("n1", Some(1), true);
    healthy.strict_mode = true;
    let p = problems(&[healthy, closed]);
    assert!(
        p.iter().any(|l| l.contains("node n2")
            && l.contains("device is not up")
            && l.contains("encryption_required")),
        "{p:#?}"
    );
    assert!(!p.iter().any(|l| l.contains("node n1:")), "{p:#?}");
}
