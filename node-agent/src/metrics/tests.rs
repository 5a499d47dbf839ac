use std::collections::BTreeMap;

use super::*;
use crate::encryption::{EncryptionStatus, PeerReport};
use crate::feed::mesh::MeshFeedStatus;
use crate::node_sync::RoutingStatus;

#[test]
fn feed_metrics_are_grouped_under_their_help_and_type() {
    let mesh = MeshFeedStatus {
        connected: true,
        synced: true,
        revision: 42,
        last_event_seconds_ago: None,
        connects: 2,
        counts: BTreeMap::from([("nodes".to_string(), 3), ("services".to_string(), 0)]),
        certificate_expiry_seconds: Some(3600),
        ..MeshFeedStatus::default()
    };
    let enc = EncryptionStatus {
        enabled: true,
        peers: vec![PeerReport {
            public_key: "k1".into(),
            endpoint: None,
            allowed_ips: vec![],
            last_handshake_seconds_ago: Some(7),
            rx_bytes: 0,
            tx_bytes: 0,
        }],
        ..EncryptionStatus::default()
    };
    let text = render_feeds(Some(&mesh), Some(&enc), &RoutingStatus::default());
    // Every sample belongs to the family whose TYPE line came last.
    let mut family = String::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, family, "sample outside its family: {line}\n{text}");
            samples.insert(
                line.rsplit_once(' ').unwrap().0.to_string(),
                line.rsplit_once(' ').unwrap().1.to_string(),
            );
        }
    }
    assert_eq!(samples["meshwork_mesh_feed_connected"], "1");
    assert_eq!(samples["meshwork_mesh_feed_revision"], "42");
    assert_eq!(samples["meshwork_mesh_feed_last_event_age_seconds"], "-1");
    assert_eq!(samples["meshwork_mesh_feed_records{kind=\"nodes\"}"], "3");
    assert_eq!(
        samples["meshwork_wireguard_handshake_age_seconds{peer=\"k1\"}"],
        "7"
    );
    assert_eq!(samples["meshwork_node_routes"], "0");
    assert_eq!(
        samples["meshwork_certificate_expiry_seconds{certificate=\"node-agent\"}"],
        "3600"
    );
    let without = render_feeds(None, None, &RoutingStatus::default());
    assert!(
        !without.contains("mesh_feed") && !without.contains("wireguard"),
        "{without}"
    );
}

#[test]
fn datapath_counters_are_labelled_by_reason_name() {
    let gauges = Gauges {
        packets: vec![
            crate::datapath::PacketCounter {
                reason: mesh_bpf::DropReason::Forwarded.name().into(),
                packets: 10,
                bytes: 1000,
            },
            crate::datapath::PacketCounter {
                reason: mesh_bpf::DropReason::EncryptionRequired.name().into(),
                packets: 3,
                bytes: 252,
            },
        ],
        ..Gauges::default()
    };
    let text = Metrics::default().render(&gauges);
    for line in [
        "meshwork_datapath_packets_total{reason=\"forwarded\"} 10",
        "meshwork_datapath_packets_total{reason=\"encryption_required\"} 3",
        "meshwork_datapath_bytes_total{reason=\"encryption_required\"} 252",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
}
