//! `mesh-test-apiserver`: runs the test Kubernetes API server until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mesh_test_apiserver::{Config, TestApiServer, write_private};

/// Test double of the Kubernetes API server for Meshwork's lab (never shipped).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed and written to --ready-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// IPv4 CIDR Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: ipnet::Ipv4Net,
    /// Where to write the kubeconfig (mode 0600).
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Context (and cluster/user) name in the kubeconfig.
    #[arg(long, default_value = "lab-c1")]
    context: String,
    /// File that receives the bound address once the server serves.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Extra DNS names or IPs for the serving certificate (repeatable); needed
    /// when listening on 0.0.0.0 or when clients come through another address.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Server URL written into the kubeconfig (default: https://<bound address>).
    #[arg(long)]
    server_url: Option<String>,
    /// Bearer token clients must send (default: a random one, written into the kubeconfig).
    #[arg(long, env = "MESH_TEST_APISERVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_interval_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = TestApiServer::start(Config {
        listen: args.listen,
        service_cidr: args.service_cidr,
        context: args.context,
        extra_sans: args.tls_san,
        history: args.watch_history,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
        token: args.token,
    })
    .await?;
    let url = args.server_url.clone().unwrap_or_else(|| server.url());
    write_private(&args.kubeconfig_out, server.kubeconfig_for(&url).as_bytes())
        .context("writing the kubeconfig")?;
    if let Some(ready) = &args.ready_file {
        write_private(ready, format!("{}\n", server.addr()).as_bytes())
            .context("writing the ready file")?;
    }
    println!("{}", server.addr());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for a signal")?;
    Ok(())
}
