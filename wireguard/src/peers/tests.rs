use std::net::SocketAddr;

use ipnet::IpNet;
use mesh_api::WireGuardKey;

use super::{Change, PeerConfig, PeerPlan, PeerStatus, plan_peers, screen_peers};
use crate::error::Error;

fn key(n: u8) -> WireGuardKey {
    WireGuardKey::from_bytes([n; 32])
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn ep(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn want(n: u8, endpoint: Option<SocketAddr>, allowed: &[&str], ka: Option<u16>) -> PeerConfig {
    PeerConfig {
        public_key: key(n),
        endpoint,
        allowed_ips: nets(allowed),
        persistent_keepalive: ka,
    }
}

fn have(n: u8, endpoint: Option<SocketAddr>, allowed: &[&str], ka: Option<u16>) -> PeerStatus {
    PeerStatus {
        public_key: key(n),
        endpoint,
        allowed_ips: nets(allowed),
        persistent_keepalive: ka,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    }
}

/// What screening made of each desired peer: accepted, or the error kind.
fn verdicts(own: u8, desired: &[PeerConfig]) -> (Vec<WireGuardKey>, Vec<String>) {
    let (accepted, rejected) = screen_peers(&key(own), desired);
    let accepted = accepted.iter().map(|p| p.public_key).collect();
    let rejected = rejected
        .iter()
        .map(|e| match e {
            Error::SelfPeer { peer } => format!("self {}", peer.as_bytes()[0]),
            Error::DuplicatePeer { peer } => format!("duplicate {}", peer.as_bytes()[0]),
            Error::AllowedIpsOverlap {
                peer,
                prefix,
                other,
                other_prefix,
            } => format!(
                "overlap {} {prefix} with {} {other_prefix}",
                peer.as_bytes()[0],
                other.as_bytes()[0]
            ),
            other => format!("unexpected {other}"),
        })
        .collect();
    (accepted, rejected)
}

#[test]
fn screening_refuses_self_duplicates_and_overlaps_and_keeps_the_rest() {
    struct Case {
        name: &'static str,
        desired: Vec<PeerConfig>,
        accepted: Vec<u8>,
        rejected: Vec<&'static str>,
    }
    let cases = [
        Case {
            name: "all distinct",
            desired: vec![
                want(2, None, &["10.2.0.0/16"], None),
                want(3, None, &["10.3.0.0/16"], None),
            ],
            accepted: vec![2, 3],
            rejected: vec![],
        },
        Case {
            name: "own key",
            desired: vec![
                want(1, None, &["10.1.0.0/16"], None),
                want(2, None, &["10.2.0.0/16"], None),
            ],
            accepted: vec![2],
            rejected: vec!["self 1"],
        },
        Case {
            name: "repeated key: the first wins",
            desired: vec![
                want(2, None, &["10.2.0.0/16"], None),
                want(2, None, &["10.9.0.0/16"], None),
            ],
            accepted: vec![2],
            rejected: vec!["duplicate 2"],
        },
        Case {
            name: "overlap with an earlier accepted peer",
            desired: vec![
                want(2, None, &["10.0.0.0/8"], None),
                want(3, None, &["fd00::/64", "10.3.0.0/16"], None),
                want(4, None, &["10.4.0.0/16"], None),
            ],
            accepted: vec![2],
            rejected: vec![
                "overlap 3 10.3.0.0/16 with 2 10.0.0.0/8",
                "overlap 4 10.4.0.0/16 with 2 10.0.0.0/8",
            ],
        },
        Case {
            name: "a refused peer does not block later ones",
            desired: vec![
                want(2, None, &["10.2.0.0/16"], None),
                want(3, None, &["10.2.1.0/24"], None),
                want(4, None, &["10.2.1.0/24"], None),
            ],
            accepted: vec![2],
            rejected: vec![
                "overlap 3 10.2.1.0/24 with 2 10.2.0.0/16",
                "overlap 4 10.2.1.0/24 with 2 10.2.0.0/16",
            ],
        },
        Case {
            name: "nothing desired",
            desired: vec![],
            accepted: vec![],
            rejected: vec![],
        },
    ];
    for c in cases {
        let (accepted, rejected) = verdicts(1, &c.desired);
        let accepted: Vec<u8> = accepted.iter().map(|k| k.as_bytes()[0]).collect();
        assert_eq!(accepted, c.accepted, "{}: accepted", c.name);
        assert_eq!(rejected, c.rejected, "{}: rejected", c.name);
    }
}

#[test]
fn planning_changes_only_what_differs() {
    struct Case {
        name: &'static str,
        current: Vec<PeerStatus>,
        accepted: Vec<PeerConfig>,
        remove: Vec<u8>,
        upsert: Vec<(Change, PeerConfig)>,
    }
    let cases = [
        Case {
            name: "empty table: every peer is added, normalised",
            current: vec![],
            accepted: vec![want(
                2,
                ep("192.0.2.2:51871"),
                &["10.2.0.9/16", "10.2.0.0/16", "10.1.0.0/16"],
                Some(0),
            )],
            remove: vec![],
            upsert: vec![(
                Change::Add,
                want(
                    2,
                    ep("192.0.2.2:51871"),
                    &["10.1.0.0/16", "10.2.0.0/16"],
                    None,
                ),
            )],
        },
        Case {
            name: "unchanged peer (AllowedIPs in another order) is left alone",
            current: vec![have(
                2,
                ep("192.0.2.2:51871"),
                &["10.2.0.0/16", "10.1.0.0/16"],
                Some(25),
            )],
            accepted: vec![want(
                2,
                ep("192.0.2.2:51871"),
                &["10.1.0.0/16", "10.2.0.0/16"],
                Some(25),
            )],
            remove: vec![],
            upsert: vec![],
        },
        Case {
            name: "no desired endpoint keeps the roamed one",
            current: vec![have(2, ep("198.51.100.7:4000"), &["10.2.0.0/16"], None)],
            accepted: vec![want(2, None, &["10.2.0.0/16"], None)],
            remove: vec![],
            upsert: vec![],
        },
        Case {
            name: "endpoint, AllowedIPs or keepalive changes update",
            current: vec![
                have(2, ep("192.0.2.2:51871"), &["10.2.0.0/16"], None),
                have(3, None, &["10.3.0.0/16"], None),
                have(4, None, &["10.4.0.0/16"], Some(25)),
            ],
            accepted: vec![
                want(2, ep("192.0.2.22:51871"), &["10.2.0.0/16"], None),
                want(3, None, &["10.3.0.0/16", "10.33.0.0/16"], None),
                want(4, None, &["10.4.0.0/16"], None),
            ],
            remove: vec![],
            upsert: vec![
                (
                    Change::Update,
                    want(2, ep("192.0.2.22:51871"), &["10.2.0.0/16"], None),
                ),
                (
                    Change::Update,
                    want(3, None, &["10.3.0.0/16", "10.33.0.0/16"], None),
                ),
                (Change::Update, want(4, None, &["10.4.0.0/16"], None)),
            ],
        },
        Case {
            name: "peers no longer desired are removed, new ones added",
            current: vec![
                have(2, None, &["10.2.0.0/16"], None),
                have(3, None, &["10.3.0.0/16"], None),
            ],
            accepted: vec![
                want(5, None, &["10.2.0.0/16"], None),
                want(3, None, &["10.3.0.0/16"], None),
            ],
            remove: vec![2],
            upsert: vec![(Change::Add, want(5, None, &["10.2.0.0/16"], None))],
        },
        Case {
            name: "nothing desired removes everything",
            current: vec![
                have(2, None, &["10.2.0.0/16"], None),
                have(3, None, &[], None),
            ],
            accepted: vec![],
            remove: vec![2, 3],
            upsert: vec![],
        },
    ];
    for c in cases {
        let accepted: Vec<&PeerConfig> = c.accepted.iter().collect();
        let plan = plan_peers(&c.current, &accepted);
        let expected = PeerPlan {
            remove: c.remove.iter().map(|n| key(*n)).collect(),
            upsert: c.upsert,
        };
        assert_eq!(plan, expected, "{}", c.name);
    }
}
