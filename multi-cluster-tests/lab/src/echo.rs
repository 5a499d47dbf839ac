//! The lab's pod workload and its clients.
//!
//! Server: on every TCP connection it first writes one line,
//! `pod=<ns/name> node=<node> cluster=<cluster> peer=<client ip>`, then echoes
//! every byte it reads; every UDP datagram gets that line back. So a client
//! learns which backend (and which cluster) answered, and a long-lived
//! connection can check that the bytes it sends come back unchanged.
//!
//! Clients (run inside a pod's namespace, never the host's): `ask` opens N
//! connections and tallies who answered; `stream` keeps one connection busy
//! and counts breaks, while opening a new connection every interval.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who a server is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// Its cluster.
    pub cluster: String,
}

impl Identity {
    fn line(&self, peer: SocketAddr) -> String {
        format!(
            "pod={} node={} cluster={} peer={}\n",
            self.pod,
            self.node,
            self.cluster,
            peer.ip()
        )
    }
}

/// One parsed greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Pod that answered.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// Its cluster.
    pub cluster: String,
    /// The source address the server saw.
    pub peer: String,
}

/// Parses a greeting line.
pub fn parse_greeting(line: &str) -> Option<Answer> {
    let mut f: BTreeMap<&str, &str> = BTreeMap::new();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        f.insert(k, v);
    }
    Some(Answer {
        pod: f.get("pod")?.to_string(),
        node: f.get("node")?.to_string(),
        cluster: f.get("cluster")?.to_string(),
        peer: f.get("peer")?.to_string(),
    })
}

/// Serves TCP and UDP on `port` (all addresses) until killed.
/// Serves every port of `ports` (TCP and UDP) until the process ends.
pub fn serve_all(id: Identity, ports: &[u16]) -> std::io::Result<()> {
    let (last, others) = ports
        .split_last()
        .ok_or_else(|| std::io::Error::other("no port to serve"))?;
    for port in others {
        let id = id.clone();
        let port = *port;
        // Bind here so a port in use fails the start, not a thread.
        let tcp = TcpListener::bind(("0.0.0.0", port))?;
        let udp = UdpSocket::bind(("0.0.0.0", port))?;
        thread::spawn(move || serve_on(id, tcp, udp));
    }
    serve(id, *last)
}

pub fn serve(id: Identity, port: u16) -> std::io::Result<()> {
    let tcp = TcpListener::bind(("0.0.0.0", port))?;
    let udp = UdpSocket::bind(("0.0.0.0", port))?;
    serve_on(id, tcp, udp)
}

fn serve_on(id: Identity, tcp: TcpListener, udp: UdpSocket) -> std::io::Result<()> {
    let uid = id.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(uid.line(peer).as_bytes(), peer);
        }
    });
    for conn in tcp.incoming() {
        let Ok(mut conn) = conn else { continue };
        let id = id.clone();
        thread::spawn(move || {
            let Ok(peer) = conn.peer_addr() else { return };
            if conn.write_all(id.line(peer).as_bytes()).is_err() {
                return;
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    Ok(())
}

/// What [`transfer`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReport {
    /// Who answered.
    pub answer: Answer,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes echoed back, equal to what was sent, in order.
    pub echoed: u64,
    /// Seconds from the greeting to the last echoed byte.
    pub seconds: f64,
}

/// Sends `bytes` bytes (a counting pattern) over one TCP connection to the
/// echo server at `addr` and reads them back, checking every byte: a
/// transfer that stalls (a black hole: a packet too big for the path,
/// dropped) fails after `timeout` without progress.
pub fn transfer(
    addr: SocketAddr,
    bytes: u64,
    timeout: Duration,
) -> std::io::Result<TransferReport> {
    let conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let answer = parse_greeting(&line).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("greeting {line:?}"),
        )
    })?;
    let start = Instant::now();
    let mut writer = conn;
    let sender = thread::spawn(move || -> std::io::Result<u64> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = ((sent + i as u64) % 251) as u8;
            }
            writer.write_all(&chunk[..n])?;
            sent += n as u64;
        }
        Ok(sent)
    });
    let mut echoed = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while echoed < bytes {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the connection closed after {echoed} of {bytes} bytes"),
            ));
        }
        for (i, b) in buf[..n].iter().enumerate() {
            if *b != ((echoed + i as u64) % 251) as u8 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("byte {} came back changed", echoed + i as u64),
                ));
            }
        }
        echoed += n as u64;
    }
    let sent = sender
        .join()
        .map_err(|_| std::io::Error::other("sender panicked"))??;
    Ok(TransferReport {
        answer,
        sent,
        echoed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Connects once over TCP and reads the greeting.
pub fn ask_tcp(addr: SocketAddr, timeout: Duration) -> std::io::Result<Answer> {
    ask_tcp_from(addr, None, timeout)
}

/// [`ask_tcp`] from the local address `source` (one of this namespace's),
/// when given.
pub fn ask_tcp_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let conn: TcpStream = match source {
        None => TcpStream::connect_timeout(&addr, timeout)?,
        Some(ip) => {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
            sock.connect_timeout(&addr.into(), timeout)?;
            sock.into()
        }
    };
    conn.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    parse_greeting(&line)
        .ok_or_else(|| std::io::Error::other(format!("not a mesh-echo greeting: {line:?}")))
}

/// Sends one UDP datagram and reads the reply; also returns the address the
/// reply came from (a ClusterIP when the socket LB did its job).
pub fn ask_udp(addr: SocketAddr, timeout: Duration) -> std::io::Result<(Answer, SocketAddr)> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(b"hello", addr)?;
    let mut buf = [0u8; 1024];
    let (n, from) = sock.recv_from(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    let answer = parse_greeting(&line)
        .ok_or_else(|| std::io::Error::other(format!("not a mesh-echo greeting: {line:?}")))?;
    Ok((answer, from))
}

/// Asks every address of `targets` once, all at the same time (TCP, or
/// UDP with `udp`): whether each answered within `timeout`. A matrix of
/// reachability then costs one timeout, not one per refused pair.
pub fn probe_all(
    targets: &[SocketAddr],
    udp: bool,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> Vec<bool> {
    thread::scope(|s| {
        let asks: Vec<_> = targets
            .iter()
            .map(|addr| {
                s.spawn(move || {
                    if udp {
                        ask_udp(*addr, timeout).is_ok()
                    } else {
                        ask_tcp_from(*addr, source, timeout).is_ok()
                    }
                })
            })
            .collect();
        asks.into_iter()
            .map(|a| a.join().unwrap_or(false))
            .collect()
    })
}

/// What [`stream`] saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamReport {
    /// Bytes sent and verified back on the long-lived connection.
    pub verified_bytes: u64,
    /// The long-lived connection broke (error or wrong bytes).
    pub broken: bool,
    /// Why it broke.
    pub break_reason: Option<String>,
    /// New connections attempted meanwhile.
    pub new_attempts: u32,
    /// New connections that failed.
    pub new_failures: u32,
    /// Longest time the long-lived connection made no progress, in ms.
    pub longest_stall_ms: u64,
}

/// Keeps one connection echoing a counter pattern for `duration`, and opens
/// a new connection every `every`; reports what broke.
pub fn stream(addr: SocketAddr, duration: Duration, every: Duration) -> StreamReport {
    let mut report = StreamReport::default();
    let conn = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(c) => c,
        Err(e) => {
            report.broken = true;
            report.break_reason = Some(format!("connect: {e}"));
            return report;
        }
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone socket"));
    let mut writer = conn;
    let mut greeting = String::new();
    if reader.read_line(&mut greeting).is_err() {
        report.broken = true;
        report.break_reason = Some("no greeting".into());
        return report;
    }
    let start = Instant::now();
    let mut next_new = start;
    let mut last_progress = Instant::now();
    let mut seq: u64 = 0;
    while start.elapsed() < duration {
        let chunk: Vec<u8> = (0..1024u64).map(|i| ((seq + i) % 251) as u8).collect();
        let mut back = vec![0u8; chunk.len()];
        let res = writer
            .write_all(&chunk)
            .and_then(|()| reader.read_exact(&mut back));
        match res {
            Ok(()) if back == chunk => {
                report.verified_bytes += chunk.len() as u64;
                let stall = last_progress.elapsed().as_millis() as u64;
                report.longest_stall_ms = report.longest_stall_ms.max(stall);
                last_progress = Instant::now();
            }
            Ok(()) => {
                report.broken = true;
                report.break_reason = Some("echoed bytes differ".into());
                break;
            }
            Err(e) => {
                report.broken = true;
                report.break_reason = Some(e.to_string());
                break;
            }
        }
        seq += 1024;
        if Instant::now() >= next_new {
            report.new_attempts += 1;
            if ask_tcp(addr, Duration::from_secs(3)).is_err() {
                report.new_failures += 1;
            }
            next_new += every;
        }
        thread::sleep(Duration::from_millis(5));
    }
    report
}

#[cfg(test)]
mod tests;
