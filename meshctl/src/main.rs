//! `meshctl`: the Meshwork command-line interface.
//!
//! What it is for: the commands a platform engineer types — managing the mesh
//! CA today; connecting clusters, status, services, observe and explain as the
//! mesh grows. Every command prints a table for people and JSON with
//! `-o json` for scripts; errors say what to do.
//!
//! What it is not for: logic shared with the servers. It calls the library
//! crates (mesh-certs, mesh-api) and never re-implements them.

mod ca;
mod certgen;
mod connect;
mod kube;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::OutputFormat;

/// Meshwork: connect Kubernetes clusters into one encrypted network.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about, long_about = None)]
struct Cli {
    /// Output format: a table for people, or JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    kube: kube::KubeArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the mesh CA: create it, issue certificates, inspect, rotate.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Connect two clusters: each imports the other's global services,
    /// identities and nodes.
    ///
    /// Refuses, changing nothing, when the clusters share an id or name, their
    /// pod CIDRs overlap, a mesh-apiserver is not running, or versions differ.
    /// Idempotent: connecting connected clusters changes nothing.
    ///
    /// Example: meshctl connect --context lab-c1 --destination-context lab-c2
    Connect(connect::ConnectArgs),
    /// Disconnect two clusters: each withdraws the other's state.
    ///
    /// Example: meshctl disconnect --context lab-c1 --destination-context lab-c2
    Disconnect(connect::DisconnectArgs),
    /// Show a cluster's mesh: its mesh-apiserver and every remote cluster
    /// (connected, synced, stale, counts, last error).
    ///
    /// Example: meshctl status --context lab-c1 --wait
    Status(connect::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (kube, out) = (&cli.kube, cli.output);
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd, out),
        Command::Connect(a) => block_on(connect::connect(kube, a, out)),
        Command::Disconnect(a) => block_on(connect::disconnect(kube, a, out)),
        Command::Status(a) => block_on(connect::status(kube, a, out)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one async command to completion.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
