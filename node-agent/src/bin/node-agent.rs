//! `node-agent`: Meshwork's per-node daemon. See the `node_agent` crate docs.

use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use node_agent::api::{self, AgentState};
use node_agent::bpf_datapath::{BpfDatapath, BpfDatapathConfig};
use node_agent::config::{AgentConfig, ConfigError, LogFormat};
use node_agent::datapath::Datapath;
use node_agent::encryption::{DeviceSpec, Encryption};
use node_agent::endpoint::EndpointManager;
use node_agent::feed::{mesh::MeshFeed, node as own_node, services};
use node_agent::node_controller::NodeController;
use node_agent::node_controller::annotations::{AnnotationWriter, KubeNode, Wanted};
use node_agent::node_controller::kernel::{EncryptionStarter, KernelRoutes};
use node_agent::node_sync::RoutingStatus;
use node_agent::routes::LocalNode;
use node_agent::shared_manager::SharedManager;
use node_agent::status::StatusFeeds;

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
            tracing::error!("{}", mesh_api::report(e.as_ref()));
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

async fn run(mut config: AgentConfig) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing::info!(
        cluster = %config.cluster_name, cluster_id = %config.cluster_id, node = %config.node_name,
        pod_cidr = ?config.pod_cidr, state_dir = %config.state_dir.display(), "node-agent starting"
    );
    // Claim the socket first: a second agent for the same node must fail
    // here, before it touches the live agent's WireGuard device or maps.
    let unix = api::bind_unix(&config.agent_socket)?;
    let _socket_file = SocketFile(config.agent_socket.clone());
    // Kubernetes: only when configured (KUBECONFIG or in-cluster), never a
    // stray ~/.kube/config.
    let kube = if std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        match own_node::client().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes access; running from flags and the mesh feed only");
                None
            }
        }
    } else {
        tracing::info!(
            "neither KUBECONFIG nor in-cluster configuration: not reading the Node object"
        );
        None
    };
    let mut node_ip = None;
    if let Some(client) = &kube {
        match own_node::read(client, config.node_name.as_str()).await {
            Ok(node) => {
                node_ip = node.internal_ips.first().copied();
                if config.pod_cidr.is_none() {
                    config.pod_cidr = node.pod_cidrs.iter().find(|c| c.addr().is_ipv4()).copied();
                }
                tracing::info!(node_ip = ?node_ip, pod_cidrs = ?node.pod_cidrs, "own Node read");
            }
            Err(e) if config.pod_cidr.is_none() => {
                return Err(anyhow::Error::new(e)
                    .context("no --pod-cidr and the Node object cannot be read"));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the own Node; using --pod-cidr"),
        }
    }
    // SNAT ports (masquerade, NodePort to other nodes) come from outside
    // this namespace's ephemeral range, read once; with masquerade on, a
    // range that leaves no room is a configuration error.
    let snat_ports = match node_agent::masquerade::ports_for_this_node() {
        Ok(p) => Some(p),
        Err(e) if config.enable_bpf_masquerade => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "no SNAT ports: NodePort flows to backends on other nodes are dropped");
            None
        }
    };
    let node_ipv4 = node_ip.and_then(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(_) => None,
    });
    // The node interface: the one holding the node address. The node
    // programs (masquerade, NodePort, host firewall) attach there and the
    // MTUs derive from it; an address on no interface of this namespace
    // leaves those off (said once), never the agent.
    let node_interface = match node_ipv4.map(node_agent::netdev::interface_with_address) {
        Some(Ok(Some(i))) => Some(i),
        Some(Ok(None)) => {
            tracing::error!(node_ip = ?node_ipv4, "the Node's InternalIP is on no interface of this node: masquerade, NodePort and the host firewall are off, MTUs assume 1500 (fix the Node's address)");
            None
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot look up the node interface: masquerade, NodePort and the host firewall are off");
            None
        }
        None => None,
    };
    let local_node_ip = node_interface.as_ref().and(node_ipv4);
    let masquerade = snat_ports.map(|ports| node_agent::masquerade::MasqueradeSettings {
        masquerade: config.enable_bpf_masquerade,
        node_ip: local_node_ip,
        ports,
        extra_exempt: config.non_masquerade_cidrs.clone(),
    });
    let underlay_mtu = match &node_interface {
        Some(node_agent::netdev::NodeInterface {
            name,
            mtu: Some(mtu),
        }) => {
            tracing::info!(interface = name, mtu, "node interface MTU");
            *mtu
        }
        _ => {
            tracing::warn!(
                fallback = node_agent::mtu::FALLBACK_UNDERLAY_MTU,
                "the node interface's MTU is not known; assuming the fallback (set --mtu to be sure)"
            );
            node_agent::mtu::FALLBACK_UNDERLAY_MTU
        }
    };
    let mtu = node_agent::mtu::plan(underlay_mtu, config.mtu, config.enable_encryption);
    tracing::info!(
        underlay = mtu.underlay,
        tunnel = mtu.tunnel,
        pod = mtu.pod,
        configured = mtu.configured,
        "MTUs"
    );
    // A device that cannot start is not fatal: the node controller retries
    // it every pass, and strict mode drops what it would carry meanwhile
    // (exiting would leave the node without CNI and datapath updates).
    let device_spec = DeviceSpec {
        state_dir: config.state_dir.clone(),
        ifname: config.wireguard_interface.clone(),
        port: config.wireguard_port,
        program: config
            .wireguard_device_program
            .clone()
            .unwrap_or_else(node_agent::encryption::default_device_program),
        start: config.wireguard_device_start,
        mtu: mtu.tunnel,
    };
    let encryption = if config.enable_encryption {
        match Encryption::start(&device_spec) {
            Ok(enc) => {
                tracing::info!(interface = enc.ifname(), public_key = %enc.public_key(), "WireGuard device up");
                Some(Arc::new(enc))
            }
            Err(e) => {
                tracing::error!(error = %format!("{:#}", anyhow::Error::new(e)), "cannot start the WireGuard device (--enable-encryption); retrying, strict mode drops what it would carry");
                None
            }
        }
    } else {
        None
    };
    // The agent's annotations on its Node: where meshctl finds this agent
    // (written once, retried until it is), and the WireGuard key (written
    // by the node controller, which follows rotations and toggles).
    let node = kube.clone().map(|client| {
        Arc::new(KubeNode {
            client,
            name: config.node_name.to_string(),
        })
    });
    let _agent_api = node.clone().map(|node| {
        let writer = AnnotationWriter::spawn(node, own_node::AGENT_API_ANNOTATION);
        writer.set(Wanted::Set(own_node::agent_api_value(&config.agent_socket)));
        writer
    });
    let key_writer =
        node.map(|node| AnnotationWriter::spawn(node, own_node::WG_PUB_KEY_ANNOTATION));
    // encryption.* keys are re-read from the config dir while running.
    let settings = node_agent::config_watch::spawn(
        std::env::args_os().collect(),
        config.encryption_settings(),
        node_agent::config_watch::DEFAULT_PERIOD,
    );
    let mut _tls_watch = None;
    let mesh = match &config.mesh_apiserver_address {
        Some(address) => {
            let (Some(cert), Some(key), Some(ca)) = (
                &config.mesh_client_cert,
                &config.mesh_client_key,
                &config.mesh_client_ca,
            ) else {
                anyhow::bail!(
                    "--mesh-apiserver-address needs --mesh-client-cert, --mesh-client-key and --mesh-client-ca (the node's certificate)"
                );
            };
            // Checked once with the flags named in errors; then served from
            // a LiveTls that follows the files (CA rotation, renewal): the
            // next connection uses them, the open watch keeps going.
            node_agent::feed::mesh::client_tls(cert, key, ca, &config.cluster_name)
                .context("cannot load the node's mesh-apiserver client certificate")?;
            let files = mesh_certs::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            };
            let live = mesh_certs::LiveTls::from_files(&files)
                .context("cannot load the node's mesh-apiserver client certificate")?;
            _tls_watch = Some(live.watch_files(files, Duration::from_secs(5)));
            let tls = live
                .server_of(config.cluster_name.clone())
                .and_then(|expected| live.client_config(&expected))
                .context("the node's mesh-apiserver client TLS configuration")?;
            let feed =
                MeshFeed::for_cluster(address, config.cluster_name.clone(), config.cluster_id);
            feed.report_certificate(live.clone());
            tokio::spawn(feed.clone().run(tls, Duration::from_secs(10)));
            Some(feed)
        }
        None => None,
    };
    let mut kernel_routes = KernelRoutes::new(
        LocalNode {
            cluster: config.cluster_name.clone(),
            name: config.node_name.clone(),
            pod_cidrs: config.pod_cidr.into_iter().collect(),
        },
        config.bpf_root.clone(),
    );
    if let Some(settings) = masquerade.clone() {
        kernel_routes = kernel_routes.with_masquerade(settings);
    }
    let (controller, outputs) = NodeController::new(
        config.node_name.to_string(),
        config.wireguard_port,
        EncryptionStarter(device_spec.clone()),
        kernel_routes,
        key_writer,
        encryption,
        RoutingStatus {
            node_ip,
            ..Default::default()
        },
    );
    // Without the mesh feed the controller only keeps the key published.
    let node_controller = tokio::spawn(controller.run(mesh.clone(), settings));
    let datapath_config = BpfDatapathConfig {
        node_address: local_node_ip,
        ..BpfDatapathConfig::from_agent(&config)
    };
    let datapath: Box<dyn Datapath> = Box::new(BpfDatapath::open(&datapath_config).context(
        "cannot start the eBPF datapath (--bpf-root needs bpffs, --cgroup-root cgroup v2)",
    )?);
    // Services come from Kubernetes when it is reachable: until that source
    // has delivered once, the restored maps are kept as they are.
    let mut expected: Vec<&str> = Vec::new();
    if kube.is_some() {
        expected.push(services::SOURCE);
    }
    if mesh.is_some() {
        // The mesh's ipcache entries stay until the feed has synced again,
        // and the policies' CIDR identities until the policies are listed.
        expected.push(node_agent::identity_sync::SOURCE);
        if kube.is_some() {
            expected.push(node_agent::identity_sync::CIDR_SOURCE);
        }
    }
    let (manager, report) =
        EndpointManager::open_expecting(&config.state_dir, config.pod_cidr, datapath, &expected)
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
    let global = services::GlobalSource {
        mesh: mesh.clone(),
        cluster: config.cluster_name.clone(),
        compat_cilium: config.compat_cilium_annotations,
    };
    let local_view = node_agent::identity_sync::LocalView {
        cluster: config.cluster_name.clone(),
        node: config.node_name.clone(),
        encryption: config.enable_encryption,
        allow_localhost: config.allow_localhost == "always",
        policy_audit: config.policy_audit_mode,
    };
    let (policy_status, policy) = watch::channel(Default::default());
    let bpf_root = config.bpf_root.clone();
    let shared = Arc::new(SharedManager::new(manager));
    let status = StatusFeeds {
        mesh: mesh.clone(),
        encryption: outputs.encryption,
        routing: outputs.routing,
        policy,
        key_annotation: outputs.key_annotation,
        mtu: Some(mtu),
    };
    let cilium_policies = config.compat_cilium_policies;
    let state = AgentState::new(config, shared.clone(), status);
    let identity_controller = mesh.clone().map(|feed| {
        let sources = node_agent::identity_sync::Sources {
            mesh: feed,
            policies: kube
                .as_ref()
                .map(|client| node_agent::feed::policy::PolicyFeed::start(client, cilium_policies)),
        };
        tokio::spawn(node_agent::identity_sync::run(
            shared.clone(),
            sources,
            local_view,
            policy_status,
        ))
    });
    let flow_reader = {
        let s = state.clone();
        node_agent::flows::spawn_reader(&bpf_root, state.flows().clone(), move || s.flow_resolver())
            .context("cannot read the datapath's flow events")?
    };
    let service_feed =
        kube.map(|client| services::spawn(client, node_name, global, shared.clone()));

    let tcp = tokio::net::TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("cannot listen on --metrics-address {metrics_address}"))?;
    let bound = tcp.local_addr().context("metrics listener address")?;
    state.set_metrics_address(bound);
    tracing::info!(socket = %socket.display(), metrics = %bound, "serving");

    let reconciler = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let s = shared.clone();
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
    if let Some(t) = identity_controller {
        t.abort();
    }
    drop(flow_reader);
    node_controller.abort();
    if let Some(feed) = service_feed {
        feed.abort();
    }
    // Routes and the WireGuard device stay: the next agent attaches to the
    // device and converges on the routes, and traffic never stops.
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
