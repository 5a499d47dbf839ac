//! A bounded TCP SYN flood from a pod's own address, for the scenario that
//! proves one pod cannot exhaust the node's conntrack: bare SYNs from a raw
//! socket (no connection state on the sender, so nothing ever completes a
//! handshake), each from a different source port.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What [`flood`] sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodReport {
    /// The source address the SYNs carried (the pod's own).
    pub source: String,
    /// SYNs handed to the kernel.
    pub sent: u64,
    /// Sends the kernel refused (buffer full, no route).
    pub send_errors: u64,
    /// How long sending took, in ms.
    pub elapsed_ms: u64,
}

/// The 16-bit ones' complement sum of `data` added to `acc`.
fn sum16(acc: u32, data: &[u8]) -> u32 {
    data.chunks(2).fold(acc, |acc, c| {
        acc + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
    })
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A 20-byte TCP SYN from `src:sport` to `dst` with sequence `seq`, its
/// checksum computed over the IPv4 pseudo-header.
pub fn syn_segment(src: Ipv4Addr, sport: u16, dst: SocketAddrV4, seq: u32) -> [u8; 20] {
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[12] = 5 << 4; // data offset: 5 words, no options
    seg[13] = 0x02; // SYN
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 6; // TCP
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let csum = fold(sum16(sum16(0, &pseudo), &seg));
    seg[16..18].copy_from_slice(&csum.to_be_bytes());
    seg
}

/// The source address the kernel picks to reach `dst` from here.
fn source_for(dst: SocketAddrV4) -> std::io::Result<Ipv4Addr> {
    let probe = UdpSocket::bind("0.0.0.0:0")?;
    probe.connect(dst)?;
    match probe.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        other => Err(std::io::Error::other(format!("not IPv4: {other}"))),
    }
}

/// Sends `count` SYNs to `dst` from this namespace's own address, source
/// ports cycling through 1024..=65535 (and sequence numbers varying, so a
/// reused port is a new flow to nobody), at most `pps` per second when set.
/// Needs CAP_NET_RAW.
pub fn flood(dst: SocketAddrV4, count: u64, pps: Option<u64>) -> std::io::Result<FloodReport> {
    let src = source_for(dst)?;
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::TCP),
    )?;
    let to = socket2::SockAddr::from(SocketAddrV4::new(*dst.ip(), 0));
    let start = Instant::now();
    let mut report = FloodReport {
        source: src.to_string(),
        ..FloodReport::default()
    };
    for i in 0..count {
        if let Some(pps) = pps.filter(|p| *p > 0) {
            let due = Duration::from_secs_f64(i as f64 / pps as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let sport = 1024 + (i % 64512) as u16;
        let seg = syn_segment(src, sport, dst, (i as u32).wrapping_mul(2_654_435_761));
        let n = sock.send_to(&seg, &to);
        if n.is_err() {
            report.send_errors += 1;
        } else {
            report.sent += 1;
        }
    }
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_segment_checksums_to_zero_over_its_pseudo_header() {
        let src = Ipv4Addr::new(10, 1, 0, 5);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
        let seg = syn_segment(src, 40000, dst, 12345);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&src.octets());
        pseudo[4..8].copy_from_slice(&dst.ip().octets());
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(fold(sum16(sum16(0, &pseudo), &seg)), 0);
        assert_eq!(u16::from_be_bytes([seg[0], seg[1]]), 40000);
        assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 80);
        assert_eq!(seg[13], 0x02, "SYN only");
        // A different source address gives a different checksum: the
        // pseudo-header is really in it.
        let other = syn_segment(Ipv4Addr::new(10, 1, 0, 6), 40000, dst, 12345);
        assert_ne!(seg[16..18], other[16..18]);
    }
}
