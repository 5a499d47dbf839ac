//! Test helpers (feature `test-util`): a real etcd on loopback (plaintext,
//! or TLS with client-certificate auth), and a throw-away mesh CA with the
//! certificates the component tests need. The lab reuses [`EtcdServer`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::EtcdFlags;
use crate::store::{EtcdConnection, EtcdStore, Store};

/// Where [`free_port`] looks: below Linux's default ephemeral range
/// (32768–60999), so no outgoing connection is ever given one of these
/// ports between the check and the server's own bind.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// A free TCP port on 127.0.0.1, outside the ephemeral range: each call
/// tries the next port of [`TEST_PORTS`] (starting at a place chosen by
/// the process id, so two test binaries rarely walk the same ports) until
/// one binds, then releases it for the caller.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {TEST_PORTS:?}")
}

/// A real `/usr/bin/etcd` on loopback with a temporary data directory;
/// killed and removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTlsFiles>,
}

/// The files of an etcd started by [`EtcdServer::start_tls`], in its
/// temporary directory.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// The CA etcd trusts for client certificates (`--trusted-ca-file`),
    /// which also issued its server certificate.
    pub ca: PathBuf,
    /// etcd's server certificate (for 127.0.0.1 and localhost).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate issued by the same CA, which etcd accepts.
    pub client_cert: PathBuf,
    /// Its key (0600).
    pub client_key: PathBuf,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers (panics after 20 s).
    pub async fn start() -> EtcdServer {
        Self::start_with(None).await
    }

    /// Starts etcd serving clients over TLS only, with
    /// `--client-cert-auth`: its server certificate and the client
    /// certificates it accepts are issued by `pki`'s CA.
    pub async fn start_tls(pki: &Pki) -> EtcdServer {
        Self::start_with(Some(pki)).await
    }

    async fn start_with(pki: Option<&Pki>) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("meshwork-etcd-")
            .tempdir()
            .expect("temp dir for etcd");
        let tls = pki.map(|pki| {
            let d = dir.path().join("tls");
            std::fs::create_dir(&d).expect("etcd tls dir");
            let ca = d.join("ca.crt");
            mesh_certs::pem::write_atomic(&ca, pki.ca.cert_pem().as_bytes(), 0o644)
                .expect("write etcd CA");
            let (server_cert, server_key) =
                pki.server("etcd").save(&d, "server").expect("server cert");
            let (client_cert, client_key) = pki
                .cluster("etcd-client")
                .save(&d, "client")
                .expect("client cert");
            EtcdTlsFiles {
                ca,
                server_cert,
                server_key,
                client_cert,
                client_key,
            }
        });
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        // A port read back from `free_port` is free only until someone
        // else takes it (another test's listener, or any outgoing
        // connection's ephemeral port): when etcd loses that race, it
        // starts over on fresh ports with an empty data directory.
        for _ in 0..4 {
            match server.try_spawn().await {
                Ok(()) => return server,
                Err(log) if log.contains("address already in use") => {
                    let _ = std::fs::remove_dir_all(server.dir.path().join("data"));
                    server.client_port = free_port();
                    server.peer_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("{log}");
        }
    }

    /// Starts etcd and waits until it answers; `Err` carries why it
    /// exited, with its log.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = &self.tls {
            tls_args = vec![
                "--client-cert-auth".into(),
                format!("--trusted-ca-file={}", t.ca.display()),
                format!("--cert-file={}", t.server_cert.display()),
                format!("--key-file={}", t.server_key.display()),
            ];
        }
        let child = Command::new("/usr/bin/etcd")
            .args(&tls_args)
            .args([
                "--name",
                "meshwork-test",
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("meshwork-test={peer}"),
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn /usr/bin/etcd (Debian package etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(store) = EtcdStore::connect_with(&self.connection()).await
                && store.revision().await.is_ok()
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("etcd exited with {status}; log: {}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 20 s; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its client URL (`https://` when started with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Its TLS files, when started with [`EtcdServer::start_tls`].
    pub fn tls_files(&self) -> Option<&EtcdTlsFiles> {
        self.tls.as_ref()
    }

    /// How a client that etcd accepts connects: the `--etcd-*` flags
    /// (with its CA and the accepted client certificate under TLS), checked
    /// and read as `main` does.
    pub fn connection(&self) -> EtcdConnection {
        EtcdFlags {
            endpoints: vec![self.endpoint()],
            ca: self.tls.as_ref().map(|t| t.ca.clone()),
            cert: self.tls.as_ref().map(|t| t.client_cert.clone()),
            key: self.tls.as_ref().map(|t| t.client_key.clone()),
            server_name: None,
        }
        .plan()
        .and_then(|p| p.load())
        .expect("the test etcd's own client flags")
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new client store.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect_with(&self.connection())
            .await
            .expect("connect to test etcd")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL) and waits for it; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs the ring crypto provider once and a test log subscriber.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn,hyper=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A throw-away mesh CA and the certificates component tests need.
#[derive(Debug)]
pub struct Pki {
    /// The CA.
    pub ca: mesh_certs::CertificateAuthority,
}

impl Pki {
    /// A new CA for trust domain `meshwork.local`.
    pub fn new() -> Pki {
        Pki {
            ca: mesh_certs::CertificateAuthority::create(
                mesh_certs::TrustDomain::default(),
                mesh_certs::Validity::days(30).unwrap(),
            )
            .expect("create CA"),
        }
    }

    /// The trust bundle of this CA.
    pub fn bundle(&self) -> mesh_certs::TrustBundle {
        mesh_certs::TrustBundle::from_pem(self.ca.cert_pem(), "test CA").unwrap()
    }

    /// The server certificate of `cluster`'s mesh-apiserver, for 127.0.0.1
    /// and `localhost`.
    pub fn server(&self, cluster: &str) -> mesh_certs::IssuedCert {
        self.ca
            .issue_cluster_server(
                &Self::cluster_id(cluster),
                &["127.0.0.1".to_string(), "localhost".to_string()],
                mesh_certs::Validity::days(30).unwrap(),
            )
            .unwrap()
    }

    /// The SPIFFE id of cluster `name` (its client and server certificates).
    pub fn cluster_id(name: &str) -> mesh_certs::SpiffeId {
        mesh_certs::SpiffeId::cluster(
            mesh_certs::TrustDomain::default(),
            mesh_api::ClusterName::new(name).unwrap(),
        )
    }

    /// A cluster client certificate.
    pub fn cluster(&self, name: &str) -> mesh_certs::IssuedCert {
        self.client(Self::cluster_id(name))
    }

    /// A node-agent client certificate.
    pub fn node(&self, cluster: &str, node: &str) -> mesh_certs::IssuedCert {
        self.client(mesh_certs::SpiffeId::node(
            mesh_certs::TrustDomain::default(),
            mesh_api::ClusterName::new(cluster).unwrap(),
            mesh_api::NodeName::new(node).unwrap(),
        ))
    }

    /// A client certificate for any id.
    pub fn client(&self, id: mesh_certs::SpiffeId) -> mesh_certs::IssuedCert {
        self.ca
            .issue_client(&id, mesh_certs::Validity::days(30).unwrap())
            .unwrap()
    }

    /// A rustls client config presenting `cert` to the mesh-apiserver of
    /// `server` (and accepting no other).
    pub fn client_config(
        &self,
        cert: &mesh_certs::IssuedCert,
        server: &str,
    ) -> rustls::ClientConfig {
        let id = mesh_certs::TlsIdentity::from_pem(&cert.cert_pem, &cert.key_pem, "cert", "key")
            .unwrap();
        mesh_certs::tls::client_config(id, &self.bundle(), &Self::cluster_id(server)).unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A `meshwork-clustermesh` entry (YAML) for a remote.
pub fn remote_entry(
    name: &str,
    id: u8,
    endpoints: &[String],
    ca_pem: &str,
    client: &mesh_certs::IssuedCert,
    pod_cidrs: &[&str],
) -> String {
    mesh_api::clustermesh::RemoteClusterConfig {
        name: mesh_api::ClusterName::new(name).expect("test cluster name"),
        id: mesh_api::ClusterId::new(i64::from(id)).expect("test cluster id"),
        endpoints: endpoints.to_vec(),
        server_name: Some("127.0.0.1".into()),
        pod_cidrs: pod_cidrs
            .iter()
            .map(|c| c.parse().expect("test CIDR"))
            .collect(),
        ca_cert: ca_pem.to_string(),
        client_cert: client.cert_pem.clone(),
        client_key: client.key_pem.clone(),
    }
    .to_yaml()
}

impl Pki {
    /// A client config presenting `cert` (issued by any CA) to `server`,
    /// trusting this CA.
    pub fn client_config_with_bundle(
        &self,
        cert: &mesh_certs::IssuedCert,
        server: &str,
    ) -> rustls::ClientConfig {
        let id = mesh_certs::TlsIdentity::from_pem(&cert.cert_pem, &cert.key_pem, "cert", "key")
            .unwrap();
        mesh_certs::tls::client_config(id, &self.bundle(), &Self::cluster_id(server)).unwrap()
    }
}

impl Pki {
    /// A client config that trusts this CA but presents no certificate.
    pub fn anonymous_client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(mesh_certs::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.bundle().root_store().unwrap())
            .with_no_client_auth()
    }
}

/// A mesh-apiserver running in this process on `store`, serving on a
/// loopback port with a server certificate of `pki`, no status listener
/// and no election; its remotes come from the returned config sender. The
/// returned [`mesh_certs::LiveTls`] is its live material (swap the bundle
/// to rotate its CA).
pub async fn in_process_cluster(
    pki: &Pki,
    name: &str,
    id: i64,
    cidr: &str,
    store: std::sync::Arc<dyn crate::store::Store>,
    import: crate::import::ImportSettings,
) -> (
    crate::server::Running,
    tokio::sync::watch::Sender<std::collections::BTreeMap<String, String>>,
    mesh_certs::LiveTls,
) {
    in_process_cluster_renewing(pki, name, id, cidr, store, import, Default::default()).await
}

/// [`in_process_cluster`] with certificate renewal.
pub async fn in_process_cluster_renewing(
    pki: &Pki,
    name: &str,
    id: i64,
    cidr: &str,
    store: std::sync::Arc<dyn crate::store::Store>,
    import: crate::import::ImportSettings,
    renewal: crate::renew::Renewal,
) -> (
    crate::server::Running,
    tokio::sync::watch::Sender<std::collections::BTreeMap<String, String>>,
    mesh_certs::LiveTls,
) {
    let server = pki.server(name);
    let (tx, feed) = tokio::sync::watch::channel(std::collections::BTreeMap::new());
    let tls = mesh_certs::LiveTls::new(
        mesh_certs::TlsIdentity::from_pem(&server.cert_pem, &server.key_pem, "cert", "key")
            .unwrap(),
        &pki.bundle(),
    )
    .unwrap();
    let running = crate::server::start(crate::server::ServerParts {
        local: crate::export::LocalCluster {
            name: mesh_api::ClusterName::new(name).unwrap(),
            id: mesh_api::ClusterId::new(id).unwrap(),
            pod_cidrs: vec![cidr.parse().unwrap()],
        },
        store,
        election: None,
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status: None,
        tls: tls.clone(),
        trust_domain: mesh_certs::TrustDomain::default(),
        import,
        config: feed,
        replica: "r1".into(),
        renewal,
    })
    .await
    .unwrap();
    (running, tx, tls)
}

/// The `meshwork-clustermesh` config of cluster `local` naming `remotes`
/// (name, id, export address, declared pod CIDRs), each entry with a client
/// certificate of `local` issued by `pki`.
pub fn clustermesh_config(
    pki: &Pki,
    local: &str,
    remotes: &[(&str, u8, std::net::SocketAddr, &[&str])],
) -> std::collections::BTreeMap<String, String> {
    remotes
        .iter()
        .map(|(name, id, addr, cidrs)| {
            (
                name.to_string(),
                remote_entry(
                    name,
                    *id,
                    &[addr.to_string()],
                    pki.ca.cert_pem(),
                    &pki.cluster(local),
                    cidrs,
                ),
            )
        })
        .collect()
}
