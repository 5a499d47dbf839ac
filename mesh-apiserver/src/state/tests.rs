use super::*;

#[test]
fn keys_round_trip_through_the_layout() {
    let k = record_key("b", Kind::Endpoint, "default/web-1");
    assert_eq!(k, "meshwork/v1/b/endpoints/default/web-1");
    assert_eq!(
        parse_key(&k).unwrap(),
        ParsedKey::Record {
            cluster: "b".into(),
            kind: Kind::Endpoint,
            key: "default/web-1".into()
        }
    );
    assert_eq!(
        parse_key(&synced_key("b", Kind::Service)).unwrap(),
        ParsedKey::Synced {
            cluster: "b".into(),
            kind: Kind::Service
        }
    );
    for bad in [
        "other/x",
        "meshwork/v1/b",
        "meshwork/v1/b/pods/x",
        "meshwork/v1//nodes/x",
    ] {
        assert!(parse_key(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn batches_are_split_by_count_and_by_bytes() {
    let put = |i: usize, n: usize| Op::put(format!("k{i}"), vec![0u8; n]);
    let sizes = |chunks: &[Vec<Op>]| chunks.iter().map(Vec::len).collect::<Vec<_>>();
    // By count.
    let ops: Vec<Op> = (0..250).map(|i| put(i, 10)).collect();
    assert_eq!(sizes(&chunk_ops(ops, 100, 1 << 20)), vec![100, 100, 50]);
    // By bytes: 3 records of 400 KiB do not fit one 1 MiB transaction.
    let ops: Vec<Op> = (0..3).map(|i| put(i, 400 << 10)).collect();
    assert_eq!(sizes(&chunk_ops(ops, 100, 1 << 20)), vec![2, 1]);
    // One record over the limit goes alone, the order is kept.
    let ops = vec![put(0, 10), put(1, 2 << 20), put(2, 10)];
    let chunks = chunk_ops(ops, 100, 1 << 20);
    assert_eq!(sizes(&chunks), vec![1, 1, 1]);
    let keys: Vec<String> = chunks
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Put { key, .. } | Op::Delete(key) => key.clone(),
        })
        .collect();
    assert_eq!(keys, vec!["k0", "k1", "k2"]);
    assert!(chunk_ops(Vec::new(), 100, 1 << 20).is_empty());
}
