//! TUN → UDP, one thread per queue: read a packet from the TUN (with
//! offload a TSO super-packet, cut into MTU-sized packets), find the peer by
//! destination, encrypt, and send runs of equal-size datagrams as one UDP
//! GSO `sendmsg`.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use boringtun::noise::{Tunn, TunnResult};

use crate::offload::{VNET_HDR_LEN, VnetHdr, segment};
use crate::shared::{MAX_PACKET, POLL_MS, Peer, PeerState, Shared};
use crate::sys;
use crate::udp_socket::Udp;

/// TUN → UDP: read a packet (with offload: a TSO super-packet, cut into
/// MTU-sized packets), find the peer by destination (AllowedIPs), encrypt,
/// send to the peer's endpoint (with offload: one UDP GSO send per run).
pub(crate) fn tun_loop(s: &Shared, q: usize) {
    let tun = s.tuns[q].as_raw_fd();
    let udp = &s.udps[q];
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET];
    let mut segs: Vec<u8> = Vec::with_capacity(2 * MAX_PACKET);
    let mut ranges = Vec::with_capacity(64);
    let mut batch = GsoBatch::new();
    // The batch stays open across reads while packets keep coming for the
    // same peer (e.g. a burst of ACKs), and is sent when the TUN runs dry.
    let mut open: Option<(Arc<Peer>, Option<SocketAddr>)> = None;
    let mut reads = 0usize;
    while !s.is_stopping() {
        let n = match sys::read(tun, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some((_, ep)) = open.take() {
                    batch.flush(udp, ep, s.offload);
                }
                reads = 0;
                sys::wait_readable(tun, POLL_MS);
                continue;
            }
            // The interface was deleted under the device: nothing will
            // ever come again. Stop, so whoever runs the device notices and
            // starts a new one (instead of a loop spinning on the error).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADFD | libc::ENODEV)) => {
                tracing::error!(ifname = %s.ifname, error = %e, "the TUN interface is gone; the device stops");
                s.interface_lost();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "TUN read");
                continue;
            }
        };
        segs.clear();
        ranges.clear();
        if s.offload {
            let Some(hdr) = VnetHdr::parse(&buf[..n]) else {
                continue;
            };
            if let Err(e) = segment(&hdr, &buf[VNET_HDR_LEN..n], &mut segs, &mut ranges) {
                tracing::debug!(error = ?e, "dropping a TUN packet that cannot be segmented");
                continue;
            }
        } else {
            segs.extend_from_slice(&buf[..n]);
            ranges.push(0..n);
        }
        let Some(first) = ranges.first() else {
            continue;
        };
        // All segments of one read share the destination.
        let Some(dst) = Tunn::dst_address(&segs[first.clone()]) else {
            continue;
        };
        let Some(peer) = s.table.read().allowed.lookup(dst).cloned() else {
            continue;
        };
        let mut st = peer.state.lock();
        let ep = st.endpoint;
        if let Some((prev, prev_ep)) = &open
            && (!Arc::ptr_eq(prev, &peer) || *prev_ep != ep)
        {
            batch.flush(udp, *prev_ep, s.offload);
        }
        if st.speculative {
            st.speculative = false;
            restart_speculative_handshake(&mut st, udp, batch.room());
        }
        for r in &ranges {
            let seg = &segs[r.clone()];
            if batch.len() + seg.len() + DATA_OVERHEAD > GSO_MAX_BYTES {
                batch.flush(udp, ep, s.offload);
            }
            match st.tunn.encapsulate(seg, batch.room()) {
                TunnResult::WriteToNetwork(p) => {
                    let len = p.len();
                    if len == seg.len() + DATA_OVERHEAD {
                        batch.commit(len, udp, ep, s.offload);
                    } else if let Some(ep) = ep {
                        // A handshake initiation (no session yet): alone.
                        let _ = udp.send_to(p, ep);
                    }
                }
                TunnResult::Err(e) => tracing::debug!(error = ?e, "encapsulate"),
                _ => {}
            }
        }
        drop(st);
        open = Some((peer, ep));
        reads += 1;
        if reads >= MAX_READS_PER_BATCH {
            batch.flush(udp, ep, s.offload);
            open = None;
            reads = 0;
        }
    }
}

/// The first packet for a peer whose only handshake so far was sent
/// unprompted, at peer creation: that initiation may have reached a side
/// that did not know us yet and been dropped, and boringtun would hold this
/// packet until its retry (REKEY_TIMEOUT, 5 s). Like a kernel peer that sends
/// its first initiation for its first packet, start a new one now. A live
/// session needs nothing.
fn restart_speculative_handshake(st: &mut PeerState, udp: &Udp, buf: &mut [u8]) {
    if st.tunn.time_since_last_handshake().is_some() {
        return;
    }
    let Some(ep) = st.endpoint else { return };
    if let TunnResult::WriteToNetwork(p) = st.tunn.format_handshake_initiation(buf, true) {
        let _ = udp.send_to(p, ep);
    }
}

/// Bound on TUN reads gathered into one send, so a busy TUN never delays
/// packets by more than this many reads.
const MAX_READS_PER_BATCH: usize = 64;

const DATA_OVERHEAD: usize = 32;
/// UDP's length limit for one GSO send (IPv4), with margin.
const GSO_MAX_BYTES: usize = 65_000;

/// Encrypted datagrams for one endpoint, laid end to end for UDP GSO: all of
/// one size, except possibly the last.
struct GsoBatch {
    buf: Vec<u8>,
    len: usize,
    seg: usize,
    count: usize,
    closed: bool,
}

impl GsoBatch {
    fn new() -> GsoBatch {
        GsoBatch {
            buf: vec![0u8; GSO_MAX_BYTES + MAX_PACKET + 64],
            len: 0,
            seg: 0,
            count: 0,
            closed: false,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Where the next datagram is written.
    fn room(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Accepts the datagram just written at `room()`.
    fn commit(&mut self, n: usize, udp: &Udp, ep: Option<SocketAddr>, offload: bool) {
        if !offload {
            if let Some(ep) = ep {
                let _ = udp.send_to(&self.buf[self.len..self.len + n], ep);
            }
            return;
        }
        if self.count > 0 && (self.closed || n > self.seg) {
            // It cannot join this run: send the run, move it to the front.
            let start = self.len;
            self.flush(udp, ep, offload);
            self.buf.copy_within(start..start + n, 0);
        }
        if self.count == 0 {
            self.seg = n;
        } else if n < self.seg {
            self.closed = true; // a shorter datagram ends the run
        }
        self.len += n;
        self.count += 1;
    }

    fn flush(&mut self, udp: &Udp, ep: Option<SocketAddr>, offload: bool) {
        if self.count > 0 && offload {
            match ep {
                Some(ep) if self.count > 1 => {
                    if let Err(e) = udp.send_gso(&self.buf[..self.len], self.seg as u16, ep) {
                        tracing::debug!(error = %e, "UDP GSO send");
                    }
                }
                Some(ep) => {
                    for chunk in self.buf[..self.len].chunks(self.seg) {
                        let _ = udp.send_to(chunk, ep);
                    }
                }
                None => {}
            }
        }
        self.len = 0;
        self.count = 0;
        self.seg = 0;
        self.closed = false;
    }
}
