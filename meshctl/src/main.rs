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

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the mesh CA: create it, issue certificates, inspect, rotate.
    #[command(subcommand)]
    Ca(ca::CaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd, cli.output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
