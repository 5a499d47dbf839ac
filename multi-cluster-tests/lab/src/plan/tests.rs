use super::*;

#[test]
fn addresses_and_cidrs_are_distinct_and_disjoint() {
    let plan = LabPlan::new("lab", MAX_CLUSTERS, MAX_NODES, true).unwrap();
    let mut ips = vec![];
    let mut cidrs = vec![];
    for c in &plan.clusters {
        ips.push(c.control_ip);
        for n in &c.nodes {
            ips.push(n.ip);
            assert!(
                c.pod_cidr.contains(&n.pod_cidr),
                "{} inside {}",
                n.pod_cidr,
                c.pod_cidr
            );
            assert!(n.wg_interface.len() <= 15, "{}", n.wg_interface);
        }
        cidrs.push(c.pod_cidr);
    }
    // The outside host's addresses collide with no cluster's.
    ips.extend(OUTSIDE_IPS);
    let underlay: Ipv4Net = UNDERLAY.parse().unwrap();
    assert!(ips.iter().all(|ip| underlay.contains(ip)));
    let mut sorted = ips.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ips.len(), "every address is unique");
    for (i, a) in cidrs.iter().enumerate() {
        for b in &cidrs[i + 1..] {
            assert!(
                !mesh_api::cidr::overlaps(&(*a).into(), &(*b).into()),
                "{a} / {b}"
            );
        }
    }
    let mut wg: Vec<_> = plan
        .clusters
        .iter()
        .flat_map(|c| c.nodes.iter().map(|n| n.wg_interface.clone()))
        .collect();
    wg.sort();
    wg.dedup();
    assert_eq!(
        wg.len(),
        64,
        "WireGuard interface names are unique on the host"
    );
}

#[test]
fn names_follow_the_contract() {
    let plan = LabPlan::new("lab", 2, 2, false).unwrap();
    assert_eq!(plan.clusters[1].context, "lab-c2");
    assert_eq!(plan.clusters[1].nodes[0].name.as_str(), "c2-n1");
    assert_eq!(plan.clusters[1].nodes[0].ns, "mwlab-c2-n1");
    // Underlay, per cluster its control and two nodes, the outside host.
    assert_eq!(plan.namespaces().len(), 1 + 2 * 3 + 1);
    assert_eq!(plan.outside_ns(), "mwlab-out");
    assert!(plan.namespaces().iter().all(|n| n.starts_with("mwlab-")));
}

#[test]
fn the_longest_name_keeps_wireguard_interfaces_unique_and_short() {
    let plan = LabPlan::new("abcdefg", MAX_CLUSTERS, MAX_NODES, true).unwrap();
    let mut wg: Vec<_> = plan
        .clusters
        .iter()
        .flat_map(|c| c.nodes.iter().map(|n| n.wg_interface.clone()))
        .collect();
    assert!(wg.iter().all(|w| w.len() <= 15), "{wg:?}");
    wg.sort();
    wg.dedup();
    assert_eq!(wg.len(), 64);
    assert!(LabPlan::new("abcdefgh", 1, 1, false).is_err());
}

#[test]
fn bad_sizes_are_refused_with_the_limits() {
    assert!(
        LabPlan::new("lab", 0, 1, false)
            .unwrap_err()
            .to_string()
            .contains("1-8 clusters")
    );
    assert!(
        LabPlan::new("lab", 2, 9, false)
            .unwrap_err()
            .to_string()
            .contains("1-8 nodes")
    );
    assert!(
        LabPlan::new("Lab!", 2, 2, false)
            .unwrap_err()
            .to_string()
            .contains("lowercase")
    );
}

#[test]
fn set_takes_a_dotted_path_and_json_or_a_string() {
    let (path, v) = parse_set("compat.ciliumPolicies=true").expect("valid");
    assert_eq!(
        (path.as_str(), v),
        ("compat.ciliumPolicies", serde_json::json!(true))
    );
    let (_, v) = parse_set("logFormat=json").expect("valid");
    assert_eq!(v, serde_json::json!("json"), "not JSON: a string");
    for bad in ["compat.ciliumPolicies", "=true", "compat..x=1"] {
        let e = parse_set(bad).expect_err(bad).to_string();
        assert!(e.contains("--set") && e.contains("e.g."), "{e}");
    }
    let mut values = serde_json::json!({"compat": {"ciliumAnnotations": false}, "x": 1});
    set_value(
        &mut values,
        "compat.ciliumPolicies",
        serde_json::json!(true),
    );
    set_value(&mut values, "x.y", serde_json::json!(2));
    assert_eq!(
        values,
        serde_json::json!({"compat": {"ciliumAnnotations": false, "ciliumPolicies": true}, "x": {"y": 2}})
    );
}
