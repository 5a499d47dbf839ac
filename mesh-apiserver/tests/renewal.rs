//! Certificates renew themselves: cluster A imports B with a client
//! certificate B's CA issued (as `meshctl connect` writes it), about to
//! expire. A asks B to renew it over the mesh's real mTLS, writes it back
//! into its clustermesh entry and swaps it in live; when the old one
//! expires, B cuts the stream it authorized (revocation on expiry) and A
//! reconnects with the new one, and B's changes keep flowing. Without a
//! signer, B refuses, and A's status says what to do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_api::clustermesh::{CertificateStatus, RemoteStatus};
use mesh_api::{ClusterName, NodeName, NodeRecord, Record};
use mesh_apiserver::import::ImportSettings;
use mesh_apiserver::renew::{ClientRenewal, DirectoryEntries, Renewal, Signer};
use mesh_apiserver::server::Running;
use mesh_apiserver::state;
use mesh_apiserver::store::{MemoryStore, Store};
use mesh_apiserver::testutil::{
    Pki, clustermesh_config, in_process_cluster_renewing, init, remote_entry,
};
use mesh_certs::{TlsIdentity, Validity};
use time::OffsetDateTime;

fn node(name: &str) -> Record {
    Record::Node(NodeRecord {
        cluster: ClusterName::new("b").unwrap(),
        name: NodeName::new(name).unwrap(),
        ips: vec!["192.0.2.2".parse().unwrap()],
        pod_cidrs: vec!["10.2.1.0/24".parse().unwrap()],
        wireguard_key: None,
    })
}

async fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn b_seen_by(a: &Running) -> RemoteStatus {
    a.importer
        .status()
        .into_iter()
        .find(|s| s.name == "b")
        .expect("A imports B")
}

fn client_cert_of(a: &Running) -> Option<CertificateStatus> {
    a.status
        .certificates
        .report()
        .into_iter()
        .find(|c| c.name == "client/b")
}

async fn b_nodes_in(store: &dyn Store) -> usize {
    store
        .list(&state::cluster_prefix("b"))
        .await
        .unwrap()
        .0
        .iter()
        .filter(|kv| kv.key.contains("/nodes/"))
        .count()
}

/// A's entry for B with a client certificate that has `left` seconds of a
/// 60 s life left (so it is due for renewal at once), written to `dir` too.
fn short_lived_entry(pki: &Pki, b: &Running, dir: &std::path::Path, left: i64) -> String {
    let now = OffsetDateTime::now_utc();
    let cert = pki
        .ca
        .issue_client(
            &Pki::cluster_id("a"),
            Validity::between(
                now - time::Duration::seconds(60 - left),
                now + time::Duration::seconds(left),
            )
            .unwrap(),
        )
        .unwrap();
    let entry = remote_entry(
        "b",
        2,
        &[b.grpc_addr.to_string()],
        pki.ca.cert_pem(),
        &cert,
        &["10.2.0.0/16"],
    );
    std::fs::write(dir.join("b"), &entry).unwrap();
    entry
}

struct Two {
    a: Running,
    b: Running,
    a_store: Arc<dyn Store>,
    a_config: tokio::sync::watch::Sender<BTreeMap<String, String>>,
    entries: tempfile::TempDir,
    _ca: tempfile::TempDir,
}

async fn two(pki: &Pki, b_signs: bool) -> Two {
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(ca.path().join("ca.crt"), pki.ca.cert_pem()).unwrap();
    mesh_certs::pem::write_atomic(
        &ca.path().join("ca.key"),
        pki.ca.key_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    let signer = b_signs.then(|| Signer {
        cert: ca.path().join("ca.crt"),
        key: ca.path().join("ca.key"),
        lifetime: Duration::from_secs(60),
    });
    let entries = tempfile::tempdir().unwrap();
    let a_store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let a_settings = ImportSettings {
        max_backoff: Duration::from_millis(300),
        renewal: ClientRenewal {
            certs: Default::default(),
            sink: Some(Arc::new(DirectoryEntries(entries.path().to_path_buf()))),
        },
        ..Default::default()
    };
    let (a, a_config, _) = in_process_cluster_renewing(
        pki,
        "a",
        1,
        "10.1.0.0/16",
        a_store.clone(),
        a_settings,
        Renewal::default(),
    )
    .await;
    let (b, b_config, _) = in_process_cluster_renewing(
        pki,
        "b",
        2,
        "10.2.0.0/16",
        Arc::new(MemoryStore::default()),
        ImportSettings::default(),
        Renewal { signer, own: None },
    )
    .await;
    b_config
        .send(clustermesh_config(pki, "b", &[("a", 1, a.grpc_addr, &[])]))
        .unwrap();
    b.writer.upsert(&node("b-n1")).await.unwrap();
    for kind in mesh_api::Kind::ALL {
        b.writer.mark_synced(kind).await.unwrap();
    }
    Two {
        a,
        b,
        a_store,
        a_config,
        entries,
        _ca: ca,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importer_renews_its_client_certificate_before_it_expires_and_keeps_importing() {
    init();
    let pki = Pki::new();
    let t = two(&pki, true).await;
    let entry = short_lived_entry(&pki, &t.b, t.entries.path(), 8);
    t.a_config
        .send(BTreeMap::from([("b".to_string(), entry.clone())]))
        .unwrap();

    let renewed = until("A renewed its client certificate from B", 10, || {
        client_cert_of(&t.a).filter(|c| c.renewals >= 1)
    })
    .await;
    let now = mesh_api::clustermesh::unix_seconds(std::time::SystemTime::now());
    assert!(
        renewed.not_after >= now + 50,
        "the renewed certificate has B's configured lifetime: {renewed:?}"
    );
    assert_eq!(
        renewed.spiffe_id.as_deref(),
        Some("spiffe://meshwork.local/cluster/a")
    );
    // Written back into A's entry: a restart would use the new one.
    let stored = mesh_api::clustermesh::RemoteClusterConfig::parse(
        "b",
        &std::fs::read_to_string(t.entries.path().join("b")).unwrap(),
    )
    .unwrap();
    assert_ne!(stored.client_cert, entry_cert(&entry));
    let identity = TlsIdentity::from_pem(
        &stored.client_cert,
        &stored.client_key,
        "stored",
        "stored key",
    )
    .expect("the stored certificate is for the stored key");
    assert_eq!(
        identity.spiffe_id().map(|i| i.to_string()).as_deref(),
        Some("spiffe://meshwork.local/cluster/a")
    );

    // The old certificate expires: B closes the stream it authorized with
    // it, and A's next connection presents the renewed one.
    until("B's first node imported", 10, || {
        b_seen_by(&t.a).synced.then_some(())
    })
    .await;
    let st = until(
        "A reconnected after the old certificate expired",
        20,
        || {
            let s = b_seen_by(&t.a);
            (s.connections >= 2 && s.connected).then_some(s)
        },
    )
    .await;
    println!(
        "reconnections: {}; last error before: {:?}",
        st.connections, st.last_error
    );
    t.b.writer.upsert(&node("b-n2")).await.unwrap();
    let t0 = Instant::now();
    while b_nodes_in(t.a_store.as_ref()).await < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "B's change after the renewal reached A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client_cert_of(&t.a).unwrap().last_error.is_none(),
        "{:?}",
        client_cert_of(&t.a)
    );
    t.a.shutdown().await;
    t.b.shutdown().await;
}

fn entry_cert(entry: &str) -> String {
    mesh_api::clustermesh::RemoteClusterConfig::parse("b", entry)
        .unwrap()
        .client_cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signer_the_remote_refuses_and_the_status_says_what_to_do() {
    init();
    let pki = Pki::new();
    let t = two(&pki, false).await;
    let entry = short_lived_entry(&pki, &t.b, t.entries.path(), 15);
    t.a_config
        .send(BTreeMap::from([("b".to_string(), entry.clone())]))
        .unwrap();
    let failing = until("A reports the failing renewal", 10, || {
        client_cert_of(&t.a).filter(|c| c.last_error.is_some())
    })
    .await;
    let error = failing.last_error.clone().unwrap();
    assert!(error.contains("--signing-ca-cert"), "{error}");
    assert_eq!(failing.renewals, 0);
    let now = mesh_api::clustermesh::unix_seconds(std::time::SystemTime::now());
    let warning = failing
        .warning(failing.not_after.saturating_sub(1).max(now))
        .expect("close to expiry, status warns");
    assert!(warning.contains("renewal is failing"), "{warning}");
    // Nothing was written back.
    assert_eq!(
        std::fs::read_to_string(t.entries.path().join("b")).unwrap(),
        entry
    );
    t.a.shutdown().await;
    t.b.shutdown().await;
}
