use super::*;

#[test]
fn cluster_id_bounds() {
    assert!(ClusterId::new(1).is_ok());
    assert!(ClusterId::new(255).is_ok());
    for bad in [0, 256, -1, 100_000] {
        let err = ClusterId::new(bad).unwrap_err().to_string();
        assert!(err.contains(&bad.to_string()), "{err}");
        assert!(err.contains("1-255"), "{err}");
    }
    assert!(
        "abc"
            .parse::<ClusterId>()
            .unwrap_err()
            .to_string()
            .contains("\"abc\"")
    );
    assert_eq!("42".parse::<ClusterId>().unwrap().get(), 42);
}

#[test]
fn cluster_id_serde_rejects_out_of_range() {
    assert!(serde_json::from_str::<ClusterId>("0").is_err());
    assert!(serde_json::from_str::<ClusterId>("256").is_err());
    assert_eq!(serde_json::from_str::<ClusterId>("7").unwrap().get(), 7);
}

#[test]
fn cluster_names() {
    for good in ["a", "c1", "prod-eu-1", &"x".repeat(32)] {
        assert!(ClusterName::new(good).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("Prod", "character"),
        ("a_b", "character"),
        ("-a", "starts or ends"),
        ("a-", "starts or ends"),
        ("a.b", "character"),
    ] {
        let err = ClusterName::new(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    let long = "x".repeat(33);
    assert!(
        ClusterName::new(long)
            .unwrap_err()
            .to_string()
            .contains("too long")
    );
}

#[test]
fn node_names() {
    assert!(NodeName::new("kind-worker.example.com").is_ok());
    assert!(NodeName::new("n1").is_ok());
    assert!(NodeName::new("Node1").is_err());
    assert!(NodeName::new("a..b").is_err());
    assert!(NodeName::new("x".repeat(254)).is_err());
}
