use super::*;

fn flags(endpoints: &str, ca: &str, cert: &str, key: &str, server_name: &str) -> EtcdFlags {
    let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
    EtcdFlags {
        endpoints: endpoints.split(',').map(str::to_string).collect(),
        ca: path(ca),
        cert: path(cert),
        key: path(key),
        server_name: (!server_name.is_empty()).then(|| server_name.to_string()),
    }
}

fn tls(ca: &str, client: Option<(&str, &str)>, server_name: Option<&str>) -> Option<TlsPlan> {
    Some(TlsPlan {
        ca: ca.into(),
        client: client.map(|(c, k)| (c.into(), k.into())),
        server_name: server_name.map(str::to_string),
    })
}

#[test]
fn accepted_combinations() {
    let h1 = "https://etcd-0:2379";
    let h2 = "https://etcd-0:2379,https://etcd-1:2379";
    for (name, given, want_tls) in [
        (
            "plaintext",
            flags("http://127.0.0.1:2379", "", "", "", ""),
            None,
        ),
        (
            "server-verified TLS",
            flags(h1, "/e/ca.crt", "", "", ""),
            tls("/e/ca.crt", None, None),
        ),
        (
            "client-certificate auth",
            flags(h2, "/e/ca.crt", "/e/tls.crt", "/e/tls.key", ""),
            tls("/e/ca.crt", Some(("/e/tls.crt", "/e/tls.key")), None),
        ),
        (
            "server name",
            flags(
                "https://10.0.0.5:2379",
                "/e/ca.crt",
                "/e/tls.crt",
                "/e/tls.key",
                "etcd.example",
            ),
            tls(
                "/e/ca.crt",
                Some(("/e/tls.crt", "/e/tls.key")),
                Some("etcd.example"),
            ),
        ),
        (
            "blanks are ignored",
            flags(" https://etcd-0:2379 ,", "/e/ca.crt", "", "", " "),
            tls("/e/ca.crt", None, None),
        ),
    ] {
        let plan = given
            .plan()
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert_eq!(plan.tls, want_tls, "{name}");
        assert!(
            plan.endpoints
                .iter()
                .all(|e| e == e.trim() && !e.is_empty()),
            "{name}: {:?}",
            plan.endpoints
        );
    }
}

/// Each refusal names the flag, and says what is wrong and what to do.
#[test]
fn refused_combinations_name_the_flag_and_the_fix() {
    let https = "https://etcd-0:2379";
    let http = "http://etcd-0:2379";
    for (name, given, want) in [
        (
            "no endpoint",
            flags("", "", "", "", ""),
            &["etcd-endpoints", "no endpoint"][..],
        ),
        (
            "no scheme",
            flags("etcd-0:2379", "", "", "", ""),
            &[
                "etcd-endpoints",
                "etcd-0:2379",
                "no scheme",
                "https://host:port",
            ],
        ),
        (
            "https without a CA",
            flags(https, "", "/e/tls.crt", "/e/tls.key", ""),
            &[
                "etcd-ca",
                "required with https://",
                "CA that issued etcd's server certificate",
            ],
        ),
        (
            "certificate without key",
            flags(https, "/e/ca.crt", "/e/tls.crt", "", ""),
            &["etcd-key", "required with --etcd-cert=/e/tls.crt"],
        ),
        (
            "key without certificate",
            flags(https, "/e/ca.crt", "", "/e/tls.key", ""),
            &["etcd-cert", "required with --etcd-key=/e/tls.key"],
        ),
        (
            "CA with plaintext endpoints",
            flags(http, "/e/ca.crt", "", "", ""),
            &[
                "etcd-ca",
                "/e/ca.crt",
                "plaintext",
                "would not be encrypted",
                "https://",
            ],
        ),
        (
            "client certificate with plaintext endpoints",
            flags(http, "", "/e/tls.crt", "/e/tls.key", ""),
            &["etcd-cert", "plaintext", "https://"],
        ),
        (
            "server name with plaintext endpoints",
            flags(http, "", "", "", "etcd.example"),
            &["etcd-server-name", "plaintext"],
        ),
        (
            "https mixed with http",
            flags(&format!("{https},{http}"), "/e/ca.crt", "", "", ""),
            &[
                "etcd-endpoints",
                "mixes",
                "http://etcd-0:2379 would be plaintext",
            ],
        ),
        (
            "bad server name",
            flags(https, "/e/ca.crt", "", "", "not a name!"),
            &["etcd-server-name", "not a name!", "not a DNS name"],
        ),
    ] {
        let err = match given.plan() {
            Ok(plan) => panic!("{name}: accepted: {plan:?}"),
            Err(e) => e.to_string(),
        };
        for w in want {
            assert!(err.contains(w), "{name}: {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn the_flags_reach_the_plan_through_the_config_parser() {
    let base = [
        ("cluster-name", "c1"),
        ("cluster-id", "1"),
        ("kubernetes", "false"),
        ("store", "etcd"),
    ];
    let parse = |extra: &[(&str, &str)]| {
        let map = base
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::Config::from_map(&map).unwrap()
    };
    let c = parse(&[
        ("etcd-endpoints", "https://etcd-0:2379"),
        ("etcd-ca", "/e/ca.crt"),
        ("etcd-cert", "/e/tls.crt"),
        ("etcd-key", "/e/tls.key"),
    ]);
    assert_eq!(
        c.etcd_plan().unwrap().tls,
        tls("/e/ca.crt", Some(("/e/tls.crt", "/e/tls.key")), None)
    );
    c.local().unwrap();
    // An empty server name is no server name; an empty path is refused
    // by the parser, naming the flag.
    let c = parse(&[("etcd-server-name", "")]);
    assert_eq!(c.etcd_plan().unwrap().tls, None);
    let map = [("cluster-name", "c1"), ("cluster-id", "1"), ("etcd-ca", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let err = crate::config::Config::from_map(&map)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--etcd-ca"), "{err}");
    // The start-up check refuses before anything is served.
    let c = parse(&[("etcd-endpoints", "https://etcd-0:2379")]);
    let err = c.local().unwrap_err().to_string();
    assert!(err.contains("etcd-ca"), "{err}");
}
