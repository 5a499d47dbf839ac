//! mesh-wg: runs one Meshwork WireGuard device in the current network
//! namespace until SIGINT/SIGTERM, configured with the `wg` tool over its
//! UAPI socket. The node-agent runs it (and attaches to a running one) so the
//! tunnel outlives the agent; benchmarks and interop tests run it too.

use std::path::PathBuf;

use clap::Parser;
use mesh_wireguard::{Device, DeviceConfig, KeyStore};

#[derive(Debug, Parser)]
#[command(about = "Run a Meshwork userspace WireGuard device (configure it with `wg set`)")]
struct Args {
    /// Interface name.
    #[arg(long, default_value = mesh_wireguard::DEFAULT_IFNAME)]
    ifname: String,
    /// UDP listen port.
    #[arg(long, default_value_t = mesh_wireguard::DEFAULT_PORT)]
    port: u16,
    /// Directory of the UAPI socket.
    #[arg(long, default_value = mesh_wireguard::DEFAULT_UAPI_DIR)]
    uapi_dir: PathBuf,
    /// State dir holding the private key (generated when missing).
    #[arg(long, default_value = "/var/lib/meshwork")]
    state_dir: PathBuf,
    /// Interface MTU.
    #[arg(long, default_value_t = mesh_wireguard::DEFAULT_MTU)]
    mtu: u32,
    /// Number of TUN queues / UDP sockets (each with a reader thread per
    /// direction); default one per CPU, at most 4.
    #[arg(long)]
    queues: Option<usize>,
    /// Disable TUN offload and UDP GSO/GRO (one packet per syscall).
    #[arg(long)]
    no_offload: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-wg: {}", mesh_api::report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let key = KeyStore::in_state_dir(&args.state_dir).load_or_generate()?;
    let dev = Device::start(
        &DeviceConfig {
            ifname: args.ifname,
            listen_port: args.port,
            uapi_dir: args.uapi_dir,
            mtu: args.mtu,
            queues: args.queues.unwrap_or(DeviceConfig::default().queues),
            fwmark: 0,
            offload: !args.no_offload,
        },
        key,
    )?;
    let lost = wait_for_signal_or_loss(&dev);
    dev.shutdown();
    // Whoever runs the device (the node-agent) sees it gone and starts a
    // new one with a new interface.
    anyhow::ensure!(!lost, "the TUN interface was deleted; the device stopped");
    Ok(())
}

/// Waits for SIGINT/SIGTERM (false) or the interface's deletion (true).
fn wait_for_signal_or_loss(dev: &Device) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_like(tx);
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !dev.interface_lost() => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return true,
            _ => return false,
        }
    }
}

fn ctrlc_like(tx: std::sync::mpsc::Sender<()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::thread::spawn(move || {
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
}
