use std::collections::BTreeMap;

use mesh_api::clustermesh::{
    RecordCounts, RecordRefusal, RefusalCount, RefusedEntry, RefusedObject,
};
use mesh_api::trust::RefusalCode;

use super::*;

fn document() -> MeshStatus {
    let c2 = RemoteStatus {
        name: "c2".into(),
        id: Some(2),
        endpoints: vec!["192.0.2.40:32379".into()],
        connected: false,
        synced: true,
        stale_since: Some(1_795_496_400),
        last_error: Some("connection refused".into()),
        counts: RecordCounts {
            nodes: 2,
            services: 4,
            ..Default::default()
        },
        last_event: Some(1_795_496_388),
        last_event_age_secs: Some(12),
        refused: None,
        revision: 9,
        connections: 1,
        refused_records: RecordCounts {
            nodes: 1,
            ..Default::default()
        },
        refusals: vec![RefusalCount {
            kind: mesh_api::Kind::Node,
            code: RefusalCode::OutsidePodCidrs,
            count: 3,
        }],
        recent_refusals: vec![RecordRefusal {
            kind: mesh_api::Kind::Node,
            key: "evil".into(),
            code: RefusalCode::OutsidePodCidrs,
            reason: "node pod CIDR 128.0.0.0/1 is outside".into(),
        }],
        degraded: Some("1 record(s) over quota".into()),
    };
    MeshStatus {
        cluster: "c1".into(),
        cluster_id: 1,
        pod_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
        version: "0.1.0".into(),
        replica: "r1".into(),
        leader: true,
        updated_at: 1_795_496_401,
        store: StoreStatus {
            backend: "memory".into(),
            reachable: true,
            revision: 3,
            latency_seconds: 0.0,
            error: None,
        },
        watch_clients: 2,
        remotes: BTreeMap::from([("c2".to_string(), c2)]),
        refused_entries: vec![RefusedEntry {
            entry: "c3".into(),
            reason: "pod CIDR overlaps".into(),
        }],
        refused_peers: vec![],
        refused_exports: vec![RefusedObject {
            object: "Node evil".into(),
            reason: "pod CIDR 128.0.0.0/1 is not inside".into(),
        }],
        certificates: vec![mesh_api::clustermesh::CertificateStatus {
            name: "client/c2".into(),
            spiffe_id: Some("spiffe://meshwork.local/cluster/c1".into()),
            not_after: 1_795_496_501,
            renew_at: 1_795_496_461,
            renewed_here: true,
            renewals: 4,
            last_error: None,
        }],
        swept_clusters: 1,
    }
}

#[test]
fn the_document_served_is_the_document_meshctl_reads() {
    let doc = document();
    let json = serde_json::to_string(&doc).unwrap();
    let back = MeshStatus::parse(&json).unwrap();
    assert_eq!(back, doc);
    assert!(
        !back.is_synced_with("c2"),
        "synced but disconnected is not synced"
    );
    assert_eq!(back.refused_entry("c3"), Some("pod CIDR overlaps"));
    assert_eq!(back.refused_entry("c2"), None);
}

#[test]
fn metrics_name_each_remote_and_each_kind() {
    let text = metrics_text(&document());
    for line in [
        "meshwork_apiserver_leader{cluster=\"c1\"} 1",
        "meshwork_apiserver_watch_clients{cluster=\"c1\"} 2",
        "meshwork_remote_connected{cluster=\"c1\",remote=\"c2\"} 0",
        "meshwork_remote_stale{cluster=\"c1\",remote=\"c2\"} 1",
        "meshwork_remote_has_error{cluster=\"c1\",remote=\"c2\"} 1",
        "meshwork_remote_records{cluster=\"c1\",remote=\"c2\",kind=\"services\"} 4",
        "meshwork_remote_records{cluster=\"c1\",remote=\"c2\",kind=\"identities\"} 0",
        "meshwork_remote_last_event_age_seconds{cluster=\"c1\",remote=\"c2\"} 12",
        "meshwork_clustermesh_refused_entries{cluster=\"c1\"} 1",
        "meshwork_remote_refused_records{cluster=\"c1\",remote=\"c2\",kind=\"nodes\"} 1",
        "meshwork_remote_record_refusals_total{cluster=\"c1\",remote=\"c2\",kind=\"nodes\",reason=\"outside_pod_cidrs\"} 3",
        "meshwork_remote_degraded{cluster=\"c1\",remote=\"c2\"} 1",
        "meshwork_export_refused_objects{cluster=\"c1\"} 1",
        "meshwork_certificate_expiry_seconds{cluster=\"c1\",certificate=\"client/c2\"} 100",
        "meshwork_certificate_renewals_total{cluster=\"c1\",certificate=\"client/c2\"} 4",
        "meshwork_certificate_renewal_failing{cluster=\"c1\",certificate=\"client/c2\"} 0",
        "meshwork_remote_state_swept_total{cluster=\"c1\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}
