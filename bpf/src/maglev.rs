//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): builds the lookup
//! table the datapath indexes with a flow hash. Pure logic, no I/O.
//!
//! Each backend gets a permutation of the table slots derived from its id;
//! backends take turns claiming their next free preferred slot. Removing one
//! backend of N moves about 1/N of the flows (those it served) and leaves the
//! others where they were, which random or modulo selection cannot do.

use crate::maps::BackendId;

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: a fixed, well-distributed hash (stable across
    // versions, unlike std's RandomState).
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds a Maglev table of `size` entries (a prime; the datapath uses
/// 16381) over `backends`. Duplicates are ignored and order does not matter.
/// Returns an empty table when there are no backends. With more backends than
/// slots only the `size` lowest ids get slots.
pub fn table(backends: &[BackendId], size: usize) -> Vec<BackendId> {
    let mut ids: Vec<BackendId> = backends.to_vec();
    ids.sort();
    ids.dedup();
    ids.truncate(size);
    if ids.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let perms: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let offset = mix(u64::from(id.0) ^ 0x6d61_676c_6576_0001) % m;
            let skip = if m > 1 {
                mix(u64::from(id.0) ^ 0x6d61_676c_6576_0002) % (m - 1) + 1
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
