use super::*;
use mesh_api::{ClusterId, ClusterName};

fn side(
    ctx: &str,
    name: &str,
    id: i64,
    cidr: &str,
    status_age: Option<u64>,
    version: &str,
) -> Side {
    let now = 1_000;
    Side {
        context: ctx.into(),
        info: ClusterInfo {
            cert_lifetime: None,
            name: ClusterName::new(name).unwrap(),
            id: ClusterId::new(id).unwrap(),
            pod_cidrs: vec![cidr.parse().unwrap()],
        },
        status: status_age.map(|age| MeshStatus {
            cluster: name.into(),
            cluster_id: id as u8,
            pod_cidrs: vec![cidr.parse().unwrap()],
            version: version.into(),
            replica: "r".into(),
            updated_at: now - age,
            leader: true,
            store: Default::default(),
            watch_clients: 0,
            remotes: Default::default(),
            refused_entries: Vec::new(),
            refused_peers: Vec::new(),
            refused_exports: Vec::new(),
            certificates: Vec::new(),
            swept_clusters: 0,
        }),
    }
}

#[test]
fn compatible_clusters_pass() {
    let a = side("lab-c1", "c1", 1, "10.1.0.0/16", Some(2), "0.1.0");
    let b = side("lab-c2", "c2", 2, "10.2.0.0/16", Some(5), "0.1.3");
    assert_eq!(check_pair(&a, &b, 1_000), Vec::<String>::new());
}

#[test]
fn each_refusal_says_what_to_change() {
    let a = side("lab-c1", "c1", 1, "10.1.0.0/16", Some(2), "0.1.0");
    let cases = [
        (
            side("lab-c2", "c2", 1, "10.2.0.0/16", Some(2), "0.1.0"),
            "cluster id 1",
        ),
        (
            side("lab-c2", "c1", 2, "10.2.0.0/16", Some(2), "0.1.0"),
            "names must be unique",
        ),
        (
            side("lab-c2", "c2", 2, "10.1.128.0/17", Some(2), "0.1.0"),
            "overlaps",
        ),
        (
            side("lab-c2", "c2", 2, "10.2.0.0/16", None, "0.1.0"),
            "no status",
        ),
        (
            side("lab-c2", "c2", 2, "10.2.0.0/16", Some(300), "0.1.0"),
            "300 s old",
        ),
        (
            side("lab-c2", "c2", 2, "10.2.0.0/16", Some(2), "0.2.0"),
            "same minor version",
        ),
    ];
    for (b, want) in cases {
        let problems = check_pair(&a, &b, 1_000);
        assert_eq!(problems.len(), 1, "{want}: {problems:?}");
        assert!(problems[0].contains(want), "{want}: {}", problems[0]);
    }
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(
        parse_duration("90d").unwrap(),
        Duration::from_secs(90 * 86_400)
    );
    assert!(
        parse_duration("5 minutes")
            .unwrap_err()
            .contains("unknown unit")
    );
    assert!(
        parse_duration("soon")
            .unwrap_err()
            .contains("not a duration")
    );
}

#[test]
fn status_warns_about_a_certificate_past_its_renewal_time_and_says_why() {
    use mesh_api::clustermesh::CertificateStatus;
    let cert = |name: &str, renewed_here, last_error: Option<&str>| CertificateStatus {
        name: name.into(),
        spiffe_id: None,
        not_after: 10_000,
        renew_at: 7_000,
        renewed_here,
        renewals: 2,
        last_error: last_error.map(Into::into),
    };
    let certs = vec![
        cert("server", true, None),
        cert("client/c2", true, Some("c2 refused: no signer")),
        cert("node-agents", false, None),
    ];
    // Before the renewal time: no warning, a summary line.
    let calm = certificate_lines(&certs, 5_000);
    assert_eq!(
        calm,
        vec![
            "certificates: server (expires in 83 min, renewed 2x), client/c2 (expires in 83 min, renewed 2x), node-agents (expires in 83 min, not renewed here)"
        ]
    );
    // Well past it: each says why.
    let late = certificate_lines(&certs, 9_000);
    assert_eq!(late.len(), 4, "{late:#?}");
    assert!(
        late[0].contains("server expires in 1000 s") && late[0].contains("not been renewed yet"),
        "{}",
        late[0]
    );
    assert!(
        late[1].contains("renewal is failing: c2 refused"),
        "{}",
        late[1]
    );
    assert!(late[2].contains("--signing-ca-cert"), "{}", late[2]);
}
