use super::*;

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

fn entry() -> RemoteClusterConfig {
    RemoteClusterConfig {
        name: ClusterName::new("c2").unwrap(),
        id: ClusterId::new(2).unwrap(),
        endpoints: vec![
            "192.0.2.40:32379".into(),
            "mesh.c2.example:32379".into(),
            "[2001:db8::1]:32379".into(),
        ],
        server_name: None,
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        ca_cert: PEM_CERT.into(),
        client_cert: PEM_CERT.into(),
        client_key: PEM_KEY.into(),
    }
}

#[test]
fn entries_round_trip_through_yaml() {
    let e = entry();
    assert_eq!(RemoteClusterConfig::parse("c2", &e.to_yaml()).unwrap(), e);
}

#[test]
fn bad_entries_name_the_key_and_the_problem() {
    let e = entry();
    let cases: Vec<(&str, String, &str)> = vec![
        ("c3", e.to_yaml(), "key must equal"),
        ("c2", "name: c2\nid: 0\n".into(), "cluster id"),
        ("c2", "not: [yaml".into(), "c2"),
        (
            "c2",
            e.to_yaml().replace("192.0.2.40:32379", "192.0.2.40"),
            "not host:port",
        ),
        (
            "c2",
            e.to_yaml().replace("BEGIN PRIVATE KEY", "BEGIN NOTHING"),
            "client-key",
        ),
        ("c2", format!("{}extra: 1\n", e.to_yaml()), "unknown field"),
    ];
    for (key, yaml, want) in cases {
        let err = RemoteClusterConfig::parse(key, &yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains(key), "{key}: {err}");
    }
}

#[test]
fn the_tls_name_defaults_to_the_first_endpoint_host() {
    let mut e = entry();
    assert_eq!(e.tls_server_name(), "192.0.2.40");
    e.endpoints = vec!["[2001:db8::1]:32379".into()];
    assert_eq!(e.tls_server_name(), "2001:db8::1");
    e.server_name = Some("mesh.c2.example".into());
    assert_eq!(e.tls_server_name(), "mesh.c2.example");
    assert_eq!(RemoteClusterConfig::parse("c2", &e.to_yaml()).unwrap(), e);
}

#[test]
fn endpoints_split() {
    assert_eq!(split_endpoint("a.b:1"), Some(("a.b", 1)));
    assert_eq!(split_endpoint("[::1]:443"), Some(("::1", 443)));
    assert_eq!(split_endpoint("a.b"), None);
    assert_eq!(split_endpoint(":80"), None);
    assert_eq!(split_endpoint("a:0"), None);
}

#[test]
fn status_parses_and_answers_synced() {
    let json = r#"{"cluster":"c1","cluster_id":1,"pod_cidrs":["10.1.0.0/16"],"version":"0.1.0","replica":"r1","updated_at":5,
        "remotes":{"c2":{"name":"c2","connected":true,"synced":true},"c3":{"name":"c3","connected":true,"synced":false}}}"#;
    let s = MeshStatus::parse(json).unwrap();
    assert!(s.is_synced_with("c2"));
    assert!(!s.is_synced_with("c3"));
    assert!(!s.is_synced_with("c4"));
    assert!(
        MeshStatus::parse("{}")
            .unwrap_err()
            .to_string()
            .contains("missing field")
    );
}
