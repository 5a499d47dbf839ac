use std::collections::BTreeMap;

use super::*;

fn base() -> BTreeMap<String, String> {
    [
        ("cluster-name", "c1"),
        ("cluster-id", "7"),
        ("node-name", "node-a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn parse(map: &BTreeMap<String, String>, args: &[&str]) -> Result<AgentConfig, ConfigError> {
    let mut full = vec!["node-agent"];
    full.extend_from_slice(args);
    AgentConfig::parse_with_map(map, full)
}

fn message(e: ConfigError) -> String {
    match e {
        ConfigError::Clap(e) => e.render().to_string(),
        ConfigError::Invalid(e) => e.to_string(),
    }
}

#[test]
fn map_feeds_the_same_parser_with_defaults() {
    let c = parse(&base(), &[]).expect("valid");
    assert_eq!(c.cluster_name.as_ref(), "c1");
    assert_eq!(c.cluster_id.get(), 7);
    assert_eq!(c.node_name.as_str(), "node-a");
    assert_eq!(c.bpf_root, PathBuf::from("/sys/fs/bpf/meshwork"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/meshwork"));
    assert_eq!(
        c.agent_socket,
        PathBuf::from("/var/run/meshwork/agent.sock")
    );
    assert_eq!(c.wireguard_interface, "mesh-wg0");
    assert_eq!(c.wireguard_port, 51871);
    assert_eq!(c.lb_algorithm, LbAlgorithm::Random);
    assert!(c.kube_proxy_replacement);
    assert!(!c.enable_encryption);
}

#[test]
fn command_line_overrides_map() {
    let mut m = base();
    m.insert("lb-algorithm".into(), "maglev".into());
    m.insert("wireguard-port".into(), "5000\n".into());
    let c = parse(&m, &["--wireguard-port", "6000"]).expect("valid");
    assert_eq!(c.lb_algorithm, LbAlgorithm::Maglev);
    assert_eq!(c.wireguard_port, 6000);
}

#[test]
fn booleans_take_true_false_and_bare_flag() {
    let mut m = base();
    m.insert("enable-encryption".into(), "true".into());
    m.insert("kube-proxy-replacement".into(), "false".into());
    let c = parse(&m, &["--encryption-strict-mode"]).expect("valid");
    assert!(c.enable_encryption);
    assert!(!c.kube_proxy_replacement);
    assert!(c.encryption_strict_mode);
}

#[test]
fn unknown_key_is_refused_naming_it() {
    let mut m = base();
    m.insert("enable-encrpytion".into(), "true".into());
    let msg = message(parse(&m, &[]).unwrap_err());
    assert!(msg.contains("enable-encrpytion"), "{msg}");
}

#[test]
fn bad_values_name_the_flag_and_what_is_allowed() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("cluster-id", "0", &["--cluster-id", "1-255"]),
        ("cluster-id", "256", &["--cluster-id", "1-255"]),
        ("cluster-id", "x", &["--cluster-id", "integer"]),
        (
            "cluster-name",
            "Bad_Name",
            &["--cluster-name", "lowercase letters"],
        ),
        (
            "lb-algorithm",
            "round-robin",
            &["--lb-algorithm", "random", "maglev"],
        ),
        (
            "encryption-type",
            "ipsec",
            &["--encryption-type", "wireguard"],
        ),
        (
            "enable-encryption",
            "yes",
            &["--enable-encryption", "true", "false"],
        ),
        ("pod-cidr", "10.1.0.1/24", &["--pod-cidr", "10.1.0.0/24"]),
        ("pod-cidr", "10.1.0.0/31", &["--pod-cidr", "/30"]),
        ("metrics-address", "nowhere", &["--metrics-address"]),
    ];
    for (key, value, wanted) in cases {
        let mut m = base();
        m.insert(key.to_string(), value.to_string());
        let msg = message(parse(&m, &[]).expect_err(key));
        for w in *wanted {
            assert!(msg.contains(w), "{key}={value}: {w:?} missing in {msg}");
        }
    }
}

#[test]
fn combinations_are_validated() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("node-encryption", "true")], "--node-encryption"),
        (
            &[("encryption-strict-mode", "true")],
            "--encryption-strict-mode",
        ),
        (&[("wireguard-port", "0")], "--wireguard-port"),
        (
            &[("wireguard-interface", "much-too-long-name0")],
            "--wireguard-interface",
        ),
        (
            &[("mesh-client-cert", "/c"), ("mesh-client-key", "/k")],
            "--mesh-client-ca",
        ),
        (
            &[
                ("mesh-client-cert", "/c"),
                ("mesh-client-key", "/k"),
                ("mesh-client-ca", "/a"),
            ],
            "--mesh-apiserver-address",
        ),
        (
            &[("mesh-apiserver-address", "no-port")],
            "--mesh-apiserver-address",
        ),
    ];
    for (pairs, flag) in cases {
        let mut m = base();
        for (k, v) in *pairs {
            m.insert(k.to_string(), v.to_string());
        }
        let msg = message(parse(&m, &[]).expect_err(flag));
        assert!(msg.contains(flag), "{pairs:?}: {msg}");
    }
    let mut ok = base();
    ok.insert("enable-encryption".into(), "true".into());
    ok.insert("node-encryption".into(), "true".into());
    ok.insert("mesh-apiserver-address".into(), "mesh-apiserver:443".into());
    for k in ["mesh-client-cert", "mesh-client-key", "mesh-client-ca"] {
        ok.insert(k.into(), format!("/etc/meshwork/{k}"));
    }
    parse(&ok, &[]).expect("consistent settings are accepted");
}

#[test]
fn config_dir_is_read_like_a_configmap_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (k, v) in base() {
        std::fs::write(dir.path().join(&k), format!("{v}\n")).expect("write");
    }
    std::fs::write(dir.path().join("lb-algorithm"), "maglev").expect("write");
    std::fs::create_dir(dir.path().join("..2026_11_24")).expect("mkdir");
    std::fs::write(dir.path().join("..2026_11_24/junk"), "x").expect("write");
    let dir_arg = format!("--config-dir={}", dir.path().display());
    let c = AgentConfig::from_args(["node-agent", dir_arg.as_str(), "--cluster-id", "9"])
        .expect("valid");
    assert_eq!(c.lb_algorithm, LbAlgorithm::Maglev);
    assert_eq!(c.cluster_id.get(), 9);
    assert_eq!(c.node_name.as_str(), "node-a");
}

#[test]
fn every_flag_is_listed_in_the_helm_table() {
    use clap::CommandFactory;
    let docs = include_str!("../config.rs");
    for arg in AgentConfig::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "config-dir" | "help" | "version") {
            continue;
        }
        assert!(
            docs.contains(&format!("| `{long}` |")),
            "flag --{long} missing from the Helm table"
        );
    }
}
