use std::collections::{BTreeSet, HashMap};

use super::*;

fn env(vars: &[(&str, &str)]) -> Result<CniEnv> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CniEnv::from_vars(|k| map.get(k).cloned())
}

#[test]
fn environment_is_parsed_and_checked() {
    let e = env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        ),
    ])
    .expect("valid");
    assert_eq!(e.command, Command::Add);
    assert_eq!(e.args["K8S_POD_NAME"], "p");
    assert_eq!(e.container_id().expect("id"), "abc");
    assert_eq!(e.netns.as_deref(), None);
    assert_eq!(error_code(&e.netns().expect_err("no netns")), 4);

    for (vars, wanted) in [
        (vec![], "CNI_COMMAND"),
        (vec![("CNI_COMMAND", "frob")], "frob"),
        (
            vec![("CNI_COMMAND", "ADD"), ("CNI_ARGS", "novalue")],
            "CNI_ARGS",
        ),
    ] {
        let err = env(&vars).expect_err(wanted);
        assert_eq!(error_code(&err), 4);
        assert!(err.to_string().contains(wanted), "{err}");
    }
    let bad_id = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "a b")]).expect("env");
    assert_eq!(error_code(&bad_id.container_id().expect_err("bad id")), 4);
    let bad_if = env(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_IFNAME", "much-too-long-ifname"),
    ])
    .expect("env");
    assert_eq!(error_code(&bad_if.ifname().expect_err("bad ifname")), 4);
}

#[test]
fn network_configuration_errors_have_the_spec_codes() {
    let ok = br#"{"cniVersion":"1.0.0","name":"mw","type":"mesh-cni","podCIDR":"10.1.0.0/24","runtimeConfig":{}}"#;
    let conf = NetConf::parse(ok).expect("valid");
    assert_eq!(
        conf.agent_socket,
        PathBuf::from("/var/run/meshwork/agent.sock")
    );
    assert_eq!(conf.state_dir, PathBuf::from("/var/lib/meshwork"));
    let cases: &[(&[u8], u32, &str)] = &[
        (b"not json", 6, "decode"),
        (b"", 6, "decode"),
        (br#"{"cniVersion":"1.0.0","name":"mw"}"#, 7, "type"),
        (
            br#"{"cniVersion":"2.0.0","name":"mw","type":"t"}"#,
            1,
            "1.0.0",
        ),
        (br#"{"cniVersion":"1.0.0","name":"","type":"t"}"#, 7, "name"),
        (
            br#"{"cniVersion":"1.0.0","name":"mw","type":"t","mtu":70000}"#,
            7,
            "576-65535",
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"mw","type":"t","podCIDR":"10.1.0.0/31"}"#,
            7,
            "/30",
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"mw","type":"t","podCIDR":"fd00::/64"}"#,
            7,
            "IPv4",
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"mw","type":"t","podCIDR":"banana"}"#,
            7,
            "podCIDR",
        ),
    ];
    for (input, code, wanted) in cases {
        let err = NetConf::parse(input).expect_err(wanted);
        assert_eq!(
            error_code(&err),
            *code,
            "{}: {err}",
            String::from_utf8_lossy(input)
        );
        assert!(err.to_string().contains(wanted), "{wanted:?} not in {err}");
    }
}

#[test]
fn error_json_has_the_spec_shape() {
    let err = Error::PodCidrExhausted {
        cidr: "10.1.0.0/30".parse().expect("cidr"),
        allocated: 2,
        dir: PathBuf::from("/x"),
    };
    let v = error_json(&err, "0.4.0");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["code"], CODE_POD_CIDR_EXHAUSTED);
    assert!(v["msg"].as_str().expect("msg").contains("10.1.0.0/30"));
    assert!(v["details"].is_string());
    let v = run(&env(&[("CNI_COMMAND", "VERSION")]).expect("env"), b"")
        .expect("version")
        .expect("output");
    assert_eq!(v["cniVersion"], CNI_VERSION);
}

#[test]
fn older_result_versions_carry_the_ip_version_field() {
    let links = link::Links {
        host_ifindex: 5,
        host_mac: "02:00:00:00:00:01".into(),
        pod_ifindex: 2,
        pod_mac: "02:00:00:00:00:02".into(),
    };
    let addr = Ipv4Addr::new(10, 1, 0, 2);
    let v1 = add_result(
        "1.0.0",
        "mwx",
        &links,
        Path::new("/run/netns/p"),
        "eth0",
        addr,
    );
    assert!(v1["ips"][0].get("version").is_none());
    assert_eq!(v1["ips"][0]["address"], "10.1.0.2/32");
    let v04 = add_result(
        "0.4.0",
        "mwx",
        &links,
        Path::new("/run/netns/p"),
        "eth0",
        addr,
    );
    assert_eq!(v04["ips"][0]["version"], "4");
}

#[test]
fn ipam_allocates_distinct_addresses_round_robin_and_releases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ipam = Ipam::open(dir.path(), "10.1.0.0/29".parse().expect("cidr")).expect("open");
    let a = ipam.allocate("a", "eth0").expect("a");
    let b = ipam.allocate("b", "eth0").expect("b");
    assert_eq!(
        (a, b),
        (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2))
    );
    assert_eq!(
        ipam.allocate("a", "eth0").expect("again"),
        a,
        "same owner, same address"
    );
    assert_eq!(ipam.release("a", "eth0").expect("release"), vec![a]);
    assert!(ipam.release("a", "eth0").expect("release again").is_empty());
    // Round robin: the address just freed is not handed out at once.
    assert_eq!(
        ipam.allocate("c", "eth0").expect("c"),
        Ipv4Addr::new(10, 1, 0, 3)
    );
    let owners = ipam.allocations().expect("allocations");
    assert_eq!(owners.len(), 2);
    assert_eq!(owners[0].1.container_id, "b");
    assert_eq!(
        Ipam::release_everywhere(dir.path(), "b", "eth0").expect("everywhere"),
        vec![b]
    );
}

#[test]
fn ipam_exhaustion_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ipam = Ipam::open(dir.path(), "10.1.0.0/30".parse().expect("cidr")).expect("open");
    ipam.allocate("a", "eth0").expect("a");
    ipam.allocate("b", "eth0").expect("b");
    let err = ipam.allocate("c", "eth0").expect_err("exhausted");
    assert_eq!(error_code(&err), CODE_POD_CIDR_EXHAUSTED);
    let msg = err.to_string();
    assert!(
        msg.contains("10.1.0.0/30") && msg.contains("2 addresses allocated"),
        "{msg}"
    );
    assert!(msg.contains("delete unused pods"), "{msg}");
}

#[test]
fn ipam_is_safe_under_concurrent_allocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cidr: Ipv4Net = "10.1.0.0/27".parse().expect("cidr");
    let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let dir = dir.path();
                s.spawn(move || {
                    Ipam::open(dir, cidr)
                        .expect("open")
                        .allocate(&format!("c{i}"), "eth0")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("allocate"))
            .collect()
    });
    let distinct: BTreeSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), 30);
    assert!(got.iter().all(|ip| cidr.contains(ip)));
}
