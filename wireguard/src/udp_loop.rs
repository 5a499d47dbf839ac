//! UDP → TUN, one thread per queue: find the sending peer (receiver index,
//! or the static key of a handshake initiation), decrypt, check the inner
//! source against its AllowedIPs, and write to the TUN (with offload,
//! segments of one TCP flow merged into one GSO write).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use crate::offload::coalesce_and_write;
use crate::shared::{MAX_PACKET, POLL_MS, Peer, Shared};
use crate::sys;
use crate::udp_socket::Udp;

/// UDP → TUN: find the peer (receiver index, or the static key of a
/// handshake initiation), decrypt, check the inner source against its
/// AllowedIPs, write to the TUN.
pub(crate) fn udp_loop(s: &Shared, q: usize) {
    let tun = s.tuns[q].as_raw_fd();
    let udp = &s.udps[q];
    let mut buf = vec![0u8; MAX_PACKET];
    let mut inbound = Inbound {
        buf: vec![0u8; 4 * MAX_PACKET],
        ranges: Vec::with_capacity(128),
        pos: 0,
        scratch: Vec::with_capacity(2 * MAX_PACKET),
    };
    while !s.is_stopping() {
        let (n, src, seg) = match sys::recv_gro(udp.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sys::wait_readable(udp.as_raw_fd(), POLL_MS);
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        for datagram in buf[..n].chunks(seg.unwrap_or(n).max(1)) {
            handle_datagram(s, udp, tun, datagram, src, &mut inbound);
        }
        inbound.flush(tun, s.offload);
    }
}

/// Decrypted packets of one UDP read, written to the TUN together (merged
/// into GSO packets when offload is on).
struct Inbound {
    buf: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    pos: usize,
    scratch: Vec<u8>,
}

impl Inbound {
    fn flush(&mut self, tun: std::os::fd::RawFd, offload: bool) {
        if self.ranges.is_empty() {
            return;
        }
        if offload {
            let packets: Vec<&[u8]> = self.ranges.iter().map(|r| &self.buf[r.clone()]).collect();
            coalesce_and_write(&packets, &mut self.scratch, |b| {
                if let Err(e) = sys::write(tun, b) {
                    tracing::debug!(error = %e, len = b.len(), "TUN write");
                }
            });
        } else {
            for r in &self.ranges {
                let _ = sys::write(tun, &self.buf[r.clone()]);
            }
        }
        self.ranges.clear();
        self.pos = 0;
    }
}

fn find_peer(s: &Shared, udp: &Udp, datagram: &[u8], src: SocketAddr) -> Option<Arc<Peer>> {
    let packet = Tunn::parse_incoming_packet(datagram).ok()?;
    let idx = match packet {
        Packet::HandshakeInit(ref p) => {
            let ks = s.key.read();
            // Check mac1 (and under load the cookie) before spending a
            // Diffie-Hellman on an unauthenticated packet.
            let mut cookie = [0u8; 64];
            match ks
                .rate_limiter
                .verify_packet(Some(src.ip()), datagram, &mut cookie)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    let _ = udp.send_to(reply, src);
                    return None;
                }
                Err(_) => return None,
            }
            let half = parse_handshake_anon(&ks.secret, &ks.public, p).ok()?;
            return s.table.read().by_key.get(&half.peer_static_public).cloned();
        }
        Packet::HandshakeResponse(p) => p.receiver_idx,
        Packet::PacketCookieReply(p) => p.receiver_idx,
        Packet::PacketData(p) => p.receiver_idx,
    };
    s.table.read().by_index.get(&(idx >> 8)).cloned()
}

fn handle_datagram(
    s: &Shared,
    udp: &Udp,
    tun: std::os::fd::RawFd,
    datagram: &[u8],
    src: SocketAddr,
    inb: &mut Inbound,
) {
    let Some(peer) = find_peer(s, udp, datagram, src) else {
        return;
    };
    if inb.pos + datagram.len() + 64 > inb.buf.len() {
        inb.flush(tun, s.offload);
    }
    let mut st = peer.state.lock();
    let mut first = true;
    loop {
        let room = &mut inb.buf[inb.pos..];
        let res = if first {
            st.tunn.decapsulate(Some(src.ip()), datagram, room)
        } else {
            st.tunn.decapsulate(None, &[], room)
        };
        let mut again = false;
        let mut accepted = None;
        match res {
            TunnResult::WriteToNetwork(p) => {
                let _ = udp.send_to(p, src);
                again = true;
            }
            TunnResult::WriteToTunnelV4(p, from) => {
                accepted = Some((p.len(), IpAddr::V4(from)));
            }
            TunnResult::WriteToTunnelV6(p, from) => {
                accepted = Some((p.len(), IpAddr::V6(from)));
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => {
                tracing::debug!(error = ?e, %src, "decapsulate");
                return;
            }
        }
        if let Some((len, from)) = accepted
            && source_allowed(s, &peer, from)
        {
            inb.ranges.push(inb.pos..inb.pos + len);
            inb.pos += len;
        }
        if first {
            // Authenticated: the peer is where this came from (roaming).
            st.endpoint = Some(src);
            first = false;
        }
        // After WriteToNetwork, boringtun wants empty calls until Done to
        // flush packets queued while the handshake was in flight.
        if !again {
            break;
        }
        if inb.pos + MAX_PACKET > inb.buf.len() {
            inb.flush(tun, s.offload);
        }
    }
}

fn source_allowed(s: &Shared, peer: &Arc<Peer>, from: IpAddr) -> bool {
    let ok = s
        .table
        .read()
        .allowed
        .lookup(from)
        .is_some_and(|p| Arc::ptr_eq(p, peer));
    if !ok {
        tracing::debug!(%from, "dropping inbound packet: source not in the peer's AllowedIPs");
    }
    ok
}
