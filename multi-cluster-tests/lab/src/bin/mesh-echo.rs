//! `mesh-echo`: the lab's pod workload (`serve`) and its clients (`ask`,
//! `stream`, `probe`, and the bounded attacker `syn-flood`), meant to run inside pod
//! namespaces.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_lab::{echo, syn_flood};

/// The lab's echo workload: a server that says which pod, node and cluster
/// answered, and clients that count who answers.
#[derive(Debug, Parser)]
#[command(name = "mesh-echo", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve TCP and UDP on one port or several.
    Serve {
        /// Port (TCP and UDP); repeat for several.
        #[arg(long = "port", default_values_t = [8080])]
        ports: Vec<u16>,
        /// `namespace/name` of this pod.
        #[arg(long)]
        pod: String,
        /// This pod's node.
        #[arg(long)]
        node: String,
        /// This pod's cluster.
        #[arg(long)]
        cluster: String,
    },
    /// Connect N times and print, as JSON, who answered each time.
    Ask {
        /// Server address.
        addr: SocketAddr,
        /// Number of requests.
        #[arg(short, long, default_value_t = 1)]
        count: u32,
        /// Use UDP (also reports the reply's source address).
        #[arg(long)]
        udp: bool,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Send BYTES over one connection and read them back, checking each;
    /// print a JSON report (fails on a stall of --timeout-ms).
    Transfer {
        /// Server address.
        addr: SocketAddr,
        /// How many bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        bytes: u64,
        /// Longest wait without progress, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// Keep one connection echoing and open new ones meanwhile; print a JSON report.
    Stream {
        /// Server address.
        addr: SocketAddr,
        /// How long, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Open a new connection every this many milliseconds.
        #[arg(long, default_value_t = 200)]
        every_ms: u64,
    },
    /// Ask every address once, all at the same time; print a JSON array of
    /// whether each answered.
    Probe {
        /// Server addresses.
        #[arg(required = true)]
        addrs: Vec<SocketAddr>,
        /// Use UDP.
        #[arg(long)]
        udp: bool,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Connect from this local address (TCP; one of the namespace's).
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// TCP: a completed connect counts, whatever the server says (for
        /// servers that are not mesh-echo).
        #[arg(long)]
        connect: bool,
    },
    /// Send COUNT bare TCP SYNs from this pod's own address (raw socket,
    /// CAP_NET_RAW), each from another source port; print a JSON report.
    SynFlood {
        /// Target address (a service's ClusterIP:port, say).
        addr: SocketAddrV4,
        /// How many SYNs.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// At most this many per second (0: as fast as the kernel takes them).
        #[arg(long, default_value_t = 0)]
        pps: u64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Serve {
            ports,
            pod,
            node,
            cluster,
        } => match echo::serve_all(echo::Identity { pod, node, cluster }, &ports) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mesh-echo: serve on ports {ports:?}: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ask {
            addr,
            count,
            udp,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let mut failures = 0;
            for _ in 0..count {
                let line = if udp {
                    echo::ask_udp(addr, timeout)
                        .map(|(a, from)| serde_json::json!({"answer": a, "from": from.to_string()}))
                } else {
                    echo::ask_tcp(addr, timeout).map(|a| serde_json::json!({ "answer": a }))
                };
                match line {
                    Ok(v) => println!("{v}"),
                    Err(e) => {
                        failures += 1;
                        println!("{}", serde_json::json!({ "error": e.to_string() }));
                    }
                }
            }
            if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Transfer {
            addr,
            bytes,
            timeout_ms,
        } => match echo::transfer(addr, bytes, Duration::from_millis(timeout_ms)) {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
                ExitCode::FAILURE
            }
        },
        Cmd::Stream {
            addr,
            seconds,
            every_ms,
        } => {
            let r = echo::stream(
                addr,
                Duration::from_secs(seconds),
                Duration::from_millis(every_ms),
            );
            println!("{}", serde_json::to_string(&r).expect("report serializes"));
            if r.broken || r.new_failures > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Probe {
            addrs,
            udp,
            timeout_ms,
            source,
            connect,
        } => {
            if udp && (source.is_some() || connect) {
                eprintln!("mesh-echo: probe --source and --connect are for TCP only; drop --udp");
                return ExitCode::FAILURE;
            }
            if connect && source.is_some() {
                eprintln!("mesh-echo: probe --connect does not take --source yet; drop one");
                return ExitCode::FAILURE;
            }
            let timeout = Duration::from_millis(timeout_ms);
            let answered: Vec<bool> = if connect {
                addrs
                    .iter()
                    .map(|a| std::net::TcpStream::connect_timeout(a, timeout).is_ok())
                    .collect()
            } else {
                echo::probe_all(&addrs, udp, source, timeout)
            };
            println!("{}", serde_json::json!(answered));
            ExitCode::SUCCESS
        }
        Cmd::SynFlood { addr, count, pps } => match syn_flood::flood(addr, count, Some(pps)) {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-echo: syn-flood {addr}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
