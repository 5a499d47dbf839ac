use std::collections::BTreeMap;

use mesh_api::{IdentityRecord, NodeName};
use mesh_proto::WatchEvent;

use super::*;

fn cn(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn node(cluster: &str, name: &str, cidr: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: cn(cluster),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.0.2.9".parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    })
}

fn identity(cluster: &str, number: u32) -> Record {
    let labels: BTreeMap<String, String> =
        [("meshwork.io/cluster".to_string(), cluster.to_string())].into();
    Record::Identity(IdentityRecord {
        cluster: cn(cluster),
        id: Identity::from_u32(number).unwrap(),
        labels: LabelSet::new(labels).unwrap(),
    })
}

fn feed_with(records: Vec<Record>) -> Arc<MeshFeed> {
    let feed = MeshFeed::for_cluster("127.0.0.1:1", cn("c1"), ClusterId::new(1).unwrap());
    {
        let mut m = feed.mirror.lock().unwrap();
        m.begin_watch(0);
        for (i, record) in records.into_iter().enumerate() {
            m.apply(&WatchEvent::Upsert {
                revision: i as u64 + 1,
                record,
            });
        }
    }
    feed
}

#[test]
fn records_of_other_clusters_that_touch_this_one_are_not_used() {
    let feed = feed_with(vec![
        node("c1", "c1-n1", "10.1.1.0/24"),
        node("c2", "c2-n1", "10.2.1.0/24"),
        // c2 claiming c1's pods, and an identity numbered with c1's id.
        node("c2", "c2-evil", "10.1.0.0/16"),
        identity("c2", (2 << 16) | 300),
        identity("c2", (1 << 16) | 300),
    ]);
    let names: Vec<String> = feed.nodes().iter().map(|n| n.name.to_string()).collect();
    assert_eq!(names, vec!["c1-n1", "c2-n1"]);
    let view = feed.view();
    assert_eq!(view.nodes.len(), 2);
    let ids: Vec<u32> = view.identities.keys().map(|i| i.get()).collect();
    assert_eq!(
        ids,
        vec![(2 << 16) | 300],
        "c2 may not speak for c1's identity numbers"
    );
    let st = feed.status();
    assert_eq!(st.refused.get("nodes"), Some(&1), "{st:?}");
    assert_eq!(st.refused.get("identities"), Some(&1), "{st:?}");
    assert_eq!(st.counts.get("nodes"), Some(&3), "held, refused included");
}

#[test]
fn without_a_screen_everything_is_used() {
    let feed = MeshFeed::new("127.0.0.1:1");
    {
        let mut m = feed.mirror.lock().unwrap();
        m.begin_watch(0);
        m.apply(&WatchEvent::Upsert {
            revision: 1,
            record: node("c2", "c2-evil", "10.1.0.0/16"),
        });
    }
    assert_eq!(feed.nodes().len(), 1);
    assert!(feed.status().refused.is_empty());
}
