//! A test double of the Kubernetes API server, for Meshwork's local lab and
//! component tests.
//!
//! It serves HTTPS with bearer-token authentication, keeps objects in
//! memory as JSON with one global resourceVersion counter, and implements
//! the API behaviour that kube-rs (reflectors, watchers, server-side apply,
//! leases) and the stock `kubectl` rely on: discovery, list/watch with
//! bookmarks and 410 Gone, selectors, optimistic concurrency, finalizers,
//! patches, status subresources, CRDs and custom resources, ClusterIP and
//! NodePort allocation, an EndpointSlice controller, and the workload
//! controllers (Deployments, ReplicaSets, garbage collection) and scheduler
//! that make `kubectl create deployment` and `kubectl scale` work.
//!
//! It is NOT a Kubernetes distribution and is never shipped: there is no
//! kubelet, admission, RBAC, OpenAPI schema validation or persistence. The
//! lab acts as the kubelet and writes pod status itself.
//!
//! ```no_run
//! # async fn demo() -> mesh_test_apiserver::Result<()> {
//! use mesh_test_apiserver::{Config, TestApiServer};
//! let server = TestApiServer::start(Config::local("lab-c1")).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! println!("serving on {} (kubectl --kubeconfig /tmp/kubeconfig get pods)", server.url());
//! # Ok(()) }
//! ```
//!
//! The binary `mesh-test-apiserver` runs one server until interrupted:
//! `mesh-test-apiserver --listen 127.0.0.1:0 --service-cidr 10.96.0.0/16
//! --kubeconfig-out <path> --context lab-c1 --ready-file <path>`.

pub mod allocator;
pub mod apps;
pub mod controllers;
mod error;
mod intstr;
pub mod kubeconfig;
mod meta;
pub mod patch;
pub mod protobuf;
pub mod query;
pub mod registry;
pub mod scale;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod validate;
pub mod workloads;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::allocator::ServiceAllocator;
use crate::controllers::EndpointSliceController;
pub use crate::error::{Error, Result};
use crate::server::App;
use crate::store::{Store, StoreConfig};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Service CIDR for ClusterIP allocation.
    pub service_cidr: Ipv4Net,
    /// Name of the kubeconfig context (and cluster and user) written.
    pub context: String,
    /// Extra DNS names / IPs for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Watch events kept for resumption; older resourceVersions get 410.
    pub history: usize,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Bearer token clients must send (None: a random one).
    pub token: Option<String>,
}

impl Config {
    /// Defaults for tests: 127.0.0.1:0, 10.96.0.0/16, context `lab-c1`.
    pub fn local(context: &str) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_cidr: "10.96.0.0/16".parse().expect("static CIDR"),
            context: context.to_string(),
            extra_sans: Vec::new(),
            history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            token: None,
        }
    }
}

/// A running server. Dropping it stops serving.
#[derive(Debug)]
pub struct TestApiServer {
    addr: SocketAddr,
    store: Arc<Store>,
    ca_pem: String,
    token: String,
    context: String,
    tasks: Vec<JoinHandle<()>>,
}

impl TestApiServer {
    /// Binds, creates a CA and serving certificate, and starts serving.
    pub async fn start(config: Config) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if config.service_cidr.prefix_len() > 28 {
            return Err(Error::ServiceCidr {
                cidr: config.service_cidr.into(),
                reason: "too small",
            });
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let (ca_pem, tls) = tls_config(addr.ip(), &config.extra_sans)?;
        let store = Store::new(StoreConfig {
            history: config.history.max(1),
            services: ServiceAllocator::new(config.service_cidr),
        });
        let token = config
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let app = Arc::new(App {
            store: store.clone(),
            token: token.clone(),
            bookmark_interval: config.bookmark_interval,
        });
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, app));
        let controller = tokio::spawn(EndpointSliceController::new(store.clone()).run());
        let mut tasks = vec![accept_task, controller];
        tasks.extend(workloads::spawn(&store));
        tracing::info!(%addr, context = config.context, "test API server listening");
        Ok(TestApiServer {
            addr,
            store,
            ca_pem,
            token,
            context: config.context,
            tasks,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The kubeconfig context name.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The store, for tests that inspect server state or close watches.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The kubeconfig YAML.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for(&self.url())
    }

    /// The kubeconfig YAML with another server URL (a forwarded port, an
    /// address in another namespace); that address must be in the
    /// certificate (`Config::extra_sans`).
    pub fn kubeconfig_for(&self, server_url: &str) -> String {
        kubeconfig::render(&self.context, server_url, &self.ca_pem, &self.token)
    }

    /// Writes the kubeconfig (mode 0600: it holds the token).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        write_private(path, self.kubeconfig().as_bytes())
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.store.close_watches();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn tls_config(ip: IpAddr, extra: &[String]) -> Result<(String, rustls::ServerConfig)> {
    use mesh_certs::{CertificateAuthority, TlsIdentity, TrustDomain, Validity};
    let cert_err = |what| move |source| Error::Certificate { what, source };
    let validity = Validity::days(365).map_err(cert_err("validity"))?;
    let ca = CertificateAuthority::create(
        TrustDomain::new("test-apiserver.meshwork.invalid").map_err(cert_err("trust domain"))?,
        validity,
    )
    .map_err(cert_err("CA"))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names.extend(extra.iter().cloned());
    let issued = ca
        .issue_server(&names, Validity::days(365).map_err(cert_err("validity"))?)
        .map_err(cert_err("server certificate"))?;
    let id = TlsIdentity::from_pem(
        &issued.cert_pem,
        &issued.key_pem,
        "serving certificate",
        "serving key",
    )
    .map_err(cert_err("serving identity"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(mesh_certs::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { source })?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .map_err(|source| Error::Tls { source })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca.cert_pem().to_string(), cfg))
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, app: Arc<App>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| server::handle(app.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
