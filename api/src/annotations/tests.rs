use super::*;

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (annotations, compat, global, shared, affinity)
type Case<'a> = (&'a [(&'a str, &'a str)], bool, bool, bool, Affinity);

#[test]
fn table() {
    use Affinity::*;
    let cases: &[Case] = &[
        (&[], false, false, true, None),
        (&[(GLOBAL, "true")], false, true, true, None),
        (
            &[(GLOBAL, "TRUE"), (SHARED, "false")],
            false,
            true,
            false,
            None,
        ),
        (
            &[(GLOBAL, "true"), (AFFINITY, "local")],
            false,
            true,
            true,
            Local,
        ),
        (
            &[(GLOBAL, "true"), (AFFINITY, "Remote")],
            false,
            true,
            true,
            Remote,
        ),
        // Cilium names ignored without compat...
        (
            &[("service.cilium.io/global", "true")],
            false,
            false,
            true,
            None,
        ),
        // ...honoured with it.
        (
            &[("service.cilium.io/global", "true")],
            true,
            true,
            true,
            None,
        ),
        (
            &[("io.cilium/global-service", "true")],
            true,
            true,
            true,
            None,
        ),
        (
            &[
                ("service.cilium.io/global", "true"),
                ("service.cilium.io/shared", "false"),
                ("service.cilium.io/affinity", "remote"),
            ],
            true,
            true,
            false,
            Remote,
        ),
        // Meshwork's name wins over Cilium's.
        (
            &[(GLOBAL, "false"), ("service.cilium.io/global", "true")],
            true,
            false,
            true,
            None,
        ),
    ];
    for (i, (a, compat, global, shared, affinity)) in cases.iter().enumerate() {
        let o = service_mesh_options(&ann(a), *compat).unwrap();
        assert_eq!(
            (o.global, o.shared, o.affinity),
            (*global, *shared, *affinity),
            "case {i}: {a:?}"
        );
    }
}

#[test]
fn malformed_values_name_the_annotation() {
    let err = service_mesh_options(&ann(&[(GLOBAL, "yes please")]), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(GLOBAL) && err.contains("yes please") && err.contains("\"true\""),
        "{err}"
    );
    let err = service_mesh_options(&ann(&[("service.cilium.io/affinity", "nearest")]), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("service.cilium.io/affinity") && err.contains("local, remote or none"),
        "{err}"
    );
}
