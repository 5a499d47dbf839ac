//! `meshctl`: the Meshwork command-line interface.
//!
//! What it is for: the commands a platform engineer types — the mesh CA,
//! connecting clusters, status, and seeing what the mesh does: `observe`
//! (flows), `encryption status`, `services`, `explain`. Every command prints
//! a table for people and JSON with `-o json` for scripts (shapes in
//! [`meshctl::report`]); errors say what to do. Exit codes: 0 ok, 1 error,
//! 3 a check failed (explain, encryption status), 4 some node-agents did not
//! answer.
//!
//! What it is not for: logic shared with the servers. It calls the library
//! crates (mesh-certs, mesh-api) and never re-implements them.

mod agents;
mod ca;
mod ca_rotate;
mod certgen;
mod connect;
mod encryption;
mod explain;
mod kube;
mod observe;
mod output;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connect::parse_duration;
use crate::output::OutputFormat;

/// How a command ended, for the exit code scripts rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: done, everything answered and checked out.
    Ok,
    /// Exit 3: the command worked, and what it checked is broken (explain:
    /// the connection would fail; encryption status: a peer without
    /// handshake).
    CheckFailed,
    /// Exit 4: some node-agents did not answer; the others' results are shown.
    Partial,
}

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
    /// Show the flows the node-agents of a cluster saw (what passed, what
    /// was dropped and why).
    Observe(observe::ObserveArgs),
    /// Encryption per node: mode, key, WireGuard peers and last handshakes.
    #[command(subcommand)]
    Encryption(encryption::EncryptionCommand),
    /// The global services of a cluster and where their backends are.
    Services(services::ServicesArgs),
    /// Explain, hop by hop, why a connection from a pod works or not.
    Explain(explain::ExplainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (kube, out) = (&cli.kube, cli.output);
    let done = |r: anyhow::Result<()>| r.map(|()| Outcome::Ok);
    let result = match cli.command {
        Command::Ca(cmd) => done(ca::run(cmd, kube, out)),
        Command::Connect(a) => done(block_on(connect::connect(kube, a, out))),
        Command::Disconnect(a) => done(block_on(connect::disconnect(kube, a, out))),
        Command::Status(a) => done(block_on(connect::status(kube, a, out))),
        Command::Observe(a) => block_on(observe::observe(kube, a, out)),
        Command::Encryption(c) => block_on(encryption::run(kube, c, out)),
        Command::Services(a) => block_on(services::services(kube, a, out)),
        Command::Explain(a) => block_on(explain::explain(kube, a, out)),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(3),
        Ok(Outcome::Partial) => ExitCode::from(4),
        Err(e) => {
            eprintln!("error: {}", mesh_api::report(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Runs one async command to completion.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
