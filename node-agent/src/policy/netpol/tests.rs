use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use mesh_api::{ClusterId, Identity, LabelSet, Protocol, ReservedIdentity};

use super::*;
use crate::datapath::EndpointPolicy;
use crate::policy::compile::{CompileInputs, CompiledPolicies, NamespaceLabels, compile};

fn id(cluster: u8, n: u16) -> Identity {
    Identity::new(ClusterId::new(i64::from(cluster)).expect("id"), n).expect("identity")
}

fn pod(cluster: &str, ns: &str, name: &str) -> LabelSet {
    let labels: BTreeMap<String, String> = [("pod".to_string(), name.to_string())].into();
    LabelSet::for_pod(&cluster.parse().expect("name"), ns, &labels).expect("labels")
}

/// The upstream suite's model: namespaces x, y, z with pods a, b, c each
/// (identity 256 + 3 × namespace + pod), plus x/a of cluster c2.
fn identities() -> BTreeMap<Identity, LabelSet> {
    let mut out = BTreeMap::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        for (j, p) in ["a", "b", "c"].iter().enumerate() {
            out.insert(id(1, 256 + 3 * i as u16 + j as u16), pod("c1", ns, p));
        }
    }
    out.insert(id(2, 256), pod("c2", "x", "a"));
    out
}

fn who(n: u16) -> Identity {
    id(1, n)
}
const XA: u16 = 256;
const XB: u16 = 257;
const YA: u16 = 259;
const YB: u16 = 260;
const ZA: u16 = 262;

fn namespaces() -> NamespaceLabels {
    ["x", "y", "z"]
        .iter()
        .map(|ns| {
            (
                ns.to_string(),
                [
                    ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
                    ("ns".to_string(), ns.to_string()),
                ]
                .into(),
            )
        })
        .collect()
}

fn netpol(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).expect("a NetworkPolicy")
}

fn compiled(yaml: &[&str], allow_localhost: bool) -> CompiledPolicies {
    compiled_with_ports(yaml, allow_localhost, &Default::default())
}

fn compiled_with_ports(
    yaml: &[&str],
    allow_localhost: bool,
    named_ports: &crate::policy::compile::NamedPorts,
) -> CompiledPolicies {
    let sources: Vec<_> = yaml.iter().map(|y| source(&netpol(y))).collect();
    compile(
        &sources,
        &CompileInputs {
            cluster: &"c1".parse().expect("cluster"),
            identities: &identities(),
            namespaces: &namespaces(),
            allow_localhost,
            named_ports,
            services: &Default::default(),
            apiserver_on_this_node: false,
            apiserver_on_remote_node: false,
        },
    )
}

/// Whether the compiled policy of `to` admits `from` on `port`/`proto`, as
/// the datapath's lookup order decides it (peer or any, port or any).
fn admits(p: &EndpointPolicy, from: Identity, port: u16, proto: Protocol) -> bool {
    if !p.ingress_enforced {
        return true;
    }
    p.allow.iter().any(|a| {
        a.direction == crate::datapath::Direction::Ingress
            && a.identity.is_none_or(|i| i == from)
            && (a.port == 0 || a.port == port)
            && a.protocol.is_none_or(|x| x == proto)
    })
}

#[test]
fn a_deny_all_ingress_policy_selects_by_pod_labels_in_its_namespace_only() {
    let c = compiled(
        &[r#"
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#],
        false,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(xa.ingress_enforced && !xa.egress_enforced);
    assert!(xa.allow.is_empty());
    assert_eq!(
        c.endpoint_policy(&pod("c1", "y", "a")),
        EndpointPolicy::default()
    );
}

#[test]
fn an_empty_rule_admits_every_peer_and_a_missing_type_is_implicit() {
    // No policyTypes: Ingress only (no egress rules), and `ingress: [{}]`
    // admits everybody (unlike Cilium's `{}`, which admits nobody).
    let c = compiled(
        &[r#"
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, ingress: [{}]}
"#],
        false,
    );
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(xa.ingress_enforced && !xa.egress_enforced);
    assert!(admits(&xa, who(ZA), 81, Protocol::Udp));
    assert!(admits(
        &xa,
        ReservedIdentity::World.identity(),
        80,
        Protocol::Tcp
    ));
}

#[test]
fn pod_and_namespace_selectors_combine_as_kubernetes_means() {
    let c = compiled(
        &[r#"
metadata: {name: peers, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
    - from:
        - podSelector: {matchLabels: {pod: b}}
        - namespaceSelector: {matchLabels: {ns: y}}
        - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [z]}]}
          podSelector: {matchLabels: {pod: a}}
"#],
        false,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    // podSelector alone: x/b, not y/b; namespaceSelector alone: all of y;
    // both: z/a only.
    for (from, want) in [
        (XB, true),
        (XA, false),
        (YA, true),
        (YB, true),
        (ZA, true),
        (ZA + 1, false),
    ] {
        assert_eq!(
            admits(&xa, who(from), 80, Protocol::Tcp),
            want,
            "from {from}"
        );
    }
    // The other cluster's x/a is never a NetworkPolicy peer.
    assert!(!admits(&xa, id(2, 256), 80, Protocol::Tcp));
    assert!(!admits(
        &xa,
        ReservedIdentity::World.identity(),
        80,
        Protocol::Tcp
    ));
}

#[test]
fn a_pod_label_cannot_pass_for_a_namespace_label() {
    let mut ids = identities();
    let forged: BTreeMap<String, String> = [
        ("pod".to_string(), "evil".to_string()),
        (format!("{NAMESPACE_LABELS_PREFIX}team"), "blue".to_string()),
    ]
    .into();
    let evil = id(1, 300);
    ids.insert(
        evil,
        LabelSet::for_pod(&"c1".parse().unwrap(), "z", &forged).unwrap(),
    );
    let src = source(&netpol(
        r#"
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]
"#,
    ));
    let mut namespaces = namespaces();
    namespaces
        .get_mut("y")
        .unwrap()
        .insert("team".into(), "blue".into());
    let c = compile(
        &[src],
        &CompileInputs {
            cluster: &"c1".parse().unwrap(),
            identities: &ids,
            namespaces: &namespaces,
            allow_localhost: false,
            named_ports: &Default::default(),
            services: &Default::default(),
            apiserver_on_this_node: false,
            apiserver_on_remote_node: false,
        },
    );
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(admits(&xa, who(YA), 80, Protocol::Tcp));
    assert!(!admits(&xa, evil, 80, Protocol::Tcp));
}

#[test]
fn ports_default_to_tcp_and_a_protocol_without_a_port_means_all_its_ports() {
    let c = compiled(
        &[r#"
metadata: {name: ports, namespace: x}
spec:
  podSelector: {}
  ingress:
    - ports: [{port: 80}, {protocol: UDP}, {port: 9000, endPort: 9002}]
"#],
        false,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(admits(&xa, who(ZA), 80, Protocol::Tcp));
    assert!(!admits(&xa, who(ZA), 81, Protocol::Tcp));
    assert!(admits(&xa, who(ZA), 81, Protocol::Udp), "every UDP port");
    assert!(admits(&xa, who(ZA), 9002, Protocol::Tcp));
    assert!(!admits(&xa, who(ZA), 9003, Protocol::Tcp));
    // 80/TCP, all of UDP, 9000..=9002/TCP.
    assert_eq!(xa.allow.len(), 5, "{:?}", xa.allow);
}

/// x/a and x/b declare serve-80-tcp as 80/TCP, y/a declares it as 8080;
/// only x/a declares serve-81-udp.
fn declared() -> crate::policy::compile::NamedPorts {
    let p = |n: &str, port: u16, proto: Protocol| (n.to_string(), port, proto);
    [
        (
            who(XA),
            [
                p("serve-80-tcp", 80, Protocol::Tcp),
                p("serve-81-udp", 81, Protocol::Udp),
            ]
            .into(),
        ),
        (who(XB), [p("serve-80-tcp", 80, Protocol::Tcp)].into()),
        (who(YA), [p("serve-80-tcp", 8080, Protocol::Tcp)].into()),
    ]
    .into()
}

#[test]
fn an_ingress_named_port_resolves_on_the_protected_pod_and_only_there() {
    let c = compiled_with_ports(
        &[r#"
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: serve-80-tcp}, {port: serve-81-udp, protocol: UDP}]}]
"#],
        false,
        &declared(),
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(admits(&xa, who(ZA), 80, Protocol::Tcp));
    assert!(admits(&xa, who(ZA), 81, Protocol::Udp));
    assert!(!admits(&xa, who(ZA), 81, Protocol::Tcp));
    assert!(!admits(&xa, who(ZA), 8080, Protocol::Tcp));
    // x/c declares no such name: enforced, nothing admitted (never every
    // port because the name resolved to nothing).
    let xc = c.endpoint_policy(&pod("c1", "x", "c"));
    assert!(xc.ingress_enforced && xc.allow.is_empty(), "{xc:?}");
}

#[test]
fn an_egress_named_port_resolves_on_each_peer() {
    let c = compiled_with_ports(
        &[r#"
metadata: {name: named, namespace: x}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress: [{ports: [{port: serve-80-tcp}]}]
"#],
        false,
        &declared(),
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let xc = c.endpoint_policy(&pod("c1", "x", "c"));
    let egress: BTreeSet<_> = xc.allow.iter().map(|a| (a.identity, a.port)).collect();
    // Any peer: each pod on the port it declares under that name, never
    // y/a's 8080 towards x/a (a pod's declaration opens only itself).
    assert_eq!(
        egress,
        [
            (Some(who(XA)), 80),
            (Some(who(XB)), 80),
            (Some(who(YA)), 8080)
        ]
        .into(),
        "{:?}",
        xc.allow
    );
}

#[test]
fn a_port_that_is_neither_a_number_nor_a_name_refuses_the_policy_closed() {
    let c = compiled(
        &[r#"
metadata: {name: bad, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: "Serve_80"}]}]
"#],
        false,
    );
    assert_eq!(c.problems.len(), 1);
    assert!(
        c.problems[0].policy == "NetworkPolicy x/bad" && c.problems[0].message.contains("Serve_80"),
        "{:?}",
        c.problems
    );
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(xa.ingress_enforced && xa.allow.is_empty());
}

#[test]
fn an_ip_block_with_except_admits_the_range_without_its_holes() {
    let c = compiled(
        &[r#"
metadata: {name: cidr, namespace: x}
spec:
  podSelector: {}
  ingress:
    - from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}, {ipBlock: {cidr: "2001:db8::/64"}}]
"#],
        false,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let range = c.cidr_identities[&"192.0.2.0/24".parse().unwrap()];
    let hole = c.cidr_identities[&"192.0.2.128/25".parse().unwrap()];
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(admits(&xa, range, 80, Protocol::Tcp));
    assert!(!admits(&xa, hole, 80, Protocol::Tcp));
    assert!(!admits(
        &xa,
        ReservedIdentity::World.identity(),
        80,
        Protocol::Tcp
    ));
    assert!(!admits(&xa, who(ZA), 80, Protocol::Tcp));
}

#[test]
fn an_egress_only_policy_leaves_ingress_open() {
    let c = compiled(
        &[r#"
metadata: {name: egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  ingress: [{}]
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]
"#],
        false,
    );
    let xa = c.endpoint_policy(&pod("c1", "x", "a"));
    assert!(
        !xa.ingress_enforced,
        "ingress rules of an unlisted type are ignored"
    );
    assert!(xa.egress_enforced);
    assert!(
        xa.allow
            .iter()
            .all(|a| a.identity == Some(who(XB)) && a.port == 80)
    );
}

#[test]
fn with_allow_localhost_the_node_reaches_every_enforced_endpoint() {
    let yaml = r#"
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;
    let host = ReservedIdentity::Host.identity();
    let on = compiled(&[yaml], true).endpoint_policy(&pod("c1", "x", "a"));
    assert!(admits(&on, host, 8080, Protocol::Tcp));
    assert!(!admits(&on, who(XB), 8080, Protocol::Tcp));
    assert!(
        on.allow
            .iter()
            .all(|a| a.direction == crate::datapath::Direction::Ingress),
        "egress is not opened to the host"
    );
    let off = compiled(&[yaml], false).endpoint_policy(&pod("c1", "x", "a"));
    assert!(!admits(&off, host, 8080, Protocol::Tcp));
    // An endpoint no policy selects gets nothing added.
    assert_eq!(
        compiled(&[yaml], true).endpoint_policy(&pod("c1", "y", "a")),
        EndpointPolicy::default()
    );
}
