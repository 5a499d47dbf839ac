//! `mesh-lab`: build, inspect and remove the local multi-cluster lab.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_lab::bins::Bins;
use mesh_lab::kubelet::{Kubelet, PodSpec};
use mesh_lab::plan::LabPlan;
use mesh_lab::state::LabState;
use mesh_lab::up::{Lab, progress};
use mesh_lab::{forward, teardown};

/// The local multi-cluster lab: Meshwork clusters in network namespaces on
/// one host, reachable with kubectl and meshctl through contexts lab-c1…
#[derive(Debug, Parser)]
#[command(name = "mesh-lab", version)]
struct Cli {
    /// Where the lab keeps its state, logs and kubeconfig.
    #[arg(long, global = true, default_value = ".lab")]
    state_dir: PathBuf,
    /// Lab name: prefix of everything it creates (several labs can coexist).
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a lab.
    ///
    /// Example: mesh-lab up --clusters 2 --nodes 2 --encryption
    Up {
        /// Number of clusters (1-8).
        #[arg(long, default_value_t = 2)]
        clusters: u8,
        /// Nodes per cluster (1-8).
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// Encrypt traffic between nodes with WireGuard.
        #[arg(long)]
        encryption: bool,
        /// Seconds a mesh-apiserver keeps an unreachable remote cluster's
        /// state before withdrawing it (default: the chart's, 600).
        #[arg(long, value_name = "SECONDS")]
        stale_timeout: Option<u64>,
        /// Lifetime of every certificate (the lab's, and what the
        /// mesh-apiservers renew to), e.g. 120 to watch renewals happen;
        /// default: 30 days for the lab's, the chart's for renewals.
        #[arg(long, value_name = "SECONDS")]
        cert_lifetime: Option<u64>,
        /// MTU of the underlay (every interface on the lab's bridge), e.g.
        /// 1400 for a cloud network with a smaller MTU than Ethernet's;
        /// the agents derive the pods' and the tunnel's from it.
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1280..=9000))]
        underlay_mtu: Option<u32>,
        /// A chart value, as `helm --set` takes it (a dotted path; the
        /// value is JSON when it parses as JSON, else a string), e.g.
        /// `--set compat.ciliumPolicies=true`. Repeatable.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
    },
    /// Remove everything the lab created, also after a crashed `up`.
    Down,
    /// Show the lab: clusters, nodes, processes, API server ports.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create or delete pods: a Pod bound to the node, which that node's
    /// kubelet runs (real mesh-cni, an echo server on port 8080, its status).
    #[command(subcommand)]
    Pod(PodCmd),
    /// Kill a component, e.g. `mesh-lab kill c2/mesh-apiserver` (roles: see `status`).
    Kill {
        /// The role.
        role: String,
    },
    /// Start a component again with the command it had, e.g. `mesh-lab restart c1-n1/node-agent`.
    Restart {
        /// The role.
        role: String,
    },
    /// (internal) Keep a config directory equal to a ConfigMap, as the
    /// kubelet keeps a mounted ConfigMap.
    #[command(hide = true)]
    ConfigSync {
        /// The lab prefix (marks the process for `down`).
        #[arg(long)]
        lab: String,
        /// Kube context of the cluster.
        #[arg(long)]
        context: String,
        /// Kubeconfig holding that context.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Namespace of the ConfigMap.
        #[arg(long)]
        namespace: String,
        /// Its name.
        #[arg(long)]
        config_map: String,
        /// The directory to keep.
        #[arg(long)]
        dir: PathBuf,
        /// A Secret key to keep a file equal to: SECRET/KEY=PATH (repeat).
        #[arg(long = "secret-file")]
        secret_files: Vec<mesh_lab::config_sync::SecretFile>,
    },
    /// (internal) The kubelet of one node: runs the Pods bound to it (real
    /// mesh-cni, the echo server) and writes their status.
    #[command(hide = true)]
    Kubelet {
        /// The lab prefix (marks the process for `down`).
        #[arg(long)]
        lab: String,
        /// The node (c1-n1, …).
        #[arg(long)]
        node: String,
    },
    /// (internal) Forward a host loopback port into a lab namespace.
    #[command(hide = true)]
    Forward {
        /// The lab prefix (marks the process for `down`).
        #[arg(long)]
        lab: String,
        /// Namespace to connect from.
        #[arg(long)]
        netns: String,
        /// Address inside the namespace.
        #[arg(long)]
        to: SocketAddr,
        /// Host address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// File to write the bound port to.
        #[arg(long)]
        port_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create a pod.
    ///
    /// Example: mesh-lab pod add --cluster c2 --node c2-n1 --namespace shop --name web-1 --label app=web
    Add {
        #[command(flatten)]
        pod: PodArgs,
        /// Labels `key=value` (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Delete a pod.
    Del {
        #[command(flatten)]
        pod: PodArgs,
    },
}

#[derive(Debug, clap::Args)]
struct PodArgs {
    /// Cluster (c1, c2, …).
    #[arg(long)]
    cluster: String,
    /// Node (c1-n1, …).
    #[arg(long)]
    node: String,
    /// Kubernetes namespace (created when missing).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Pod name.
    #[arg(long)]
    name: String,
}

impl PodArgs {
    fn spec(&self, labels: &[String]) -> anyhow::Result<PodSpec> {
        let labels = labels
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--label {l:?}: use key=value"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(PodSpec {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels,
        })
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up {
            clusters,
            nodes,
            encryption,
            stale_timeout,
            cert_lifetime,
            underlay_mtu,
            set,
        } => {
            mesh_testbed::require_root();
            let mut plan = LabPlan::new(&cli.name, clusters, nodes, encryption)?;
            plan.underlay_mtu = underlay_mtu;
            plan.stale_timeout_seconds = stale_timeout;
            plan.cert_lifetime_seconds = cert_lifetime;
            for s in &set {
                let (path, value) = mesh_lab::plan::parse_set(s)?;
                plan.values.insert(path, value);
            }
            let bins = Bins::beside_self()?;
            let mut lab = Lab::start(plan, &cli.state_dir)?;
            lab.build_network()?;
            lab.start_outside(&bins)?;
            lab.start_apis(&bins)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(lab.install())?;
            lab.start_mesh(&bins)?;
            lab.start_kubelets()?;
            block_on(lab.wait_mesh_ready())?;
            lab.state.ready = true;
            lab.state.save(&lab.dir)?;
            progress(&format!(
                "lab {} is up; remove it with `mesh-lab down`",
                lab.plan.prefix
            ));
            Ok(())
        }
        Cmd::Down => {
            let prefix = LabState::load(&cli.state_dir)?
                .plan
                .map(|p| p.prefix)
                .unwrap_or_else(|| format!("mw{}", cli.name));
            let removed = teardown::down(&cli.state_dir, &prefix)?;
            progress(&format!(
                "removed {} processes, {} namespaces, {} other objects",
                removed.processes,
                removed.namespaces.len(),
                removed.paths.len()
            ));
            Ok(())
        }
        Cmd::Status { json } => {
            let state = LabState::load(&cli.state_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
                return Ok(());
            }
            let Some(plan) = &state.plan else {
                println!(
                    "no lab in {} (start one with `mesh-lab up`)",
                    cli.state_dir.display()
                );
                return Ok(());
            };
            println!(
                "lab {} ({})",
                plan.prefix,
                if state.ready {
                    "up"
                } else {
                    "incomplete: run `mesh-lab down`"
                }
            );
            for c in &plan.clusters {
                let port = state
                    .kube_api_ports
                    .get(c.name.as_str())
                    .map_or("-".into(), |p| format!("127.0.0.1:{p}"));
                println!(
                    "  cluster {} (id {}) context {} api {port} pods {}",
                    c.name, c.id, c.context, c.pod_cidr
                );
                for n in &c.nodes {
                    println!("    node {} {} pods {}", n.name, n.ip, n.pod_cidr);
                }
            }
            for p in &state.procs {
                let alive = std::path::Path::new(&format!("/proc/{}", p.pid)).exists();
                println!(
                    "  {:<24} pid {:<7} {}",
                    p.role,
                    p.pid,
                    if alive { "running" } else { "exited" }
                );
            }
            Ok(())
        }
        Cmd::Pod(cmd) => {
            let lab = Lab::open(&cli.state_dir)?;
            match cmd {
                PodCmd::Add { pod, labels } => {
                    let ip = block_on(lab.add_pod(&pod.spec(&labels)?))?;
                    println!("{ip}");
                }
                PodCmd::Del { pod } => block_on(lab.delete_pod(&pod.spec(&[])?))?,
            }
            Ok(())
        }
        Cmd::Kubelet { lab: _, node } => {
            let lab = Lab::open(&cli.state_dir)?;
            let kubelet = Kubelet::new(&lab, &node, Bins::beside_self()?)?;
            block_on(async {
                let client = lab.client(kubelet.cluster()).await?;
                kubelet.run(client).await
            })
        }
        Cmd::Kill { role } => {
            let n = Lab::open(&cli.state_dir)?.kill(&role)?;
            progress(&format!("killed {n} process(es) of {role}"));
            Ok(())
        }
        Cmd::Restart { role } => {
            let pid = Lab::open(&cli.state_dir)?.restart(&role)?;
            progress(&format!("{role} started again (pid {pid})"));
            Ok(())
        }
        Cmd::ConfigSync {
            lab: _,
            context,
            kubeconfig,
            namespace,
            config_map,
            dir,
            secret_files,
        } => block_on(mesh_lab::config_sync::run(
            &kubeconfig,
            &context,
            &namespace,
            &config_map,
            &dir,
            &secret_files,
        )),
        Cmd::Forward {
            lab: _,
            netns,
            to,
            listen,
            port_file,
        } => forward::serve(&netns, to, listen, &port_file),
    }
}
