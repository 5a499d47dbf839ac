use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn configmap_keys_are_the_flags() {
    let c = Config::from_map(&map(&[
        ("cluster-name", "c1"),
        ("cluster-id", "3"),
        ("pod-cidrs", "10.1.0.0/16,fd00:1::/64"),
        ("store", "etcd"),
        ("etcd-endpoints", "http://etcd:2379"),
        ("tls-cert", "/certs/tls.crt"),
        ("tls-key", "/certs/tls.key"),
        ("tls-ca", "/certs/ca.crt"),
        ("compat-cilium-annotations", "true"),
        ("leader-election", "false"),
        ("stale-timeout-seconds", "30"),
    ]))
    .unwrap();
    assert_eq!(c.store, StoreKind::Etcd);
    assert!(c.compat_cilium_annotations);
    assert!(!c.leader_election);
    assert_eq!(c.stale_timeout_seconds, 30);
    let local = c.local().unwrap();
    assert_eq!(local.id.get(), 3);
    assert_eq!(local.pod_cidrs.len(), 2);
}

#[test]
fn bad_values_name_the_key() {
    let e = Config::from_map(&map(&[
        ("cluster-name", "c1"),
        ("cluster-id", "3"),
        ("no-such-key", "x"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("no-such-key"), "{e}");
    let c = Config::from_map(&map(&[
        ("cluster-name", "c1"),
        ("cluster-id", "256"),
        ("tls-cert", "a"),
        ("tls-key", "b"),
        ("tls-ca", "c"),
    ]))
    .unwrap();
    let e = c.local().unwrap_err().to_string();
    assert!(e.contains("cluster-id") && e.contains("256"), "{e}");
}

#[test]
fn keys_are_kebab_case_and_defaults_suffice() {
    let keys = Config::keys();
    assert!(keys.contains(&"cluster-name".to_string()));
    assert!(keys.contains(&"compat-cilium-annotations".to_string()));
    assert!(
        keys.iter()
            .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '-')),
        "{keys:?}"
    );
    let c = Config::from_map(&map(&[("cluster-name", "c1"), ("cluster-id", "1")])).unwrap();
    assert_eq!(c.store, StoreKind::Memory);
    assert_eq!(c.clustermesh_secret, "meshwork-clustermesh");
}

#[test]
fn dns_nameservers_take_ip_or_ip_port_and_name_the_key_when_bad() {
    let base = [("cluster-name", "c1"), ("cluster-id", "3")];
    let c = Config::from_map(&map(&base)).unwrap();
    assert!(
        c.nameservers().unwrap().is_empty(),
        "default: the system resolver"
    );
    let mut m = map(&base);
    m.insert(
        "dns-nameservers".into(),
        "10.96.0.10,127.0.0.1:5353,[::1]:53".into(),
    );
    let c = Config::from_map(&m).unwrap();
    assert_eq!(
        c.nameservers().unwrap(),
        vec![
            "10.96.0.10:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    m.insert("dns-nameservers".into(), "dns.example:53".into());
    let e = Config::from_map(&m)
        .unwrap()
        .local()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dns-nameservers") && e.contains("dns.example"),
        "{e}"
    );
}

#[test]
fn watching_kubernetes_needs_the_clusters_pod_cidrs() {
    let base = [("cluster-name", "c1"), ("cluster-id", "1")];
    let e = Config::from_map(&map(&base))
        .unwrap()
        .local()
        .unwrap_err()
        .to_string();
    assert!(e.contains("pod-cidrs") && e.contains("ipam.podCIDR"), "{e}");
    let mut m = map(&base);
    m.insert("kubernetes".into(), "false".into());
    Config::from_map(&m).unwrap().local().unwrap();
}
