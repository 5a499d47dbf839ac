use super::*;
use crate::maps::Protocol;

const M: usize = 16381;

fn backend(i: u32) -> Backend {
    Backend {
        addr: Ipv4Addr::from(0x0af4_0000 + i),
        port: 8080,
        proto: Protocol::Tcp,
        cluster_id: 1,
    }
}

/// Backends 1..=n, id i at address 10.244.0.i.
fn ids(n: u32) -> Vec<(BackendId, Backend)> {
    (1..=n).map(|i| (BackendId(i), backend(i))).collect()
}

fn slot_of(i: u64) -> usize {
    (mix(i ^ 0xabcdef) % M as u64) as usize
}

#[test]
fn every_slot_is_filled_and_shares_are_even() {
    let t = table(&ids(10), M);
    assert_eq!(t.len(), M);
    for (id, _) in ids(10) {
        let share = t.iter().filter(|b| **b == id).count();
        // Maglev guarantees near-equal shares: within 1% of M/N here.
        let ideal = M / 10;
        assert!(
            share.abs_diff(ideal) <= M / 100,
            "backend {id:?} got {share} slots, ideal {ideal}"
        );
    }
}

#[test]
fn order_and_duplicates_do_not_matter() {
    let mut shuffled = ids(7);
    shuffled.reverse();
    shuffled.push((BackendId(3), backend(3)));
    assert_eq!(table(&ids(7), M), table(&shuffled, M));
}

#[test]
fn nodes_that_number_the_same_backends_differently_build_the_same_table() {
    // Node A numbers backends 1..=7; node B gives the same addresses other
    // ids, in another order. Slot by slot, both pick the same address.
    let a = ids(7);
    let b: Vec<(BackendId, Backend)> = (1..=7u32)
        .rev()
        .map(|i| (BackendId(100 + i * 3), backend(i)))
        .collect();
    let addr_of = |set: &[(BackendId, Backend)], id: BackendId| {
        set.iter().find(|(i, _)| *i == id).expect("known id").1.addr
    };
    let (ta, tb) = (table(&a, M), table(&b, M));
    for slot in 0..M {
        assert_eq!(addr_of(&a, ta[slot]), addr_of(&b, tb[slot]), "slot {slot}");
    }
}

#[test]
fn the_flow_hash_depends_on_the_seed_and_every_field() {
    let (s, d) = (
        Ipv4Addr::new(192, 168, 77, 9),
        Ipv4Addr::new(192, 168, 77, 1),
    );
    let h = flow_hash(seed_of("meshwork"), s, d, 40000, 30080, 6);
    assert_eq!(h, flow_hash(seed_of("meshwork"), s, d, 40000, 30080, 6));
    assert_ne!(h, flow_hash(seed_of("other"), s, d, 40000, 30080, 6));
    assert_ne!(h, flow_hash(seed_of("meshwork"), d, s, 40000, 30080, 6));
    assert_ne!(h, flow_hash(seed_of("meshwork"), s, d, 40001, 30080, 6));
    assert_ne!(h, flow_hash(seed_of("meshwork"), s, d, 40000, 30081, 6));
    assert_ne!(h, flow_hash(seed_of("meshwork"), s, d, 40000, 30080, 17));
    assert_eq!(seed_of(""), 0x811c_9dc5);
}

#[test]
fn removing_one_backend_moves_about_one_nth_of_flows() {
    for n in [3u32, 10, 50] {
        let before = table(&ids(n), M);
        let removed = BackendId(n / 2 + 1);
        let remaining: Vec<(BackendId, Backend)> =
            ids(n).into_iter().filter(|(b, _)| *b != removed).collect();
        let after = table(&remaining, M);
        let flows = 100_000u64;
        let mut moved = 0u64;
        let mut moved_not_from_removed = 0u64;
        for f in 0..flows {
            let h = slot_of(f);
            if before[h] != after[h] {
                moved += 1;
                if before[h] != removed {
                    moved_not_from_removed += 1;
                }
            }
        }
        let share = moved as f64 / flows as f64;
        let ideal = 1.0 / f64::from(n);
        // Modulo hashing would move ~(n-1)/n of flows; Maglev moves ~1/n.
        let modulo_moved = (0..flows)
            .filter(|f| {
                let h = mix(*f) as usize;
                ids(n)[h % n as usize].0 != remaining[h % (n as usize - 1)].0
            })
            .count() as f64
            / flows as f64;
        println!(
            "n={n}: maglev moved {:.3} of flows (ideal {ideal:.3}), modulo would move {modulo_moved:.3}, moved among survivors {:.4}",
            share,
            moved_not_from_removed as f64 / flows as f64
        );
        assert!(
            share < ideal * 1.6 && share > ideal * 0.8,
            "n={n}: {share:.3} of flows moved, expected about {ideal:.3}"
        );
        assert!(
            modulo_moved > 0.5,
            "the modulo baseline should disrupt most flows"
        );
        // Flows of surviving backends barely move (Maglev's small disruption).
        assert!(
            (moved_not_from_removed as f64 / flows as f64) < 0.02 + ideal * 0.5,
            "n={n}: too many flows of surviving backends moved"
        );
    }
}

#[test]
fn adding_a_backend_moves_about_one_nth_of_flows() {
    let before = table(&ids(9), M);
    let after = table(&ids(10), M);
    let moved = (0..M).filter(|i| before[*i] != after[*i]).count() as f64 / M as f64;
    assert!(
        moved < 0.16,
        "{moved:.3} of slots moved, expected about 0.1"
    );
}

#[test]
fn empty_and_tiny_inputs() {
    assert!(table(&[], M).is_empty());
    let one = table(&[(BackendId(42), backend(42))], M);
    assert!(one.iter().all(|b| *b == BackendId(42)));
    // More backends than slots: the table is still full and valid.
    let small = table(&ids(20), 7);
    assert_eq!(small.len(), 7);
}
