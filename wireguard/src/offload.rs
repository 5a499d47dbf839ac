//! TUN offloads in software: the kernel hands the device large TCP
//! segments (TSO through `IFF_VNET_HDR`) and packets with partial
//! checksums; this module cuts them into MTU-sized packets with complete
//! checksums, so one TUN read and one UDP GSO send carry ~45 packets.
//! Pure functions over buffers; the syscalls live in `sys`.

/// Size of `struct virtio_net_hdr` (TUN's default vnet header size).
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// The fields of a virtio_net_hdr that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// VIRTIO_NET_HDR_F_* flags.
    pub flags: u8,
    /// VIRTIO_NET_HDR_GSO_* type (ECN bit included).
    pub gso_type: u8,
    /// Length of the headers of a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO packet.
    pub gso_size: u16,
    /// Where checksumming starts (NEEDS_CSUM).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first 10 bytes of `b` (little endian, as on x86 TUN).
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < VNET_HDR_LEN {
            return None;
        }
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }
}

/// Why a packet from the TUN could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Headers shorter than they claim, or a checksum outside the packet.
    Malformed,
    /// A GSO type this device did not ask for.
    UnsupportedGso(u8),
}

/// One's complement sum of `data` added to `sum` (not folded).
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits.
pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of an IPv4 header (its checksum field taken as zero).
pub fn ipv4_header_checksum(h: &[u8]) -> u16 {
    let sum = csum_add(csum_add(0, &h[..10]), &h[12..]);
    !csum_fold(sum)
}

fn pseudo_header_sum(ip: &[u8], v4: bool, proto: u8, len: usize) -> u32 {
    let sum = if v4 {
        csum_add(0, &ip[12..20])
    } else {
        csum_add(0, &ip[8..40])
    };
    sum + u32::from(proto) + len as u32
}

/// Completes a partial checksum (CHECKSUM_PARTIAL: the field holds the
/// pseudo-header sum; everything from `start` is summed into it).
fn complete_csum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), SegmentError> {
    let field = start + offset;
    if start >= pkt.len() || field + 2 > pkt.len() {
        return Err(SegmentError::Malformed);
    }
    let c = !csum_fold(csum_add(0, &pkt[start..]));
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turns one TUN read (vnet header + packet) into complete packets, each
/// appended to `out` with its range recorded in `ranges`.
pub fn segment(
    hdr: &VnetHdr,
    pkt: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<std::ops::Range<usize>>,
) -> Result<(), SegmentError> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        let start = out.len();
        out.extend_from_slice(pkt);
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_csum(
                &mut out[start..],
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
        }
        ranges.push(start..out.len());
        return Ok(());
    }
    let v4 = match gso {
        GSO_TCPV4 => true,
        GSO_TCPV6 => false,
        other => return Err(SegmentError::UnsupportedGso(other)),
    };
    let iphl = if v4 {
        usize::from(pkt.first().ok_or(SegmentError::Malformed)? & 0x0f) * 4
    } else {
        // TSO packets from the local stack carry no extension headers; the
        // kernel tells us where TCP starts.
        usize::from(hdr.csum_start)
    };
    if pkt.len() < iphl + 20 || (v4 && iphl < 20) || (!v4 && iphl < 40) {
        return Err(SegmentError::Malformed);
    }
    let thl = usize::from(pkt[iphl + 12] >> 4) * 4;
    let hl = iphl + thl;
    let mss = usize::from(hdr.gso_size);
    if thl < 20 || pkt.len() < hl || mss == 0 {
        return Err(SegmentError::Malformed);
    }
    let payload = &pkt[hl..];
    let seq0 = u32::from_be_bytes(pkt[iphl + 4..iphl + 8].try_into().expect("4 bytes"));
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let start = out.len();
        out.extend_from_slice(&pkt[..hl]);
        out.extend_from_slice(chunk);
        let seg = &mut out[start..];
        if v4 {
            let total = (hl + chunk.len()) as u16;
            seg[2..4].copy_from_slice(&total.to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let c = ipv4_header_checksum(&seg[..iphl]);
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            let plen = (hl - 40 + chunk.len()) as u16;
            seg[4..6].copy_from_slice(&plen.to_be_bytes());
        }
        let tcp = iphl;
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < n {
            seg[tcp + 13] &= !(0x01 | 0x08); // FIN and PSH only on the last
        }
        if i > 0 {
            seg[tcp + 13] &= !0x80; // CWR only on the first
        }
        seg[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let sum = pseudo_header_sum(seg, v4, 6, thl + chunk.len());
        let c = !csum_fold(csum_add(sum, &seg[tcp..]));
        seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        ranges.push(start..out.len());
    }
    Ok(())
}

/// A TCP/IPv4 packet's fields that decide whether it can be merged.
struct TcpV4<'a> {
    iphl: usize,
    hl: usize,
    /// src/dst addresses and ports.
    flow: [u8; 12],
    seq: u32,
    flags: u8,
    payload: usize,
    /// TCP ack, window and options, IP tos and ttl: must match to merge.
    same: (&'a [u8], &'a [u8], &'a [u8], u8, u8),
}

fn parse_tcp_v4(p: &[u8]) -> Option<TcpV4<'_>> {
    if p.len() < 40 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let iphl = usize::from(p[0] & 0x0f) * 4;
    // No IP options, not a fragment, total length consistent.
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if iphl != 20 || frag & 0x3fff != 0 || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
    {
        return None;
    }
    let thl = usize::from(p[iphl + 12] >> 4) * 4;
    let hl = iphl + thl;
    if thl < 20 || p.len() < hl {
        return None;
    }
    let mut flow = [0u8; 12];
    flow[..8].copy_from_slice(&p[12..20]);
    flow[8..].copy_from_slice(&p[iphl..iphl + 4]);
    Some(TcpV4 {
        iphl,
        hl,
        flow,
        seq: u32::from_be_bytes(p[iphl + 4..iphl + 8].try_into().expect("4 bytes")),
        flags: p[iphl + 13],
        payload: p.len() - hl,
        same: (
            &p[iphl + 8..iphl + 12],
            &p[iphl + 14..iphl + 16],
            &p[iphl + 20..hl],
            p[1],
            p[8],
        ),
    })
}

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// Writes `packets` (complete IP packets, in arrival order) to the TUN
/// through `write`, merging runs of in-order segments of one TCP/IPv4 flow
/// into one GSO packet (what the kernel's GRO would do), so the stack
/// handles ~45 segments at once. Everything else is written alone with a
/// zero vnet header. `scratch` is reused between calls.
pub fn coalesce_and_write(packets: &[&[u8]], scratch: &mut Vec<u8>, mut write: impl FnMut(&[u8])) {
    let mut i = 0;
    while i < packets.len() {
        let first = packets[i];
        let Some(h) =
            parse_tcp_v4(first).filter(|h| h.payload > 0 && h.flags & !TCP_PSH == TCP_ACK)
        else {
            write_single(first, scratch, &mut write);
            i += 1;
            continue;
        };
        let mss = h.payload;
        let mut total = first.len();
        let mut next_seq = h.seq.wrapping_add(mss as u32);
        let mut end = i + 1;
        let mut last_flags = h.flags;
        // Only the last merged segment may carry PSH or be shorter.
        while end < packets.len() && last_flags & TCP_PSH == 0 {
            let Some(n) = parse_tcp_v4(packets[end]) else {
                break;
            };
            if n.flow != h.flow
                || n.seq != next_seq
                || n.flags & !TCP_PSH != TCP_ACK
                || n.same != h.same
                || n.hl != h.hl
                || n.payload == 0
                || n.payload > mss
                || total + n.payload > 65_535
            {
                break;
            }
            total += n.payload;
            next_seq = next_seq.wrapping_add(n.payload as u32);
            last_flags = n.flags;
            end += 1;
            if n.payload < mss {
                break;
            }
        }
        if end == i + 1 {
            write_single(first, scratch, &mut write);
            i += 1;
            continue;
        }
        scratch.clear();
        // virtio_net_hdr: NEEDS_CSUM, GSO TCPv4, header length, MSS, where
        // the TCP checksum starts and its offset.
        scratch.push(F_NEEDS_CSUM);
        scratch.push(GSO_TCPV4);
        scratch.extend_from_slice(&(h.hl as u16).to_le_bytes());
        scratch.extend_from_slice(&(mss as u16).to_le_bytes());
        scratch.extend_from_slice(&(h.iphl as u16).to_le_bytes());
        scratch.extend_from_slice(&16u16.to_le_bytes());
        let base = scratch.len();
        scratch.extend_from_slice(&first[..h.hl]);
        for p in &packets[i..end] {
            scratch.extend_from_slice(&p[h.hl..]);
        }
        let pkt = &mut scratch[base..];
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[10..12].copy_from_slice(&[0, 0]);
        let c = ipv4_header_checksum(&pkt[..h.iphl]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        pkt[h.iphl + 13] = last_flags;
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
        let pseudo = csum_fold(pseudo_header_sum(pkt, true, 6, total - h.iphl));
        pkt[h.iphl + 16..h.iphl + 18].copy_from_slice(&pseudo.to_be_bytes());
        write(scratch);
        i = end;
    }
}

fn write_single(p: &[u8], scratch: &mut Vec<u8>, write: &mut impl FnMut(&[u8])) {
    scratch.clear();
    scratch.extend_from_slice(&[0u8; VNET_HDR_LEN]);
    scratch.extend_from_slice(p);
    write(scratch);
}
