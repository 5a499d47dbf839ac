//! Small network client used by mesh-bpf's namespace tests and benchmarks:
//! run inside a pod namespace (and cgroup), it reports what the application
//! sees (payload, peer address), which is what socket LB must get right.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "mesh-bpf test/benchmark client")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// TCP: connect, read until EOF, print "<payload> <peer>".
    Tcp {
        /// Target address:port.
        target: SocketAddrV4,
    },
    /// UDP: send "hi", print "<payload> <peer>" of the reply.
    Udp {
        /// Target address:port.
        target: SocketAddrV4,
        /// Use connect()+send()+getpeername() instead of sendto()/recvfrom().
        #[arg(long)]
        connected: bool,
    },
    /// Server: answer every TCP connection and UDP datagram on `port` with
    /// `name`; on `port + 1`, echo each TCP line prefixed with `name`.
    Serve {
        /// Port for both TCP and UDP.
        #[arg(long)]
        port: u16,
        /// What to answer.
        #[arg(long)]
        name: String,
        /// Answer `<name>@<peer>` instead: the source address the server
        /// saw (what masquerade must get right).
        #[arg(long)]
        with_peer: bool,
    },
    /// Benchmark: open and close `count` TCP connections; print latencies.
    Connect {
        /// Target address:port.
        target: SocketAddrV4,
        /// Number of connections.
        #[arg(long, default_value_t = 1000)]
        count: u32,
    },
}

fn main() {
    let args = Args::parse();
    let timeout = Duration::from_secs(3);
    match args.cmd {
        Cmd::Tcp { target } => {
            let mut s = TcpStream::connect_timeout(&target.into(), timeout).unwrap_or_else(|e| {
                eprintln!("connect {target}: {e}");
                std::process::exit(2)
            });
            s.set_read_timeout(Some(timeout)).expect("set timeout");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            let peer = s.peer_addr().expect("peer");
            println!("{} {peer}", buf.trim());
        }
        Cmd::Udp { target, connected } => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.set_read_timeout(Some(timeout)).expect("set timeout");
            let mut buf = [0u8; 512];
            let (n, peer) = if connected {
                s.connect(target).expect("connect");
                s.send(b"hi").expect("send");
                let n = s.recv(&mut buf).unwrap_or_else(|e| {
                    eprintln!("recv: {e}");
                    std::process::exit(2)
                });
                (n, s.peer_addr().expect("getpeername"))
            } else {
                s.send_to(b"hi", target).expect("sendto");
                s.recv_from(&mut buf).unwrap_or_else(|e| {
                    eprintln!("recvfrom: {e}");
                    std::process::exit(2)
                })
            };
            println!("{} {peer}", String::from_utf8_lossy(&buf[..n]).trim());
        }
        Cmd::Serve {
            port,
            name,
            with_peer,
        } => {
            let tcp = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
            let udp = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            let echo = std::net::TcpListener::bind(("0.0.0.0", port + 1)).expect("bind echo");
            let echo_name = name.clone();
            std::thread::spawn(move || {
                for s in echo.incoming().flatten() {
                    let name = echo_name.clone();
                    std::thread::spawn(move || {
                        let mut w = s.try_clone().expect("clone stream");
                        let r = std::io::BufReader::new(s);
                        for line in std::io::BufRead::lines(r) {
                            let Ok(line) = line else { break };
                            if writeln!(w, "{name} {line}").is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let reply = move |peer: std::net::SocketAddr| match with_peer {
                true => format!("{name}@{peer}\n"),
                false => format!("{name}\n"),
            };
            let r = reply.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(r(peer).as_bytes(), peer);
                }
            });
            for mut s in tcp.incoming().flatten() {
                let peer = s.peer_addr().expect("peer");
                let _ = s.write_all(reply(peer).as_bytes());
            }
        }
        Cmd::Connect { target, count } => {
            let mut lat = Vec::with_capacity(count as usize);
            let start = Instant::now();
            let mut failed = 0u32;
            for _ in 0..count {
                let t = Instant::now();
                match TcpStream::connect_timeout(&target.into(), timeout) {
                    Ok(mut s) => {
                        lat.push(t.elapsed());
                        let _ = s.write_all(b"");
                    }
                    Err(_) => failed += 1,
                }
            }
            let total = start.elapsed();
            lat.sort();
            let pct = |p: f64| {
                lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                    .map(|d| d.as_secs_f64() * 1e6)
                    .unwrap_or(f64::NAN)
            };
            println!(
                "ok={} failed={failed} p50_us={:.1} p99_us={:.1} max_us={:.0} conn_per_s={:.0}",
                lat.len(),
                pct(0.5),
                pct(0.99),
                pct(1.0),
                f64::from(count - failed) / total.as_secs_f64()
            );
        }
    }
}
