use std::collections::BTreeMap;

use mesh_api::{ClusterId, ClusterName, Identity, LabelSet, Protocol, ReservedIdentity};

use super::*;
use crate::policy::crd::{PortProtocol, SelectorRequirement as CrdRequirement};

fn cluster(name: &str) -> ClusterName {
    name.parse().expect("cluster name")
}

fn labels(cluster: &str, ns: &str, app: &str) -> LabelSet {
    let pod: BTreeMap<String, String> = [("app".to_string(), app.to_string())].into();
    LabelSet::for_pod(&cluster.parse().expect("name"), ns, &pod).expect("labels")
}

fn id(cluster: u8, n: u16) -> Identity {
    Identity::new(ClusterId::new(i64::from(cluster)).expect("id"), n).expect("identity")
}

/// c1/shop: backend 256, frontend 257; c2/shop: frontend 256, other 257;
/// c1/other: frontend 258.
fn identities() -> BTreeMap<Identity, LabelSet> {
    [
        (id(1, 256), labels("c1", "shop", "backend")),
        (id(1, 257), labels("c1", "shop", "frontend")),
        (id(2, 256), labels("c2", "shop", "frontend")),
        (id(2, 257), labels("c2", "shop", "other")),
        (id(1, 258), labels("c1", "other", "frontend")),
    ]
    .into()
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        match_expressions: Vec::new(),
    }
}

fn port(p: &str, proto: &str) -> PortRule {
    PortRule {
        ports: vec![PortProtocol {
            port: p.to_string(),
            protocol: Some(proto.to_string()),
            ..PortProtocol::default()
        }],
        ..PortRule::default()
    }
}

fn policy(ns: &str, name: &str, subject: Selector, ingress: Vec<IngressRule>) -> PolicySource {
    PolicySource::namespaced(
        ns,
        name,
        &MeshNetworkPolicySpec {
            endpoint_selector: subject,
            ingress,
            egress: Vec::new(),
            ..MeshNetworkPolicySpec::default()
        },
    )
}

fn run(policies: &[PolicySource]) -> CompiledPolicies {
    let ids = identities();
    compile(
        policies,
        &CompileInputs {
            cluster: &cluster("c1"),
            identities: &ids,
            namespaces: &NO_NAMESPACES,
            allow_localhost: false,
            named_ports: &Default::default(),
            services: &Default::default(),
            apiserver_on_this_node: false,
            apiserver_on_remote_node: false,
        },
    )
}

fn allowed(p: &EndpointPolicy) -> Vec<(Option<Identity>, u16, Option<Protocol>)> {
    p.allow
        .iter()
        .map(|a| (a.identity, a.port, a.protocol))
        .collect()
}

#[test]
fn unselected_endpoints_stay_open_and_selected_ones_are_default_deny() {
    let c = run(&[policy(
        "shop",
        "backend",
        sel(&[("app", "backend")]),
        vec![IngressRule::default()],
    )]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert!(backend.ingress_enforced && !backend.egress_enforced);
    assert!(backend.allow.is_empty(), "an empty rule allows nothing");
    let frontend = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert_eq!(frontend, EndpointPolicy::default());
    // A namespaced policy never selects pods of another namespace.
    let other = c.endpoint_policy(&labels("c1", "other", "backend"));
    assert_eq!(other, EndpointPolicy::default());
}

#[test]
fn a_peer_selector_naming_a_cluster_selects_only_that_clusters_identities() {
    let c = run(&[policy(
        "shop",
        "from-c2-frontend",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            from_endpoints: vec![sel(&[("app", "frontend"), ("meshwork.io/cluster", "c2")])],
            to_ports: vec![port("8080", "TCP")],
            ..IngressRule::default()
        }],
    )]);
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&p),
        vec![(Some(id(2, 256)), 8080, Some(Protocol::Tcp))]
    );
    let rule = p.allow.iter().next().expect("one").rule;
    let r = &c.rules[&rule];
    assert_eq!(
        (r.policy.as_str(), r.direction, r.index),
        ("shop/from-c2-frontend", Direction::Ingress, 0)
    );
    assert_eq!(
        r.to_string(),
        "MeshNetworkPolicy shop/from-c2-frontend ingress[0]"
    );
}

#[test]
fn an_unnamed_cluster_means_the_local_one_and_the_namespace_the_policys() {
    let c = run(&[policy(
        "shop",
        "frontends",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            from_endpoints: vec![sel(&[("app", "frontend")])],
            ..IngressRule::default()
        }],
    )]);
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    // Not c2's frontend (another cluster), not c1/other's (another namespace).
    assert_eq!(allowed(&p), vec![(Some(id(1, 257)), 0, None)]);
    // matchExpressions on the cluster key lift the default.
    let mut any_cluster = sel(&[("app", "frontend")]);
    any_cluster.match_expressions.push(CrdRequirement {
        key: "meshwork.io/cluster".into(),
        operator: "Exists".into(),
        values: Vec::new(),
    });
    let c = run(&[policy(
        "shop",
        "frontends",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            from_endpoints: vec![any_cluster],
            ..IngressRule::default()
        }],
    )]);
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&p),
        vec![(Some(id(1, 257)), 0, None), (Some(id(2, 256)), 0, None)]
    );
}

#[test]
fn entities_ports_only_rules_and_several_policies_add_up() {
    let ports_only = policy(
        "shop",
        "http",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            to_ports: vec![port("80", "ANY")],
            ..IngressRule::default()
        }],
    );
    let entities = policy(
        "shop",
        "host",
        sel(&[]),
        vec![IngressRule {
            from_entities: vec!["host".into(), "remote-node".into()],
            to_ports: vec![port("9090", "udp")],
            ..IngressRule::default()
        }],
    );
    let c = run(&[ports_only, entities]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&p),
        vec![
            // ANY on a port is that port of TCP and of UDP.
            (None, 80, Some(Protocol::Tcp)),
            (None, 80, Some(Protocol::Udp)),
            (
                Some(ReservedIdentity::Host.identity()),
                9090,
                Some(Protocol::Udp)
            ),
            (
                Some(ReservedIdentity::RemoteNode.identity()),
                9090,
                Some(Protocol::Udp)
            ),
        ]
    );
    // `all` is any peer.
    let c = run(&[policy(
        "shop",
        "all",
        sel(&[]),
        vec![IngressRule {
            from_entities: vec!["all".into()],
            ..IngressRule::default()
        }],
    )]);
    let p = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert_eq!(allowed(&p), vec![(None, 0, None)]);
}

#[test]
fn egress_rules_enforce_egress_only() {
    let c = run(&[PolicySource::clusterwide(
        "frontends-to-backend",
        &MeshClusterwideNetworkPolicySpec {
            endpoint_selector: Some(sel(&[("app", "frontend")])),
            ingress: Vec::new(),
            egress: vec![EgressRule {
                to_endpoints: vec![sel(&[("app", "backend")])],
                to_ports: vec![port("8080", "TCP")],
                ..EgressRule::default()
            }],
            ..MeshClusterwideNetworkPolicySpec::default()
        },
    )]);
    // Cluster-wide: frontends of every namespace of this cluster.
    for ns in ["shop", "other"] {
        let p = c.endpoint_policy(&labels("c1", ns, "frontend"));
        assert!(p.egress_enforced && !p.ingress_enforced, "{ns}");
        assert_eq!(
            allowed(&p),
            vec![(Some(id(1, 256)), 8080, Some(Protocol::Tcp))]
        );
        assert!(p.allow.iter().all(|a| a.direction == Direction::Egress));
    }
}

#[test]
fn bad_policies_are_refused_alone() {
    let good = policy(
        "shop",
        "good",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            from_entities: vec!["world".into()],
            ..IngressRule::default()
        }],
    );
    let bad_entity = policy(
        "shop",
        "bad-entity",
        sel(&[("app", "frontend")]),
        vec![IngressRule {
            from_entities: vec!["everyone".into()],
            ..IngressRule::default()
        }],
    );
    let bad_port = policy(
        "shop",
        "bad-port",
        sel(&[("app", "frontend")]),
        vec![IngressRule {
            to_ports: vec![port("HTTP_8080", "TCP")],
            ..IngressRule::default()
        }],
    );
    let mut bad_op = sel(&[]);
    bad_op.match_expressions.push(CrdRequirement {
        key: "app".into(),
        operator: "Near".into(),
        values: vec!["x".into()],
    });
    let bad_selector = policy("shop", "bad-selector", bad_op, vec![IngressRule::default()]);
    let bad_cidr = policy(
        "shop",
        "bad-cidr",
        sel(&[("app", "other")]),
        vec![IngressRule {
            from_cidr: vec!["192.0.2.0/33".into()],
            ..IngressRule::default()
        }],
    );
    let c = run(&[good, bad_entity, bad_port, bad_selector, bad_cidr]);
    let refused: Vec<(&str, &str)> = c
        .problems
        .iter()
        .map(|p| (p.policy.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused.iter().any(|(p, m)| p.ends_with("shop/bad-cidr")
        && m.contains("\"192.0.2.0/33\"")
        && m.contains("IPv4 CIDR")));
    assert!(refused.iter().any(|(p, m)| p.ends_with("shop/bad-entity")
        && m.contains("\"everyone\"")
        && m.contains("remote-node")));
    assert!(refused.iter().any(|(p, m)| p.ends_with("shop/bad-port")
        && m.contains("\"HTTP_8080\"")
        && m.contains("port name")));
    assert!(
        refused
            .iter()
            .any(|(p, m)| p.ends_with("shop/bad-selector") && m.contains("\"Near\""))
    );
    // The good policy still works; what the refused ones select (when
    // their selector is valid) allows nothing: refused, never allow-all.
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&backend),
        vec![(Some(ReservedIdentity::World.identity()), 0, None)]
    );
    let frontend = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert!(
        frontend.ingress_enforced && !frontend.egress_enforced,
        "{frontend:?}"
    );
    assert!(allowed(&frontend).is_empty(), "{frontend:?}");
}

#[test]
fn rule_ids_are_stable_non_zero_and_distinct_per_rule() {
    let a = rule_id("MeshNetworkPolicy", "shop/x", Direction::Ingress, false, 0);
    assert_eq!(
        a,
        rule_id("MeshNetworkPolicy", "shop/x", Direction::Ingress, false, 0)
    );
    assert_ne!(a, 0);
    assert_ne!(
        a,
        rule_id("MeshNetworkPolicy", "shop/x", Direction::Ingress, false, 1)
    );
    assert_ne!(
        a,
        rule_id("MeshNetworkPolicy", "shop/x", Direction::Egress, false, 0)
    );
}

#[test]
fn cidr_rules_get_node_local_identities_nested_cidrs_and_world_included() {
    let wide = policy(
        "shop",
        "wide",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            from_cidr: vec!["10.0.0.0/8".into()],
            to_ports: vec![port("443", "TCP")],
            ..IngressRule::default()
        }],
    );
    let narrow = policy(
        "shop",
        "narrow",
        sel(&[("app", "frontend")]),
        vec![IngressRule {
            from_cidr: vec!["10.1.0.0/16".into(), "192.0.2.7/24".into()],
            ..IngressRule::default()
        }],
    );
    let world = policy(
        "shop",
        "world",
        sel(&[("app", "other")]),
        vec![IngressRule {
            from_entities: vec!["world".into()],
            ..IngressRule::default()
        }],
    );
    let c = run(&[wide, narrow, world]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let ids: Vec<(String, Identity)> = c
        .cidr_identities
        .iter()
        .map(|(n, i)| (n.to_string(), *i))
        .collect();
    // Host bits are dropped (192.0.2.7/24 is 192.0.2.0/24), one identity each.
    assert_eq!(
        ids.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24"]
    );
    assert!(ids.iter().all(|(_, i)| i.is_node_local()));
    let id = |net: &str| ids.iter().find(|(n, _)| n == net).expect("named").1;
    // The wide rule also covers the narrower CIDR another policy names.
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&p),
        vec![
            (Some(id("10.0.0.0/8")), 443, Some(Protocol::Tcp)),
            (Some(id("10.1.0.0/16")), 443, Some(Protocol::Tcp)),
        ]
    );
    let p = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert_eq!(
        allowed(&p),
        vec![
            (Some(id("10.1.0.0/16")), 0, None),
            (Some(id("192.0.2.0/24")), 0, None),
        ]
    );
    // `world` includes every CIDR identity.
    let p = c.endpoint_policy(&labels("c1", "shop", "other"));
    let peers: Vec<_> = allowed(&p).into_iter().map(|(i, _, _)| i).collect();
    assert_eq!(peers.len(), 4, "{peers:?}");
    assert!(peers.contains(&Some(ReservedIdentity::World.identity())));
}

/// A port without a protocol must not become a key the datapath cannot
/// hold (which left the endpoint without enforcement): it is the port of
/// TCP and of UDP. A port of SCTP, which the datapath cannot match, refuses
/// the policy and says why.
#[test]
fn a_port_without_protocol_means_tcp_and_udp_and_an_sctp_port_is_refused() {
    let no_protocol = policy(
        "shop",
        "web",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            to_ports: vec![PortRule {
                ports: vec![PortProtocol {
                    port: "8080".into(),
                    protocol: None,
                    ..PortProtocol::default()
                }],
                ..PortRule::default()
            }],
            ..IngressRule::default()
        }],
    );
    let c = run(&[no_protocol]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let p = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&p),
        vec![
            (None, 8080, Some(Protocol::Tcp)),
            (None, 8080, Some(Protocol::Udp))
        ]
    );
    let sctp = policy(
        "shop",
        "sctp",
        sel(&[("app", "backend")]),
        vec![IngressRule {
            to_ports: vec![port("3868", "SCTP")],
            ..IngressRule::default()
        }],
    );
    let c = run(&[sctp]);
    let problems = format!("{:?}", c.problems);
    assert!(
        problems.contains("3868/SCTP cannot be enforced"),
        "{problems}"
    );
}

/// A policy edited into a form that does not compile keeps its last valid
/// version enforced, and says so; deleting it then removes it.
#[test]
fn a_policy_that_stops_compiling_keeps_its_last_valid_version() {
    let ids = identities();
    let inputs = CompileInputs {
        cluster: &cluster("c1"),
        identities: &ids,
        namespaces: &NO_NAMESPACES,
        allow_localhost: false,
        named_ports: &Default::default(),
        services: &Default::default(),
        apiserver_on_this_node: false,
        apiserver_on_remote_node: false,
    };
    let version = |ports: &str| {
        policy(
            "shop",
            "db",
            sel(&[("app", "backend")]),
            vec![IngressRule {
                to_ports: vec![port(ports, "TCP")],
                ..IngressRule::default()
            }],
        )
    };
    let backend = labels("c1", "shop", "backend");
    let mut last = LastValid::new();
    let c = compile_keeping_last_valid(&[version("5432")], &inputs, &mut last);
    assert!(c.problems.is_empty());
    let enforced = c.endpoint_policy(&backend);
    assert!(enforced.ingress_enforced);

    // A typo: the old rules keep applying, the status says why and that
    // it is stale.
    let c = compile_keeping_last_valid(&[version("54.2")], &inputs, &mut last);
    assert_eq!(c.endpoint_policy(&backend), enforced);
    let [problem] = c.problems.as_slice() else {
        panic!("{:?}", c.problems)
    };
    assert!(problem.message.contains("54.2"), "{}", problem.message);
    assert!(problem.message.contains("stale"), "{}", problem.message);
    // Without a last valid version (a new policy that never compiled), what
    // it selects allows nothing: refused, never allow-all, also on the path
    // the agent takes (it dropped such a policy whole: found by the
    // upstream NetworkPolicy cases, a named port let everything in).
    let c = compile_keeping_last_valid(&[version("54.2")], &inputs, &mut LastValid::new());
    let closed = c.endpoint_policy(&backend);
    assert!(
        closed.ingress_enforced && allowed(&closed).is_empty(),
        "{closed:?}"
    );
    let c = run(&[version("54.2")]);
    let closed = c.endpoint_policy(&backend);
    assert!(
        closed.ingress_enforced && !closed.egress_enforced,
        "{closed:?}"
    );
    assert!(allowed(&closed).is_empty(), "{closed:?}");
    assert!(
        c.problems[0].message.contains("allow nothing"),
        "{:?}",
        c.problems
    );

    // Fixed: the new version applies; deleted: nothing is remembered.
    let c = compile_keeping_last_valid(&[version("6432")], &inputs, &mut last);
    assert!(c.problems.is_empty());
    assert_eq!(
        allowed(&c.endpoint_policy(&backend)),
        vec![(None, 6432, Some(Protocol::Tcp))]
    );
    let c = compile_keeping_last_valid(&[], &inputs, &mut last);
    assert!(!c.endpoint_policy(&backend).ingress_enforced);
    assert!(last.is_empty());
}

/// An endpoint whose identity is not known yet is held by every policy
/// that could select a pod of its namespace, with nothing allowed; a
/// namespace no policy can select stays open.
#[test]
fn an_endpoint_without_a_resolved_identity_is_default_deny_where_a_policy_could_select_it() {
    let c = run(&[policy(
        "shop",
        "db",
        sel(&[("app", "db")]),
        vec![IngressRule {
            to_ports: vec![port("5432", "TCP")],
            ..IngressRule::default()
        }],
    )]);
    let held = c.unresolved_endpoint_policy(Some("shop"));
    assert!(held.ingress_enforced && !held.egress_enforced, "{held:?}");
    assert!(allowed(&held).is_empty());
    assert_eq!(
        c.unresolved_endpoint_policy(Some("other")),
        EndpointPolicy::default()
    );
    // A runtime that did not say the namespace: any policy could.
    assert!(c.unresolved_endpoint_policy(None).ingress_enforced);
}

/// No namespace labels known.
static NO_NAMESPACES: crate::policy::compile::NamespaceLabels = std::collections::BTreeMap::new();

#[test]
fn a_policy_using_a_field_this_version_does_not_enforce_is_refused_whole_and_stays_closed() {
    let spec: MeshNetworkPolicySpec = serde_yaml::from_str(
        r#"
endpointSelector: {matchLabels: {app: frontend}}
egress:
  - toEndpoints: [{matchLabels: {app: backend}}]
  - toFQDNs: [{matchPattern: "*.stripe.com"}]
    toPorts: [{ports: [{port: "443"}]}]
  - toEndpoints: [{}]
    toPorts: [{ports: [{port: "80"}], rules: {http: [{method: GET}]}}]
"#,
    )
    .expect("a Cilium-shaped spec");
    let p = PolicySource::namespaced("shop", "fqdn", &spec);
    let c = run(std::slice::from_ref(&p));
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    let m = &c.problems[0].message;
    assert!(
        m.contains("egress[1].toFQDNs") && m.contains("egress[2].toPorts[0].rules.http"),
        "the status names each field: {m}"
    );
    // What it selects allows nothing in its direction: not the rest of the
    // rules (toEndpoints backend), not port 443 to anyone.
    let frontend = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert!(
        frontend.egress_enforced && frontend.allow.is_empty(),
        "{frontend:?}"
    );
    // The fields survive a round trip (nothing pruned on our side).
    let back = serde_json::to_value(&spec).expect("serializes");
    assert!(back["egress"][1]["toFQDNs"].is_array());
    assert_eq!(
        back["egress"][2]["toPorts"][0]["rules"]["http"][0]["method"],
        "GET"
    );
}

fn spec(yaml: &str) -> MeshNetworkPolicySpec {
    serde_yaml::from_str(yaml).expect("a policy spec")
}

fn denied(p: &EndpointPolicy) -> Vec<(Option<Identity>, u16, Option<Protocol>)> {
    p.deny
        .iter()
        .map(|a| (a.identity, a.port, a.protocol))
        .collect()
}

#[test]
fn a_deny_rule_wins_over_every_allow_and_names_its_rule() {
    let allow_all = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingress: [{fromEndpoints: [{}]}, {fromEndpoints: [{matchLabels: {app: frontend}}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
"#,
    );
    let deny = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingressDeny: [{fromEndpoints: [{matchLabels: {app: frontend}}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
"#,
    );
    let c = run(&[
        PolicySource::namespaced("shop", "all", &allow_all),
        PolicySource::namespaced("shop", "deny", &deny),
    ]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert!(backend.ingress_enforced && !backend.egress_enforced);
    assert_eq!(
        denied(&backend),
        vec![(Some(id(1, 257)), 8080, Some(Protocol::Tcp))]
    );
    // The allow with the very key of the deny is gone (the map holds one
    // verdict per key); the frontend's allow on every port stays (the deny
    // on 8080 wins there in the datapath).
    let allows = allowed(&backend);
    assert!(
        !allows.contains(&(Some(id(1, 257)), 8080, Some(Protocol::Tcp))),
        "{allows:?}"
    );
    assert!(allows.contains(&(Some(id(1, 257)), 0, None)), "{allows:?}");
    assert!(allows.contains(&(Some(id(1, 256)), 0, None)), "{allows:?}");
    let rule = backend.deny.iter().next().expect("a deny").rule;
    assert_eq!(
        c.rules[&rule].to_string(),
        "MeshNetworkPolicy shop/deny ingressDeny[0]"
    );
    assert_ne!(
        rule,
        rule_id(
            "MeshNetworkPolicy",
            "shop/deny",
            Direction::Ingress,
            false,
            0
        ),
        "a deny rule's id is not its allow twin's"
    );
}

#[test]
fn a_deny_only_policy_closes_its_direction_unless_default_deny_is_off() {
    let closing = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingressDeny: [{fromEndpoints: [{matchLabels: {app: frontend}}]}]
"#,
    );
    let c = run(&[PolicySource::namespaced("shop", "deny", &closing)]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert!(
        backend.ingress_enforced && backend.allow.is_empty(),
        "{backend:?}"
    );
    assert_eq!(denied(&backend), vec![(Some(id(1, 257)), 0, None)]);

    // enableDefaultDeny: false: only the deny applies, the rest stays open.
    let adding = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
enableDefaultDeny: {ingress: false}
ingressDeny: [{fromEndpoints: [{matchLabels: {app: frontend}}]}]
"#,
    );
    let c = run(&[PolicySource::namespaced("shop", "deny", &adding)]);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert!(backend.ingress_enforced);
    assert_eq!(allowed(&backend), vec![(None, 0, None)]);
    assert_eq!(denied(&backend), vec![(Some(id(1, 257)), 0, None)]);

    // Beside a policy that does close ingress, nothing is opened.
    let closing_allow = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingress: [{fromEndpoints: [{matchLabels: {app: backend}}]}]
"#,
    );
    let c = run(&[
        PolicySource::namespaced("shop", "deny", &adding),
        PolicySource::namespaced("shop", "own", &closing_allow),
    ]);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(allowed(&backend), vec![(Some(id(1, 256)), 0, None)]);
    assert_eq!(denied(&backend), vec![(Some(id(1, 257)), 0, None)]);
}

#[test]
fn a_deny_rule_that_does_not_compile_refuses_its_policy_and_stays_closed() {
    let bad = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
egressDeny: [{toEntities: [nowhere]}]
"#,
    );
    let c = run(&[PolicySource::namespaced("shop", "deny", &bad)]);
    assert!(
        c.problems[0].message.contains("egressDeny[0]"),
        "the status names the rule: {:?}",
        c.problems
    );
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert!(backend.egress_enforced && backend.allow.is_empty());
}

#[test]
fn cilium_label_sources_and_cluster_key_select_as_written_for_cilium() {
    let c = run(&[policy(
        "shop",
        "backend",
        sel(&[("k8s:app", "backend")]),
        vec![IngressRule {
            from_endpoints: vec![sel(&[
                ("k8s:app", "frontend"),
                ("io.cilium.k8s.policy.cluster", "c2"),
                ("k8s:io.kubernetes.pod.namespace", "shop"),
            ])],
            ..IngressRule::default()
        }],
    )]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(allowed(&backend), vec![(Some(id(2, 256)), 0, None)]);
}

#[test]
fn the_cluster_entity_is_one_entry_whatever_the_clusters_size() {
    let spec = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingress: [{fromEntities: [cluster], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
egressDeny: [{toEntities: [cluster], toPorts: [{ports: [{port: "25", protocol: TCP}]}]}]
"#,
    );
    let c = run(&[PolicySource::namespaced("shop", "cluster", &spec)]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        allowed(&backend),
        vec![(Some(Identity::CLUSTER_PEERS), 8080, Some(Protocol::Tcp))],
        "not one entry per identity of the cluster"
    );
    assert_eq!(
        denied(&backend),
        vec![(Some(Identity::CLUSTER_PEERS), 25, Some(Protocol::Tcp))]
    );
}

#[test]
fn icmp_rules_allow_their_types_by_number_or_name_and_nothing_else() {
    let ping = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    icmps: [{fields: [{type: EchoRequest}, {type: "0"}, {type: 13, family: IPv4}, {type: 128, family: IPv6}]}]
"#,
    );
    let c = run(&[PolicySource::namespaced("shop", "ping", &ping)]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    let base = ICMP_TYPE_PORT_BASE;
    assert_eq!(
        allowed(&backend),
        vec![
            (Some(id(1, 257)), base, Some(Protocol::Icmp)),
            (Some(id(1, 257)), base + 8, Some(Protocol::Icmp)),
            (Some(id(1, 257)), base + 13, Some(Protocol::Icmp)),
        ],
        "the IPv4 types only, and no port opened beside them"
    );
    for (bad, says) in [
        ("{type: Pong}", "unknown ICMP type \"Pong\""),
        ("{type: 300}", "ICMP type 300 is not 0-255"),
        ("{type: 8, family: IPX}", "neither IPv4 nor IPv6"),
    ] {
        let bad_spec = spec(&format!(
            "endpointSelector: {{matchLabels: {{app: backend}}}}\negress: [{{icmps: [{{fields: [{bad}]}}]}}]\n"
        ));
        let c = run(&[PolicySource::namespaced("shop", "bad", &bad_spec)]);
        let m = &c.problems.first().expect("refused").message;
        assert!(
            m.contains("egress[0].icmps[0].fields[0]") && m.contains(says),
            "{m}"
        );
    }
}

#[test]
fn a_cluster_wide_policy_selects_pods_or_nodes_never_both_or_neither() {
    use crate::policy::crd::MeshClusterwideNetworkPolicySpec;
    let cw = |yaml: &str| {
        let spec: MeshClusterwideNetworkPolicySpec = serde_yaml::from_str(yaml).expect("spec");
        PolicySource::clusterwide("p", &spec)
    };
    let host =
        cw("nodeSelector: {matchLabels: {role: edge}}\ningress: [{fromEntities: [cluster]}]\n");
    let c = run(std::slice::from_ref(&host));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
    assert_eq!(
        backend,
        EndpointPolicy::default(),
        "a host policy selects no pod"
    );
    let edge = LabelSet::new([("role".to_string(), "edge".to_string())].into()).expect("labels");
    let fw = c.host_policy(&edge).expect("the node is selected");
    assert!(fw.ingress_enforced && !fw.egress_enforced);
    // The node has no cluster id to match a CLUSTER_PEERS entry against:
    // the cluster's identities are listed.
    let peers: Vec<_> = allowed(&fw).into_iter().map(|(id, _, _)| id).collect();
    assert!(
        peers.contains(&Some(id(1, 256)))
            && peers.contains(&Some(ReservedIdentity::RemoteNode.identity())),
        "{peers:?}"
    );
    assert!(
        !peers.contains(&Some(id(2, 256))),
        "not another cluster's: {peers:?}"
    );
    assert!(!peers.contains(&Some(Identity::CLUSTER_PEERS)), "{peers:?}");
    let worker =
        LabelSet::new([("role".to_string(), "worker".to_string())].into()).expect("labels");
    assert_eq!(c.host_policy(&worker), None);

    for (yaml, says) in [
        (
            "endpointSelector: {}\nnodeSelector: {}\ningress: [{}]\n",
            "both endpointSelector and nodeSelector",
        ),
        ("ingress: [{}]\n", "neither endpointSelector"),
    ] {
        let c = run(&[cw(yaml)]);
        let m = &c.problems.first().expect("refused").message;
        assert!(m.contains(says), "{m}");
        // Neither selector: nothing is known to be selected, nothing closes.
        if says.starts_with("neither") {
            let backend = c.endpoint_policy(&labels("c1", "shop", "backend"));
            assert!(!backend.ingress_enforced);
        } else {
            // Both: what each names is closed while refused.
            assert!(
                c.endpoint_policy(&labels("c1", "shop", "backend"))
                    .ingress_enforced
            );
            assert!(c.host_policy(&edge).is_some_and(|p| p.allow.is_empty()));
        }
    }
}

#[test]
fn kube_apiserver_and_remote_node_follow_where_the_api_server_runs() {
    let spec = spec(
        r#"
endpointSelector: {matchLabels: {app: backend}}
egress: [{toEntities: [kube-apiserver]}, {toEntities: [remote-node], toPorts: [{ports: [{port: "10250", protocol: TCP}]}]}]
"#,
    );
    let ids = identities();
    let eval = |on_this: bool, on_remote: bool| {
        let c = compile(
            &[PolicySource::namespaced("shop", "api", &spec)],
            &CompileInputs {
                cluster: &cluster("c1"),
                identities: &ids,
                namespaces: &NO_NAMESPACES,
                allow_localhost: false,
                named_ports: &Default::default(),
                services: &Default::default(),
                apiserver_on_this_node: on_this,
                apiserver_on_remote_node: on_remote,
            },
        );
        allowed(&c.endpoint_policy(&labels("c1", "shop", "backend")))
    };
    let kube = Some(ReservedIdentity::KubeApiserver.identity());
    let host = Some(ReservedIdentity::Host.identity());
    let remote = Some(ReservedIdentity::RemoteNode.identity());
    assert_eq!(
        eval(false, false),
        vec![(remote, 10250, Some(Protocol::Tcp)), (kube, 0, None)],
        "off the nodes: exactly its own identity"
    );
    assert!(
        eval(true, false).contains(&(host, 0, None)),
        "on this node: host"
    );
    assert!(
        eval(false, true).contains(&(kube, 10250, Some(Protocol::Tcp))),
        "on a remote node: remote-node covers it"
    );
}

#[test]
fn to_services_means_the_pods_a_service_selects_or_its_endpoints_addresses() {
    let services: Services = [
        (
            ("shop".to_string(), "backend".to_string()),
            ServiceInfo {
                labels: [("tier".to_string(), "data".to_string())].into(),
                selector: Some([("app".to_string(), "backend".to_string())].into()),
                addresses: Vec::new(),
            },
        ),
        (
            ("shop".to_string(), "partner".to_string()),
            ServiceInfo {
                labels: Default::default(),
                selector: None,
                addresses: vec!["198.51.100.7".parse().expect("ip")],
            },
        ),
    ]
    .into();
    let policy = spec(
        r#"
endpointSelector: {matchLabels: {app: frontend}}
egress:
  - toServices: [{k8sService: {serviceName: partner}}, {k8sServiceSelector: {selector: {matchLabels: {tier: data}}}}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toServices: [{k8sService: {serviceName: gone}}]
    toPorts: [{ports: [{port: "25", protocol: TCP}]}]
"#,
    );
    let ids = identities();
    let c = compile(
        &[PolicySource::namespaced("shop", "svc", &policy)],
        &CompileInputs {
            cluster: &cluster("c1"),
            identities: &ids,
            namespaces: &NO_NAMESPACES,
            allow_localhost: false,
            named_ports: &Default::default(),
            services: &services,
            apiserver_on_this_node: false,
            apiserver_on_remote_node: false,
        },
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let partner = c.cidr_identities[&"198.51.100.7/32".parse().expect("net")];
    let frontend = c.endpoint_policy(&labels("c1", "shop", "frontend"));
    assert_eq!(
        allowed(&frontend),
        vec![
            (Some(id(1, 256)), 443, Some(Protocol::Tcp)),
            (Some(partner), 443, Some(Protocol::Tcp)),
        ],
        "the selected pods and the endpoint's address, on 443; a Service that does not exist opens nothing (not port 25 to anyone)"
    );
}
