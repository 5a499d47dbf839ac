//! `mesh-lab`: build, inspect and remove the local multi-cluster lab.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_lab::bins::Bins;
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
    },
    /// Remove everything the lab created, also after a crashed `up`.
    Down,
    /// Show the lab: clusters, nodes, processes, API server ports.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        } => {
            mesh_testbed::require_root();
            let plan = LabPlan::new(&cli.name, clusters, nodes, encryption)?;
            let bins = Bins::beside_self()?;
            let mut lab = Lab::start(plan, &cli.state_dir)?;
            lab.build_network()?;
            lab.start_apis(&bins)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(lab.install())?;
            lab.start_mesh(&bins)?;
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
        Cmd::Forward {
            lab: _,
            netns,
            to,
            listen,
            port_file,
        } => forward::serve(&netns, to, listen, &port_file),
    }
}
