use super::*;
use crate::import::{Refused, RemoteStatus as ImportStatus};
use crate::status::{ClusterStatus, StoreStatus};

#[test]
fn the_report_becomes_the_document_meshctl_reads() {
    let report = StatusReport {
        cluster: ClusterStatus {
            name: "c1".into(),
            id: 1,
            pod_cidrs: vec!["10.1.0.0/16".into()],
        },
        version: "0.1.0".into(),
        leader: true,
        store: StoreStatus {
            backend: "memory".into(),
            reachable: true,
            revision: 3,
            latency_seconds: 0.0,
            error: None,
        },
        watch_clients: 2,
        remotes: vec![ImportStatus {
            name: "c2".into(),
            entry: "c2".into(),
            id: 2,
            endpoints: vec!["192.0.2.40:32379".into()],
            connected: false,
            synced: true,
            stale_since: Some("2026-11-24T05:00:00Z".into()),
            last_error: Some("connection refused".into()),
            refused: None,
            counts: BTreeMap::from([("services".to_string(), 4), ("nodes".to_string(), 2)]),
            last_event: None,
            last_event_age_seconds: Some(12.7),
            revision: 9,
            connections: 1,
        }],
        refused_entries: vec![Refused {
            entry: "c3".into(),
            reason: "pod CIDR overlaps".into(),
        }],
        refused_peers: vec![],
    };
    let doc = mesh_status(&report, "r1", 1_000);
    let json = serde_json::to_string(&doc).unwrap();
    let back = MeshStatus::parse(&json).unwrap();
    assert_eq!(back, doc);
    let c2 = &doc.remotes["c2"];
    assert_eq!(
        (c2.counts.services, c2.counts.nodes, c2.last_event_age_secs),
        (4, 2, Some(12))
    );
    assert_eq!(c2.stale_since, Some(1_795_496_400));
    assert!(
        !doc.is_synced_with("c2"),
        "synced but disconnected is not synced"
    );
    assert_eq!(
        doc.remotes["c3"].refused.as_deref(),
        Some("pod CIDR overlaps")
    );
    assert_eq!(
        (doc.cluster_id, doc.watch_clients, doc.replica.as_str()),
        (1, 2, "r1")
    );
}
