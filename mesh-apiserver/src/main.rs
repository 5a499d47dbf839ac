//! The mesh-apiserver binary: flags → [`mesh_apiserver::server::start`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use mesh_apiserver::config::{Config, StoreKind};
use mesh_apiserver::import::{ImportSettings, directory_feed};
use mesh_apiserver::leader::ElectionConfig;
use mesh_apiserver::renew::{
    ClientRenewal, DirectoryEntries, EntrySink, OwnCerts, Renewal, SecretEntries,
};
use mesh_apiserver::server::{ServerParts, start};
use mesh_apiserver::store::{EtcdStore, MemoryStore, Store};
use mesh_certs::{LiveTls, TlsFiles, TrustDomain};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-apiserver: {}", mesh_api::report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// What is renewed here and where renewed certificates are written: the
/// Kubernetes Secrets, or the files when there is no Kubernetes.
async fn renewal(config: &Config) -> anyhow::Result<(Renewal, ClientRenewal)> {
    let signer = config.signer()?;
    let secrets = if config.kubernetes {
        let client = kube::Client::try_default()
            .await
            .context("Kubernetes client for certificate renewal (in-cluster or KUBECONFIG)")?;
        Some(kube::Api::namespaced(client, &config.namespace))
    } else {
        None
    };
    // With a signer, the Secrets (their files are read-only projections);
    // without one, only the server certificate is watched, from its file.
    let own = match (&secrets, &signer) {
        (Some(api), Some(_)) => OwnCerts::Secrets {
            api: Box::new(api.clone()),
            names: vec![
                ("server".into(), "meshwork-apiserver-tls".into()),
                ("node-agents".into(), "meshwork-node-agent-tls".into()),
            ],
        },
        _ => OwnCerts::Files(vec![(
            "server".into(),
            config.tls_cert.clone(),
            config.tls_key.clone(),
        )]),
    };
    let sink: Option<Arc<dyn EntrySink>> = match (&config.clustermesh_config_dir, secrets) {
        (Some(dir), _) => Some(Arc::new(DirectoryEntries(dir.clone()))),
        (None, Some(api)) => Some(Arc::new(SecretEntries {
            api,
            name: config.clustermesh_secret.clone(),
        })),
        (None, None) => None,
    };
    Ok((
        Renewal {
            signer,
            own: Some(own),
        },
        ClientRenewal {
            certs: Default::default(),
            sink,
        },
    ))
}

async fn run() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn,hyper=warn".into()),
        )
        .init();
    // The chart's ConfigMap (--config-dir) first, then the command line;
    // clap reports bad flags and --help itself.
    let args = match mesh_config::args_with_config_dir(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("mesh-apiserver: {e}");
            std::process::exit(2);
        }
    };
    let config = Config::parse_from(args);
    let local = config.local()?;
    let lb_pools = config.lb_ipam_pools()?;
    let store: Arc<dyn Store> = match config.store {
        StoreKind::Etcd => Arc::new(EtcdStore::connect_with(&config.etcd()?).await?),
        StoreKind::Memory => Arc::new(MemoryStore::new(config.memory_history)),
    };
    let replica = if config.replica_name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| format!("{}-{}", h.trim(), std::process::id()))
            .unwrap_or_else(|_| format!("replica-{}", std::process::id()))
    } else {
        config.replica_name.clone()
    };
    let election =
        (config.store == StoreKind::Etcd && config.leader_election).then(|| ElectionConfig {
            key: format!("meshwork/internal/{}/leader", local.name),
            identity: replica.clone(),
            ttl_seconds: config.leader_lease_ttl_seconds,
        });
    let feed = match &config.clustermesh_config_dir {
        Some(dir) => directory_feed(dir.clone(), Duration::from_secs(1)).await.0,
        None if config.kubernetes => {
            mesh_apiserver::kube_feed::secret_feed(&config.namespace, &config.clustermesh_secret)
                .await?
        }
        None => anyhow::bail!(
            "no remote cluster source: pass --clustermesh-config-dir or --kubernetes=true"
        ),
    };
    let grpc = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("--grpc-listen {}", config.grpc_listen))?;
    let status = tokio::net::TcpListener::bind(config.status_listen)
        .await
        .with_context(|| format!("--status-listen {}", config.status_listen))?;
    // Mounted Secrets change under a CA rotation: new handshakes use the new
    // files, open streams keep going.
    let files = TlsFiles {
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
        ca: config.tls_ca.clone(),
    };
    let tls = LiveTls::from_files(&files)?;
    let _tls_watch = tls.watch_files(files, Duration::from_secs(config.tls_reload_seconds.max(1)));
    let (renewal, client_renewal) = renewal(&config).await?;
    let running = start(ServerParts {
        local: local.clone(),
        store,
        election,
        grpc,
        status: Some(status),
        tls,
        trust_domain: TrustDomain::new(config.trust_domain.clone())?,
        import: ImportSettings {
            stale_timeout: Duration::from_secs(config.stale_timeout_seconds),
            max_backoff: Duration::from_secs(config.max_backoff_seconds.max(1)),
            nameservers: config.nameservers()?,
            quotas: config.quotas(),
            renewal: client_renewal,
        },
        config: feed,
        replica: replica.clone(),
        renewal,
    })
    .await?;
    if config.kubernetes {
        let client = kube::Client::try_default()
            .await
            .context("Kubernetes client for publishing status (in-cluster or KUBECONFIG)")?;
        tokio::spawn(mesh_apiserver::publish::run(
            running.status.clone(),
            client.clone(),
            config.namespace.clone(),
        ));
        if !lb_pools.is_empty() {
            tokio::spawn(mesh_apiserver::lb_ipam::controller::run(
                client,
                lb_pools,
                running.leadership.clone(),
            ));
        }
        let feed = mesh_apiserver::kube_feed::KubeFeed::new(
            running.writer.clone(),
            local,
            config.compat_cilium_annotations,
            Duration::from_secs(config.identity_gc_grace_seconds),
            running.status.refused_exports.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = feed.run().await {
                tracing::error!(error = %e, "Kubernetes feed stopped");
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: open watches end so clients reconnect to another replica");
    running.shutdown().await;
    Ok(())
}
