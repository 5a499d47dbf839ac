use super::*;

#[test]
fn round_trip() {
    for s in [
        "spiffe://meshwork.local/cluster/c1",
        "spiffe://example.org/cluster/prod-eu/node/worker-1.example",
    ] {
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(id.to_string(), s);
    }
    let node: SpiffeId = "spiffe://meshwork.local/cluster/c1/node/n1"
        .parse()
        .unwrap();
    assert_eq!(node.kind(), PeerKind::Node);
    assert_eq!(node.cluster.as_str(), "c1");
}

#[test]
fn rejects_malformed() {
    for (s, why) in [
        ("https://meshwork.local/cluster/c1", "spiffe://"),
        ("spiffe://meshwork.local/node/c1", "/cluster/"),
        ("spiffe://meshwork.local/cluster/C_1", "DNS label"),
        ("spiffe://meshwork.local/cluster/c1/pod/x", "unexpected"),
        ("spiffe://meshwork.local/cluster/c1/node/n1/x", "unexpected"),
        ("spiffe://Bad_Domain/cluster/c1", "trust domain"),
    ] {
        let err = s.parse::<SpiffeId>().unwrap_err().to_string();
        assert!(err.contains(why), "{s}: {err}");
    }
}
