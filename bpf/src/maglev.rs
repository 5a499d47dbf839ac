//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): builds the lookup
//! table the datapath indexes with a flow hash. Pure logic, no I/O.
//!
//! Each backend gets a permutation of the table slots derived from its
//! address, port and protocol (never from its node-local id), and backends
//! take turns, in address order, claiming their next free preferred slot:
//! so every node with the same backends builds the same table, and with
//! the same flow hash seed ([`flow_hash`], the datapath's `lb_flow_hash`)
//! picks the same backend for the same flow. Removing one backend of N
//! moves about 1/N of the flows (those it served) and leaves the others
//! where they were, which random or modulo selection cannot do.

use std::net::Ipv4Addr;

use crate::maps::{Backend, BackendId};

/// A backend's place in the table's construction: what every node agrees
/// on about it.
fn backend_key(b: &Backend) -> u64 {
    (u64::from(u32::from(b.addr)) << 24) | (u64::from(b.port) << 8) | u64::from(b.proto.number())
}

fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The flow hash the datapath indexes Maglev tables with (`lb_flow_hash`
/// in lb.h), for a cluster-wide `seed`.
pub fn flow_hash(
    seed: u32,
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    let mut h = mix32(seed ^ u32::from(saddr));
    h = mix32(h ^ u32::from(daddr));
    h = mix32(h ^ ((u32::from(sport) << 16) | u32::from(dport)));
    mix32(h ^ u32::from(proto))
}

/// The seed a `--bpf-lb-maglev-hash-seed` string stands for (FNV-1a): any
/// string, the same number on every node.
pub fn seed_of(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: a fixed, well-distributed hash (stable across
    // versions, unlike std's RandomState).
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds a Maglev table of `size` entries (a prime; the datapath uses
/// 16381) over `backends` (each id with its address). Duplicates are
/// ignored, and neither order nor ids matter to which address gets which
/// slots. Returns an empty table when there are no backends. With more
/// backends than slots only the `size` lowest addresses get slots.
pub fn table(backends: &[(BackendId, Backend)], size: usize) -> Vec<BackendId> {
    let mut keyed: Vec<(u64, BackendId)> = backends
        .iter()
        .map(|(id, b)| (backend_key(b), *id))
        .collect();
    keyed.sort();
    keyed.dedup_by_key(|(k, _)| *k);
    keyed.truncate(size);
    if keyed.is_empty() || size == 0 {
        return Vec::new();
    }
    let ids: Vec<BackendId> = keyed.iter().map(|(_, id)| *id).collect();
    let m = size as u64;
    let perms: Vec<(u64, u64)> = keyed
        .iter()
        .map(|(key, _)| {
            let offset = mix(key ^ 0x6d61_676c_6576_0001) % m;
            let skip = if m > 1 {
                mix(key ^ 0x6d61_676c_6576_0002) % (m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; ids.len()];
    let mut entry: Vec<Option<BackendId>> = vec![None; size];
    let mut filled = 0;
    'outer: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize].is_some() {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = Some(ids[i]);
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'outer;
            }
        }
    }
    entry
        .into_iter()
        .map(|e| e.expect("every slot filled"))
        .collect()
}

#[cfg(test)]
mod tests;
