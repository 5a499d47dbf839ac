use std::collections::BTreeMap;

use std::time::Duration;

use mesh_api::{ClusterId, ClusterName};

use super::*;
use crate::testutil::{Pki, remote_entry};

fn local() -> LocalCluster {
    LocalCluster {
        name: ClusterName::new("a").unwrap(),
        id: ClusterId::new(1).unwrap(),
        pod_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
    }
}

#[test]
fn bad_entries_are_refused_one_by_one_and_the_others_kept() {
    let pki = Pki::new();
    let cert = pki.cluster("a");
    let ep = vec!["127.0.0.1:1".to_string()];
    let ca = pki.ca.cert_pem();
    let mut data = BTreeMap::new();
    data.insert(
        "b".to_string(),
        remote_entry("b", 2, &ep, ca, &cert, &["10.2.0.0/16"]),
    );
    data.insert(
        "c".to_string(),
        remote_entry("c", 2, &ep, ca, &cert, &["10.3.0.0/16"]),
    );
    data.insert(
        "d".to_string(),
        remote_entry("d", 4, &ep, ca, &cert, &["10.1.128.0/17"]),
    );
    data.insert("e".to_string(), "endpoints: [unclosed".to_string());
    data.insert("f".to_string(), remote_entry("f", 1, &ep, ca, &cert, &[]));
    data.insert(
        "g".to_string(),
        remote_entry("g", 7, &["nohostport".to_string()], ca, &cert, &[]),
    );
    let parsed = parse_clustermesh(&data, &local());
    let names: Vec<&str> = parsed.remotes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["b"]);
    let reason = |e: &str| {
        parsed
            .refused
            .iter()
            .find(|r| r.entry == e)
            .unwrap_or_else(|| panic!("entry {e} not refused"))
            .reason
            .clone()
    };
    assert!(
        reason("c").contains("duplicate cluster id 2"),
        "{}",
        reason("c")
    );
    assert!(reason("d").contains("overlap"), "{}", reason("d"));
    assert!(reason("e").contains("malformed YAML"), "{}", reason("e"));
    assert!(reason("f").contains("own id"), "{}", reason("f"));
    assert!(reason("g").contains("not host:port"), "{}", reason("g"));
    assert_eq!(parsed.refused.len(), 5);
}

#[tokio::test]
async fn directory_feed_follows_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b"), "x").unwrap();
    std::fs::write(dir.path().join("..data"), "ignored").unwrap();
    let (mut rx, task) = directory_feed(dir.path().to_path_buf(), Duration::from_millis(50)).await;
    // The first value is the first read, not a placeholder.
    assert_eq!(rx.borrow_and_update().keys().collect::<Vec<_>>(), vec!["b"]);
    std::fs::write(dir.path().join("c"), "y").unwrap();
    rx.wait_for(|d| d.contains_key("c")).await.unwrap();
    std::fs::remove_file(dir.path().join("b")).unwrap();
    let d = rx.wait_for(|d| !d.contains_key("b")).await.unwrap().clone();
    assert_eq!(d.keys().collect::<Vec<_>>(), vec!["c"]);
    task.abort();
}

#[tokio::test]
async fn endpoints_as_ip_literals_need_no_nameserver_and_bad_ones_are_named() {
    // A nameserver nobody answers on: only names would ask it.
    let resolver = EndpointResolver::new(&["127.0.0.1:9".parse().unwrap()]);
    let got = resolver
        .resolve("b", &["10.0.0.1:32379".into(), "[fd00::1]:32379".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            "10.0.0.1:32379".parse().unwrap(),
            "[fd00::1]:32379".parse().unwrap()
        ]
    );
    let e = resolver
        .resolve("b", &["10.0.0.1".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not host:port") && e.contains("\"b\""), "{e}");
    let e = resolver
        .resolve("b", &["10.0.0.1:http".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad port"), "{e}");
}

#[test]
fn a_remote_refusing_us_is_named_with_what_to_check() {
    let b = mesh_api::ClusterName::new("b").unwrap();
    let a = mesh_api::ClusterName::new("a").unwrap();
    let revoked = session::refused_by_remote(
        &b,
        &a,
        r#"export server 127.0.0.1:1: status: PermissionDenied, message: "access revoked on the open stream: cluster a is not configured here", details: []"#,
    )
    .unwrap();
    assert!(
        revoked.starts_with("b revoked our access (cluster a is not configured here)")
            && revoked.contains("clustermesh config"),
        "{revoked}"
    );
    let handshake = session::refused_by_remote(
        &b,
        &a,
        "transport error: received fatal alert: CertificateUnknown",
    )
    .unwrap();
    assert!(
        handshake.contains("TLS alert CertificateUnknown") && handshake.contains("meshctl connect"),
        "{handshake}"
    );
    assert_eq!(
        session::refused_by_remote(&b, &a, "connection refused"),
        None
    );
}

/// A cluster removed from the config while no replica was watching (or
/// another one led) leaves records behind; the next apply withdraws them,
/// and leaves alone the local cluster, configured remotes and entries that
/// are refused (a typo must not wipe a remote's state).
#[tokio::test]
async fn apply_sweeps_state_of_clusters_no_longer_configured() {
    use crate::store::MemoryStore;
    let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::new(1000));
    for cluster in ["a", "b", "e", "gone"] {
        Writer::new(
            store.clone(),
            ClusterName::new(cluster).unwrap(),
            Leadership::always(),
        )
        .mark_synced(mesh_api::Kind::Node)
        .await
        .unwrap();
    }
    let pki = Pki::new();
    let cert = pki.cluster("a");
    let mut data = BTreeMap::new();
    data.insert(
        "b".to_string(),
        remote_entry(
            "b",
            2,
            &["127.0.0.1:1".to_string()],
            pki.ca.cert_pem(),
            &cert,
            &["10.2.0.0/16"],
        ),
    );
    data.insert("e".to_string(), "endpoints: [unclosed".to_string());
    let importer = Importer::new(
        store.clone(),
        local(),
        Leadership::always(),
        ImportSettings::default(),
    );
    importer.apply(&data).await;
    let (left, _) = store.list(crate::state::ROOT).await.unwrap();
    let mut clusters: Vec<String> = left
        .iter()
        .filter_map(|kv| match crate::state::parse_key(&kv.key).unwrap() {
            crate::state::ParsedKey::Synced { cluster, .. } => Some(cluster),
            crate::state::ParsedKey::Record { .. } => None,
        })
        .collect();
    clusters.sort();
    assert_eq!(clusters, vec!["a", "b", "e"]);
    assert_eq!(importer.swept(), 1);
    assert!(!importer.sweep_failed());

    // A replica that only believes it leads (paused past its lease) has
    // its sweep refused by the store's fence: the state stays, the failure
    // is flagged so the sweep is retried.
    Writer::new(
        store.clone(),
        ClusterName::new("gone").unwrap(),
        Leadership::always(),
    )
    .mark_synced(mesh_api::Kind::Node)
    .await
    .unwrap();
    let paused = Importer::new(
        store.clone(),
        local(),
        Leadership::believed("meshwork/internal/a/leader", "paused-replica"),
        ImportSettings::default(),
    );
    paused.apply(&data).await;
    assert_eq!(paused.swept(), 0);
    assert!(paused.sweep_failed());
    let (left, _) = store
        .list(&crate::state::cluster_prefix("gone"))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
}
