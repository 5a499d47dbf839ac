use super::*;
use crate::records::ServiceMeshOptions;

fn svc(
    cluster: &str,
    global: bool,
    shared: bool,
    affinity: Affinity,
    backends: &[(&str, bool)],
) -> ServiceRecord {
    ServiceRecord {
        cluster: ClusterName::new(cluster).unwrap(),
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec![],
        ports: vec![],
        backends: backends
            .iter()
            .map(|(ip, ready)| Backend {
                ip: ip.parse().unwrap(),
                ports: vec![],
                ready: *ready,
                node: None,
                zone: None,
            })
            .collect(),
        options: ServiceMeshOptions {
            global,
            shared,
            affinity,
        },
    }
}

fn ips(m: &[MergedBackend]) -> Vec<String> {
    m.iter()
        .map(|b| format!("{}@{}", b.backend.ip, b.cluster))
        .collect()
}

#[test]
fn merge_table() {
    use Affinity::*;
    let l = |aff, b: &[(&str, bool)]| svc("c1", true, true, aff, b);
    let r2 = svc(
        "c2",
        true,
        true,
        None,
        &[("10.2.0.1", true), ("10.2.0.2", false)],
    );
    let r3_unshared = svc("c3", true, false, None, &[("10.3.0.1", true)]);
    let r4_not_global = svc("c4", false, true, None, &[("10.4.0.1", true)]);
    let remotes = [
        RemoteService {
            record: &r2,
            stale: false,
        },
        RemoteService {
            record: &r3_unshared,
            stale: false,
        },
        RemoteService {
            record: &r4_not_global,
            stale: false,
        },
    ];
    let cases: Vec<(&str, ServiceRecord, Vec<&str>)> = vec![
        (
            "none: all ready of shared global clusters",
            l(None, &[("10.1.0.1", true)]),
            vec!["10.1.0.1@c1", "10.2.0.1@c2"],
        ),
        (
            "local: local only",
            l(Local, &[("10.1.0.1", true)]),
            vec!["10.1.0.1@c1"],
        ),
        (
            "local: falls back to remote",
            l(Local, &[("10.1.0.1", false)]),
            vec!["10.2.0.1@c2"],
        ),
        (
            "remote: remote only",
            l(Remote, &[("10.1.0.1", true)]),
            vec!["10.2.0.1@c2"],
        ),
        (
            "local not global: local only",
            svc("c1", false, true, None, &[("10.1.0.1", true)]),
            vec!["10.1.0.1@c1"],
        ),
        (
            "local unshared still uses remotes",
            svc("c1", true, false, None, &[("10.1.0.1", true)]),
            vec!["10.1.0.1@c1", "10.2.0.1@c2"],
        ),
    ];
    for (name, local, want) in cases {
        assert_eq!(
            ips(&merge_global_backends(&local, &remotes)),
            want,
            "{name}"
        );
    }
}

#[test]
fn remote_fallback_when_no_remote_ready_and_stale_is_kept() {
    let local = svc("c1", true, true, Affinity::Remote, &[("10.1.0.1", true)]);
    let r2 = svc("c2", true, true, Affinity::None, &[("10.2.0.1", false)]);
    let got = merge_global_backends(
        &local,
        &[RemoteService {
            record: &r2,
            stale: false,
        }],
    );
    assert_eq!(ips(&got), vec!["10.1.0.1@c1"]);

    let r2 = svc("c2", true, true, Affinity::None, &[("10.2.0.1", true)]);
    let got = merge_global_backends(
        &local,
        &[RemoteService {
            record: &r2,
            stale: true,
        }],
    );
    assert_eq!(ips(&got), vec!["10.2.0.1@c2"]);
    assert!(got[0].stale);
}

#[test]
fn other_services_are_not_merged() {
    let local = svc("c1", true, true, Affinity::None, &[]);
    let mut other = svc("c2", true, true, Affinity::None, &[("10.2.0.1", true)]);
    other.name = "api".into();
    assert!(
        merge_global_backends(
            &local,
            &[RemoteService {
                record: &other,
                stale: false
            }]
        )
        .is_empty()
    );
}
