use std::sync::Arc;

use mesh_api::ClusterName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::tls::AccessPolicy;
use crate::{CertificateAuthority, IssuedCert, SpiffeId, TrustDomain, Validity};

fn ca() -> CertificateAuthority {
    CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap()
}

fn server(ca: &CertificateAuthority) -> IssuedCert {
    ca.issue_cluster_server(
        &server_id(),
        &["localhost".into()],
        Validity::days(30).unwrap(),
    )
    .unwrap()
}

fn server_id() -> SpiffeId {
    SpiffeId::cluster(TrustDomain::default(), ClusterName::new("srv").unwrap())
}

fn cluster(ca: &CertificateAuthority, name: &str) -> IssuedCert {
    ca.issue_client(
        &SpiffeId::cluster(TrustDomain::default(), ClusterName::new(name).unwrap()),
        Validity::days(30).unwrap(),
    )
    .unwrap()
}

fn identity(c: &IssuedCert) -> TlsIdentity {
    TlsIdentity::from_pem(&c.cert_pem, &c.key_pem, "cert", "key").unwrap()
}

fn bundle(cas: &[&CertificateAuthority]) -> TrustBundle {
    let pem: String = cas.iter().map(|c| c.cert_pem()).collect();
    TrustBundle::from_pem(&pem, "bundle").unwrap()
}

/// One real TLS handshake over an in-memory pipe; Ok when both ends
/// completed it (TLS 1.3: the server judges the client certificate last).
async fn handshake(
    server: &LiveTls,
    client: &LiveTls,
    authorizer: &Authorizer,
) -> Result<(), String> {
    let (s, c) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server.server_config(authorizer.clone()).unwrap()));
    let connector = TlsConnector::from(Arc::new(client.client_config(&server_id()).unwrap()));
    let name = ServerName::try_from("localhost").unwrap();
    let (srv, cli) = tokio::join!(acceptor.accept(s), async {
        use tokio::io::AsyncReadExt as _;
        let mut stream = connector.connect(name, c).await?;
        // Read until the server's verdict arrives (an alert or EOF).
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        Ok::<_, std::io::Error>(())
    });
    srv.map_err(|e| format!("server: {e}"))?;
    cli.map_err(|e| format!("client: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn a_rotation_through_a_dual_trust_bundle_never_breaks_a_handshake() {
    let (old, new) = (ca(), ca());
    let authorizer = Authorizer::new(
        TrustDomain::default(),
        AccessPolicy::clusters([ClusterName::new("a").unwrap()]),
    );
    let srv = LiveTls::new(identity(&server(&old)), &bundle(&[&old])).unwrap();
    let cli = LiveTls::new(identity(&cluster(&old, "a")), &bundle(&[&old])).unwrap();
    handshake(&srv, &cli, &authorizer).await.unwrap();
    // 1. Both trust old + new.
    srv.update(identity(&server(&old)), &bundle(&[&old, &new]))
        .unwrap();
    cli.update(identity(&cluster(&old, "a")), &bundle(&[&old, &new]))
        .unwrap();
    handshake(&srv, &cli, &authorizer).await.unwrap();
    // 2. Leaves reissued under the new CA, one side at a time.
    srv.update(identity(&server(&new)), &bundle(&[&old, &new]))
        .unwrap();
    handshake(&srv, &cli, &authorizer).await.unwrap();
    cli.update(identity(&cluster(&new, "a")), &bundle(&[&old, &new]))
        .unwrap();
    handshake(&srv, &cli, &authorizer).await.unwrap();
    // 3. The old CA dropped.
    srv.update(identity(&server(&new)), &bundle(&[&new]))
        .unwrap();
    cli.update(identity(&cluster(&new, "a")), &bundle(&[&new]))
        .unwrap();
    handshake(&srv, &cli, &authorizer).await.unwrap();
    assert_eq!(srv.generation(), 4);
    // Afterwards an old-CA certificate is refused, and the refusal recorded.
    let stale = LiveTls::new(identity(&cluster(&old, "a")), &bundle(&[&old, &new])).unwrap();
    let e = handshake(&srv, &stale, &authorizer).await.unwrap_err();
    assert!(e.starts_with("server"), "{e}");
    assert!(!authorizer.recent_refusals().is_empty());
    // And a client that trusts only the old CA refuses the new server.
    let behind = LiveTls::new(identity(&cluster(&new, "a")), &bundle(&[&old])).unwrap();
    assert!(handshake(&srv, &behind, &authorizer).await.is_err());
}

#[tokio::test]
async fn files_are_reloaded_only_when_changed_and_valid() {
    let (old, new) = (ca(), ca());
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        ca: dir.path().join("ca.crt"),
    };
    let write = |c: &IssuedCert, cas: &[&CertificateAuthority]| {
        std::fs::write(&files.cert, &c.cert_pem).unwrap();
        pem::write_atomic(&files.key, c.key_pem.as_bytes(), 0o600).unwrap();
        std::fs::write(&files.ca, bundle(cas).to_pem()).unwrap();
    };
    let first = server(&old);
    write(&first, &[&old]);
    let live = LiveTls::from_files(&files).unwrap();
    assert!(!live.reload(&files).unwrap(), "unchanged files: no swap");
    assert_eq!(live.generation(), 1);
    // Half-written: a new certificate with the old key is refused, old kept.
    std::fs::write(&files.cert, server(&new).cert_pem).unwrap();
    let e = live.reload(&files).unwrap_err().to_string();
    assert!(e.contains("tls.crt") || e.contains("tls.key"), "{e}");
    assert_eq!(live.generation(), 1);
    write(&server(&new), &[&old, &new]);
    assert!(live.reload(&files).unwrap());
    assert_eq!(live.generation(), 2);
    assert_eq!(live.fingerprint(), files.fingerprint().unwrap());
    // The watcher thread picks changes up by itself.
    let watch = live.watch_files(files.clone(), Duration::from_millis(50));
    write(&server(&new), &[&new]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while live.generation() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "not reloaded within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(watch);
}
