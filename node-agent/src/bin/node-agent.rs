//! `node-agent`: Meshwork's per-node daemon. See the `node_agent` crate docs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use node_agent::api::{self, AgentState};
use node_agent::bpf_datapath::{BpfDatapath, BpfDatapathConfig};
use node_agent::config::{AgentConfig, ConfigError, LogFormat};
use node_agent::datapath::Datapath;
use node_agent::endpoint::EndpointManager;
use node_agent::feed::services;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match AgentConfig::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(ConfigError::Invalid(e)) => {
            eprintln!("node-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    tracing::info!(
        cluster = %config.cluster_name, cluster_id = %config.cluster_id, node = %config.node_name,
        pod_cidr = ?config.pod_cidr, state_dir = %config.state_dir.display(), "node-agent starting"
    );
    // Claim the socket first: a second agent for the same node must fail
    // here, before it touches the live agent's maps and attachments.
    let unix = api::bind_unix(&config.agent_socket)?;
    let _socket_file = SocketFile(config.agent_socket.clone());
    let datapath: Box<dyn Datapath> = Box::new(
        BpfDatapath::open(&BpfDatapathConfig::from_agent(&config)).context(
            "cannot start the eBPF datapath: --bpf-root must be on a bpffs mount and --cgroup-root a cgroup v2 directory",
        )?,
    );
    let kube = services::client_for(&config)
        .await
        .context("cannot set up the Kubernetes client of the service feed")?;
    let expected: &[&str] = if kube.is_some() {
        &[services::SOURCE]
    } else {
        &[]
    };
    let (manager, report) =
        EndpointManager::open_expecting(&config.state_dir, config.pod_cidr, datapath, expected)
            .context("cannot open the endpoint state")?;
    let mut manager = manager;
    let gone = manager
        .prune(host_veth_alive)
        .context("cannot prune endpoints whose interfaces are gone")?;
    for ep in &gone {
        tracing::warn!(
            container = %ep.registration.container_id, ifname = %ep.registration.ifname,
            host_ifname = %ep.registration.host_ifname,
            "endpoint dropped: its host veth no longer exists (pod deleted while the agent was down, or reboot)"
        );
    }
    tracing::info!(
        endpoints = manager.list().len(),
        pruned = gone.len(),
        upserted = report.upserted.len(),
        removed = report.removed.len(),
        failed = report.failed.len(),
        "endpoints restored from the state dir and reconciled"
    );
    let socket = config.agent_socket.clone();
    let metrics_address = config.metrics_address;
    let node_name = config.node_name.to_string();
    let state = AgentState::new(config, manager);
    let service_feed = kube.map(|client| services::spawn(client, node_name, state.clone()));

    let tcp = tokio::net::TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("cannot listen on --metrics-address {metrics_address}"))?;
    let bound = tcp.local_addr().context("metrics listener address")?;
    state.set_metrics_address(bound);
    tracing::info!(socket = %socket.display(), metrics = %bound, "serving");

    let reconciler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || s.reconcile()).await;
            }
        })
    };
    let api_server = axum::serve(unix, api::router(state.clone()));
    let metrics_server = axum::serve(tcp, api::metrics_router(state.clone()));
    let result = tokio::select! {
        r = api_server => r.context("local API server"),
        r = metrics_server => r.context("metrics server"),
        () = shutdown_signal() => Ok(()),
    };
    reconciler.abort();
    if let Some(feed) = service_feed {
        feed.abort();
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("node-agent stopped");
    result
}

/// Whether an endpoint's host veth still exists in this namespace with the
/// same ifindex (asked of the kernel for the agent's network namespace:
/// /sys/class/net shows the namespace of whoever mounted /sys, which is not
/// ours when the agent only switched its network namespace).
fn host_veth_alive(ep: &node_agent::endpoint::Endpoint) -> bool {
    mesh_bpf::netns::ifindex(&ep.registration.host_ifname)
        .is_ok_and(|i| i == ep.registration.host_ifindex)
}

/// Removes the agent socket file when `run` ends, also on a start-up error.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
