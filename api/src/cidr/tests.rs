use super::*;

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|c| c.parse().unwrap()).collect()
}

#[test]
fn overlap_table() {
    let cases = [
        ("10.1.0.0/16", "10.2.0.0/16", false),
        ("10.1.0.0/16", "10.1.5.0/24", true),
        ("10.1.5.0/24", "10.0.0.0/8", true),
        ("10.1.0.0/16", "10.1.0.0/16", true),
        ("fd00::/64", "fd00::/48", true),
        ("fd00::/64", "10.1.0.0/16", false),
    ];
    for (a, b, want) in cases {
        assert_eq!(
            overlaps(&a.parse().unwrap(), &b.parse().unwrap()),
            want,
            "{a} {b}"
        );
    }
}

#[test]
fn overlapping_clusters_are_refused_with_both_names() {
    let c1 = ClusterName::new("c1").unwrap();
    let c2 = ClusterName::new("c2").unwrap();
    let a = nets(&["10.1.0.0/16", "10.11.0.0/16"]);
    assert!(check_pod_cidrs_disjoint(&c1, &a, &c2, &nets(&["10.2.0.0/16"])).is_ok());
    let err = check_pod_cidrs_disjoint(&c1, &a, &c2, &nets(&["10.11.128.0/17"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("10.11.0.0/16")
            && err.contains("c1")
            && err.contains("10.11.128.0/17")
            && err.contains("c2"),
        "{err}"
    );
}

#[test]
fn parse_refuses_garbage_and_host_bits() {
    assert!(parse_cidr("podCIDR", "10.1.0.0/16").is_ok());
    let err = parse_cidr("podCIDR", "10.1.0.0/33")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("podCIDR") && err.contains("10.1.0.0/33"),
        "{err}"
    );
    let err = parse_cidr("podCIDR", "10.1.2.3/16")
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 10.1.0.0/16"), "{err}");
}
