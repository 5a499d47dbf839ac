use std::collections::BTreeMap;

use mesh_api::{ClusterName, Identity, IdentityRecord, LabelSet};

use super::*;

fn ident(cluster: &str, id: u32) -> Record {
    let mut l = BTreeMap::new();
    l.insert("app".to_string(), format!("a{id}"));
    Record::Identity(IdentityRecord {
        cluster: ClusterName::new(cluster).unwrap(),
        id: Identity::from_u32(id).unwrap(),
        labels: LabelSet::new(l).unwrap(),
    })
}

fn up(revision: u64, record: Record) -> WatchEvent {
    WatchEvent::Upsert { revision, record }
}

#[test]
fn snapshot_after_reset_removes_only_what_disappeared() {
    let mut m = Mirror::new();
    m.begin_watch(0);
    m.apply(&up(5, ident("b", 0x20100)));
    m.apply(&up(6, ident("b", 0x20101)));
    m.apply(&WatchEvent::SyncComplete {
        revision: 6,
        kinds: Kind::ALL.to_vec(),
        pending: Vec::new(),
    });
    assert!(m.synced());
    assert_eq!(m.resume_revision(), 6);
    let changes = [
        WatchEvent::Reset {
            reason: "compacted".into(),
        },
        up(9, ident("b", 0x20101)),
        up(9, ident("b", 0x20102)),
    ]
    .iter()
    .flat_map(|e| m.apply(e))
    .collect::<Vec<_>>();
    assert_eq!(
        changes,
        vec![Change::Upsert(ident("b", 0x20102))],
        "unchanged records are not re-announced"
    );
    assert_eq!(
        m.records().len(),
        3,
        "old state kept until the snapshot completes"
    );
    let gone = m.apply(&WatchEvent::SyncComplete {
        revision: 9,
        kinds: Kind::ALL.to_vec(),
        pending: Vec::new(),
    });
    assert_eq!(
        gone,
        vec![Change::Delete((Kind::Identity, "b/131328".into()))]
    );
    assert_eq!(m.records().len(), 2);
}

#[test]
fn deltas_patch_and_deletes_use_cluster_qualified_keys() {
    let mut m = Mirror::with_records([ident("b", 0x20100)]);
    m.begin_watch(7);
    let ch = m.apply(&WatchEvent::Delete {
        revision: 8,
        kind: Kind::Identity,
        key: "b/131328".into(),
    });
    assert_eq!(ch.len(), 1);
    assert!(m.records().is_empty());
    assert_eq!(m.revision(), 8);
}

/// A snapshot from a server whose store was replaced names the remote
/// clusters it does not hold yet: what the mirror holds of them stays.
#[test]
fn a_snapshot_keeps_what_it_holds_of_pending_clusters() {
    let mut m = Mirror::with_records([ident("b", 0x20100), ident("c", 0x30100)]);
    m.begin_watch(0);
    let gone = m.apply(&WatchEvent::SyncComplete {
        revision: 3,
        kinds: Kind::ALL.to_vec(),
        pending: vec!["b".into()],
    });
    assert_eq!(
        gone,
        vec![Change::Delete((Kind::Identity, "c/196864".into()))]
    );
    assert_eq!(m.records().len(), 1, "b's identity is kept");
    // The complete snapshot that follows (b synced) prunes normally.
    m.apply(&WatchEvent::Reset {
        reason: "b synced".into(),
    });
    let gone = m.apply(&WatchEvent::SyncComplete {
        revision: 5,
        kinds: Kind::ALL.to_vec(),
        pending: Vec::new(),
    });
    assert_eq!(
        gone,
        vec![Change::Delete((Kind::Identity, "b/131328".into()))]
    );
}
