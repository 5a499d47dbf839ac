use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pod_labels_are_filtered_and_completed() {
    let cluster = ClusterName::new("c1").unwrap();
    let pod = map(&[
        ("app", "web"),
        ("pod-template-hash", "5d8f7"),
        ("controller-revision-hash", "abc"),
        ("statefulset.kubernetes.io/pod-name", "web-0"),
        ("app.kubernetes.io/name", "web"),
        (CLUSTER_LABEL, "spoofed"),
    ]);
    let set = LabelSet::for_pod(&cluster, "shop", &pod).unwrap();
    assert_eq!(
        set.to_string(),
        "app=web,app.kubernetes.io/name=web,io.kubernetes.pod.namespace=shop,meshwork.io/cluster=c1"
    );
    // Two replicas of one rollout share a label set, hence an identity.
    let other = map(&[("app", "web"), ("pod-template-hash", "zzz")]);
    let a = LabelSet::for_pod(&cluster, "shop", &other).unwrap();
    let b = LabelSet::for_pod(&cluster, "shop", &map(&[("app", "web")])).unwrap();
    assert_eq!(a, b);
}

#[test]
fn invalid_labels_are_named() {
    for (k, v, why) in [
        ("bad key", "x", "only letters"),
        ("app", "-x", "start and end"),
        ("Not_A_Domain/app", "x", "prefix"),
        ("app", &"v".repeat(64), "63"),
        ("", "x", "empty"),
    ] {
        let err = LabelSet::new(map(&[(k, v)])).unwrap_err().to_string();
        assert!(err.contains(why), "{k}={v}: {err}");
    }
    assert!(LabelSet::new(map(&[("app", "")])).is_ok());
}

#[test]
fn selectors() {
    let labels = LabelSet::new(map(&[
        ("app", "web"),
        ("tier", "front"),
        (CLUSTER_LABEL, "c2"),
    ]))
    .unwrap();
    let sel = |ml: &[(&str, &str)], ex: Vec<SelectorRequirement>| LabelSelector {
        match_labels: map(ml),
        match_expressions: ex,
    };
    let req = |key: &str, operator, values: &[&str]| SelectorRequirement {
        key: key.into(),
        operator,
        values: values.iter().map(|s| s.to_string()).collect(),
    };
    use SelectorOperator::*;
    let cases = [
        (sel(&[], vec![]), true),
        (sel(&[("app", "web")], vec![]), true),
        (sel(&[("app", "db")], vec![]), false),
        (sel(&[(CLUSTER_LABEL, "c2")], vec![]), true),
        (sel(&[(CLUSTER_LABEL, "c1")], vec![]), false),
        (sel(&[], vec![req("tier", In, &["front", "back"])]), true),
        (sel(&[], vec![req("tier", NotIn, &["front"])]), false),
        (sel(&[], vec![req("missing", NotIn, &["x"])]), true),
        (sel(&[], vec![req("app", Exists, &[])]), true),
        (sel(&[], vec![req("app", DoesNotExist, &[])]), false),
    ];
    for (i, (s, want)) in cases.iter().enumerate() {
        s.validate().unwrap();
        assert_eq!(s.matches(&labels), *want, "case {i}: {s:?}");
    }
    assert!(sel(&[], vec![req("a", In, &[])]).validate().is_err());
    assert!(sel(&[], vec![req("a", Exists, &["x"])]).validate().is_err());
}
