//! mesh-apiserver against a real etcd that serves clients over TLS only and
//! requires client certificates (`--client-cert-auth`). The `--etcd-*`
//! flags go through the binary's own parser, checks, file loading and
//! connection code (`Config::etcd`, `EtcdStore::connect_with`, as `main`
//! does), and the binary itself is run against it. etcd is killed when the
//! test ends, also when it fails (`EtcdServer`'s drop).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser as _;
use mesh_apiserver::config::Config;
use mesh_apiserver::store::{EtcdStore, Store};
use mesh_apiserver::testutil::{EtcdServer, Pki, free_port, init};

/// The mesh-apiserver's configuration for `etcd`, plus `extra` flags.
fn config(endpoint: &str, extra: &[String]) -> Config {
    let mut args = vec![
        "mesh-apiserver".to_string(),
        "--cluster-name=c1".into(),
        "--cluster-id=1".into(),
        "--kubernetes=false".into(),
        "--store=etcd".into(),
        format!("--etcd-endpoints={endpoint}"),
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("flags parse")
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

/// Checks, loads and connects as `main` does, then makes one request: the
/// connection is lazy, so a refused handshake surfaces there.
async fn connect(config: &Config) -> Result<EtcdStore, String> {
    let report = |e: mesh_apiserver::Error| mesh_api::report(&e);
    config.local().map_err(report)?;
    let store = EtcdStore::connect_with(&config.etcd().map_err(report)?)
        .await
        .map_err(report)?;
    store.revision().await.map_err(report)?;
    Ok(store)
}

async fn refused(config: &Config, what: &str) -> String {
    match connect(config).await {
        Ok(_) => panic!("{what}: etcd accepted the connection"),
        Err(e) => {
            eprintln!("{what}: {e}");
            e
        }
    }
}

#[tokio::test]
async fn the_right_ca_and_client_certificate_connect_write_and_read() {
    init();
    let pki = Pki::new();
    let etcd = EtcdServer::start_tls(&pki).await;
    let t = etcd.tls_files().unwrap();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let cfg = config(
        &etcd.endpoint(),
        &[
            flag("etcd-ca", &t.ca),
            flag("etcd-cert", &t.client_cert),
            flag("etcd-key", &t.client_key),
        ],
    );
    let store = connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\netcd log: {}", etcd.log()));
    let rev = store
        .put("meshwork/v1/c1/nodes/n1", b"over tls".to_vec())
        .await
        .unwrap();
    let got = store.get("meshwork/v1/c1/nodes/n1").await.unwrap().unwrap();
    assert_eq!(got.value, b"over tls");
    assert_eq!(got.mod_revision, rev);
    let (listed, _) = store.list("meshwork/v1/c1/").await.unwrap();
    assert_eq!(listed.len(), 1);
    // Leases (leader election) and transactions go over the same channel.
    let lease = store.grant_lease(5).await.unwrap();
    store.keep_alive(lease).await.unwrap();
    store.revoke_lease(lease).await.unwrap();

    // --etcd-server-name verifies a name the certificate carries when the
    // endpoint's host is something else.
    let by_name = config(
        &etcd.endpoint(),
        &[
            flag("etcd-ca", &t.ca),
            flag("etcd-cert", &t.client_cert),
            flag("etcd-key", &t.client_key),
            "--etcd-server-name=localhost".into(),
        ],
    );
    connect(&by_name).await.unwrap();
    let wrong_name = config(
        &etcd.endpoint(),
        &[
            flag("etcd-ca", &t.ca),
            flag("etcd-cert", &t.client_cert),
            flag("etcd-key", &t.client_key),
            "--etcd-server-name=etcd.example".into(),
        ],
    );
    let err = refused(&wrong_name, "server name the certificate lacks").await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_or_trust_in_the_server_are_refused() {
    init();
    let pki = Pki::new();
    let etcd = EtcdServer::start_tls(&pki).await;
    let t = etcd.tls_files().unwrap().clone();
    let other = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (other_cert, other_key) = other.cluster("c1").save(dir.path(), "other").unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.ca.cert_pem()).unwrap();

    // (b) No client certificate: etcd (--client-cert-auth) refuses.
    let err = refused(
        &config(&etcd.endpoint(), &[flag("etcd-ca", &t.ca)]),
        "no client certificate",
    )
    .await;
    assert!(err.contains(&etcd.endpoint()), "{err}");
    assert!(
        err.contains("no client certificate is given with --etcd-cert and --etcd-key"),
        "{err}"
    );

    // (c) A client certificate from another CA: refused.
    let err = refused(
        &config(
            &etcd.endpoint(),
            &[
                flag("etcd-ca", &t.ca),
                flag("etcd-cert", &other_cert),
                flag("etcd-key", &other_key),
            ],
        ),
        "client certificate from another CA",
    )
    .await;
    assert!(
        err.contains("etcd must trust the issuer of --etcd-cert"),
        "{err}"
    );

    // (d) etcd's server certificate is not issued by --etcd-ca: refused by us.
    let err = refused(
        &config(
            &etcd.endpoint(),
            &[
                flag("etcd-ca", &other_ca),
                flag("etcd-cert", &t.client_cert),
                flag("etcd-key", &t.client_key),
            ],
        ),
        "server not trusted",
    )
    .await;
    // Our side refuses the handshake, so the reason is precise.
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(err.contains("--etcd-ca must have issued"), "{err}");

    // And the accepted client still works against the same etcd.
    etcd.store().await.revision().await.unwrap();
}

/// Unreadable or invalid files stop the start-up with the flag and the path.
#[tokio::test]
async fn bad_files_are_refused_at_start_naming_flag_and_path() {
    init();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = pki.cluster("c1").save(d, "client").unwrap();
    let (_, other_key) = pki.cluster("c2").save(d, "other").unwrap();
    let ca = d.join("ca.crt");
    std::fs::write(&ca, pki.ca.cert_pem()).unwrap();
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let garbage_key = d.join("garbage.key");
    mesh_certs::pem::write_atomic(&garbage_key, b"not PEM at all\n", 0o600).unwrap();
    let open_key = d.join("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = d.join("missing.crt");
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    for (name, ca, cert, key, want) in [
        ("missing CA file", &missing, &cert, &key, "etcd-ca"),
        ("CA file not PEM", &garbage, &cert, &key, "etcd-ca"),
        ("CA file holds a leaf", &cert, &cert, &key, "etcd-ca"),
        ("certificate not PEM", &ca, &garbage, &key, "etcd-cert"),
        ("missing key", &ca, &cert, &missing, "etcd-key"),
        ("key not PEM", &ca, &cert, &garbage_key, "etcd-key"),
        (
            "key of another certificate",
            &ca,
            &cert,
            &other_key,
            "etcd-key",
        ),
        ("key readable by others", &ca, &cert, &open_key, "etcd-key"),
    ] {
        let cfg = config(
            &endpoint,
            &[
                flag("etcd-ca", ca),
                flag("etcd-cert", cert),
                flag("etcd-key", key),
            ],
        );
        let path = match want {
            "etcd-ca" => ca,
            "etcd-cert" => cert,
            _ => key,
        };
        let err = cfg
            .etcd()
            .map(|c| format!("accepted: {c:?}"))
            .unwrap_or_else(|e| mesh_api::report(&e));
        eprintln!("{name}: {err}");
        assert!(
            err.starts_with(&format!("config {want}=\"{}\"", path.display())),
            "{name}: {err}"
        );
    }
}

/// Kills the spawned binary when the test ends, also when it fails.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary itself: with the TLS flags it elects itself leader in the
/// TLS etcd (its lease and key written over mTLS); with https endpoints and
/// no --etcd-ca it exits at once, before binding its listeners.
#[tokio::test]
async fn the_binary_uses_the_flags_and_refuses_bad_ones_before_serving() {
    init();
    let pki = Pki::new();
    let etcd = EtcdServer::start_tls(&pki).await;
    let t = etcd.tls_files().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tls_cert, tls_key) = pki.server("c1").save(d, "tls").unwrap();
    std::fs::write(d.join("ca.crt"), pki.ca.cert_pem()).unwrap();
    std::fs::create_dir(d.join("remotes")).unwrap();
    let status = free_port();
    let base = |status: u16| {
        vec![
            "--cluster-name=c1".to_string(),
            "--cluster-id=1".into(),
            "--kubernetes=false".into(),
            "--store=etcd".into(),
            format!("--etcd-endpoints={}", etcd.endpoint()),
            format!("--grpc-listen=127.0.0.1:{}", free_port()),
            format!("--status-listen=127.0.0.1:{status}"),
            flag("tls-cert", &tls_cert),
            flag("tls-key", &tls_key),
            flag("tls-ca", &d.join("ca.crt")),
            flag("clustermesh-config-dir", &d.join("remotes")),
            "--replica-name=r1".into(),
            "--leader-lease-ttl-seconds=2".into(),
        ]
    };
    let log = d.join("apiserver.log");
    let file = std::fs::File::create(&log).unwrap();
    let _server = Spawned(
        Command::new(env!("CARGO_BIN_EXE_mesh-apiserver"))
            .args(base(status))
            .args([
                flag("etcd-ca", &t.ca),
                flag("etcd-cert", &t.client_cert),
                flag("etcd-key", &t.client_key),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn mesh-apiserver"),
    );
    let store = etcd.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = store.get("meshwork/internal/c1/leader").await;
        if matches!(&leader, Ok(Some(kv)) if kv.value == b"r1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the binary did not become leader in the TLS etcd within 20 s ({leader:?}); its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let refused_status = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-apiserver"))
        .args(base(refused_status))
        .stdin(Stdio::null())
        .output()
        .expect("run mesh-apiserver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "https without --etcd-ca ran: {stderr}"
    );
    assert!(
        stderr.contains("etcd-ca") && stderr.contains("required with https://"),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", refused_status)).is_err(),
        "the refused binary served its status port"
    );
}
