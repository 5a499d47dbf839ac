use std::collections::BTreeMap;

use mesh_api::{ClusterId, Identity, LabelSet, ReservedIdentity};

use super::*;
use crate::datapath::EndpointPolicy;
use crate::datapath::{Direction, MemoryDatapath};
use crate::endpoint::EndpointRegistration;
use crate::policy::crd::{IngressRule, MeshNetworkPolicySpec, PortProtocol, PortRule, Selector};
use mesh_api::{EndpointRecord, NodeRecord};

fn id(cluster: u8, n: u16) -> Identity {
    Identity::new(ClusterId::new(i64::from(cluster)).expect("id"), n).expect("identity")
}

fn labels(cluster: &str, app: &str) -> LabelSet {
    let pod: BTreeMap<String, String> = [("app".to_string(), app.to_string())].into();
    LabelSet::for_pod(&cluster.parse().expect("name"), "shop", &pod).expect("labels")
}

fn node(cluster: &str, name: &str, ip: &str) -> NodeRecord {
    NodeRecord {
        cluster: cluster.parse().expect("cluster"),
        name: name.parse().expect("node"),
        ips: vec![ip.parse().expect("ip")],
        pod_cidrs: Vec::new(),
        wireguard_key: None,
    }
}

fn endpoint(cluster: &str, node: &str, pod: &str, ip: &str, identity: Identity) -> EndpointRecord {
    EndpointRecord {
        cluster: cluster.parse().expect("cluster"),
        namespace: "shop".into(),
        pod: pod.into(),
        ips: vec![ip.parse().expect("ip")],
        identity,
        node: node.parse().expect("node"),
        ports: Vec::new(),
    }
}

/// c1: n1 (this node, backend pod 10.1.1.2), n2 (frontend 10.1.2.2);
/// c2: n1 (frontend 10.2.1.2, other 10.2.1.3).
fn view() -> MeshView {
    MeshView {
        identities: [
            (id(1, 256), labels("c1", "backend")),
            (id(1, 257), labels("c1", "frontend")),
            (id(2, 256), labels("c2", "frontend")),
            (id(2, 257), labels("c2", "other")),
        ]
        .into(),
        endpoints: vec![
            endpoint("c1", "n1", "backend", "10.1.1.2", id(1, 256)),
            endpoint("c1", "n2", "frontend", "10.1.2.2", id(1, 257)),
            endpoint("c2", "n1", "frontend", "10.2.1.2", id(2, 256)),
            endpoint("c2", "n1", "other", "10.2.1.3", id(2, 257)),
        ],
        nodes: vec![
            node("c1", "n1", "192.168.77.11"),
            node("c1", "n2", "192.168.77.12"),
            node("c2", "n1", "192.168.77.21"),
        ],
    }
}

fn local(encryption: bool) -> LocalView {
    LocalView {
        cluster: "c1".parse().expect("cluster"),
        node: "n1".parse().expect("node"),
        encryption,
        allow_localhost: false,
        policy_audit: false,
    }
}

fn registration(ip: &str) -> EndpointRegistration {
    EndpointRegistration {
        container_id: "backend".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/backend".into(),
        host_ifname: "mwbackend".into(),
        host_ifindex: 42,
        pod_mac: None,
        ips: vec![ip.parse().expect("ip")],
        pod_namespace: Some("shop".into()),
        pod_name: Some("backend".into()),
    }
}

/// An endpoint manager on the in-memory datapath, for node n1 of c1.
fn manager(dir: &std::path::Path) -> EndpointManager<MemoryDatapath> {
    EndpointManager::open(
        dir,
        Some("10.1.1.0/24".parse().expect("cidr")),
        MemoryDatapath::default(),
    )
    .expect("open")
    .0
}

#[test]
fn ipcache_holds_every_clusters_endpoints_and_nodes_with_where_they_live() {
    let entries = ipcache_entries(&view(), &local(true), &[]);
    let by: BTreeMap<String, &IpcacheEntry> =
        entries.iter().map(|e| (e.cidr.to_string(), e)).collect();
    let remote = by["10.2.1.2/32"];
    assert_eq!(remote.identity, id(2, 256));
    assert_eq!(remote.node_ip, Some("192.168.77.21".parse().expect("ip")));
    assert!(remote.encrypt);
    let same_cluster_other_node = by["10.1.2.2/32"];
    assert_eq!(
        same_cluster_other_node.node_ip,
        Some("192.168.77.12".parse().expect("ip"))
    );
    assert!(same_cluster_other_node.encrypt);
    let here = by["10.1.1.2/32"];
    assert_eq!((here.node_ip, here.encrypt), (None, false));
    assert_eq!(
        by["192.168.77.11/32"].identity,
        ReservedIdentity::Host.identity()
    );
    assert_eq!(
        by["192.168.77.21/32"].identity,
        ReservedIdentity::RemoteNode.identity()
    );
    assert_eq!(entries.len(), 7);
    // Without encryption nothing is flagged.
    assert!(
        ipcache_entries(&view(), &local(false), &[])
            .iter()
            .all(|e| !e.encrypt)
    );
}

#[test]
fn a_pass_resolves_local_identities_and_compiles_cross_cluster_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = manager(dir.path());
    let ep = mgr.register(registration("10.1.1.2")).expect("register");
    assert_eq!(ep.identity, ReservedIdentity::Init.identity());
    let policy = PolicySource::namespaced(
        "shop",
        "backend",
        &MeshNetworkPolicySpec {
            endpoint_selector: Selector {
                match_labels: [("app".to_string(), "backend".to_string())].into(),
                match_expressions: Vec::new(),
            },
            ingress: vec![IngressRule {
                from_endpoints: vec![Selector {
                    match_labels: [
                        ("app".to_string(), "frontend".to_string()),
                        ("meshwork.io/cluster".to_string(), "c2".to_string()),
                    ]
                    .into(),
                    match_expressions: Vec::new(),
                }],
                to_ports: vec![PortRule {
                    ports: vec![PortProtocol {
                        port: "8080".into(),
                        protocol: Some("TCP".into()),
                        ..PortProtocol::default()
                    }],
                    ..PortRule::default()
                }],
                ..IngressRule::default()
            }],
            egress: Vec::new(),
            ..MeshNetworkPolicySpec::default()
        },
    );
    // Policies not known yet: identities and ipcache move, policy stays.
    let (report, compiled) = sync(
        &mut mgr,
        &view(),
        &local(false),
        None,
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    assert!(compiled.is_none());
    assert_eq!(mgr.list()[0].identity, id(1, 256));
    let dp = mgr.datapath();
    assert_eq!(dp.endpoints[&ep.id].identity, id(1, 256));
    // The local source (now with the resolved identity) and the mesh agree.
    assert_eq!(
        dp.ipcache[&"10.1.1.2/32".parse().expect("cidr")].identity,
        id(1, 256)
    );
    assert_eq!(
        dp.ipcache[&"10.2.1.3/32".parse().expect("cidr")].identity,
        id(2, 257)
    );
    assert_eq!(dp.policies[&ep.id], EndpointPolicy::default());

    let policies = vec![policy];
    let (report, compiled) = sync(
        &mut mgr,
        &view(),
        &local(false),
        Some(&policies),
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    let compiled = compiled.expect("compiled");
    let p = &mgr.datapath().policies[&ep.id];
    assert!(p.ingress_enforced);
    let allow: Vec<_> = p.allow.iter().collect();
    assert_eq!(allow.len(), 1);
    assert_eq!(
        (allow[0].direction, allow[0].identity, allow[0].port),
        (Direction::Ingress, Some(id(2, 256)), 8080)
    );
    assert_eq!(compiled.rules[&allow[0].rule].policy, "shop/backend");

    // A new identity in c2 matching the selector reaches the map without a
    // policy change.
    let mut v = view();
    v.identities.insert(id(2, 300), labels("c2", "frontend"));
    let (report, _) = sync(
        &mut mgr,
        &v,
        &local(false),
        Some(&policies),
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    let peers: Vec<_> = mgr.datapath().policies[&ep.id]
        .allow
        .iter()
        .map(|a| a.identity)
        .collect();
    assert_eq!(peers, vec![Some(id(2, 256)), Some(id(2, 300))]);
    // Policies removed: back to allow-all.
    let (report, _) = sync(
        &mut mgr,
        &view(),
        &local(false),
        Some(&[]),
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(mgr.datapath().policies[&ep.id], EndpointPolicy::default());
}

#[test]
fn policy_cidrs_reach_the_ipcache_with_node_local_identities_and_leave_with_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = manager(dir.path());
    mgr.register(registration("10.1.1.2")).expect("register");
    let policy = PolicySource::namespaced(
        "shop",
        "egress-to-partner",
        &MeshNetworkPolicySpec {
            endpoint_selector: Selector::default(),
            ingress: vec![IngressRule {
                from_cidr: vec!["198.51.100.0/24".into()],
                ..IngressRule::default()
            }],
            egress: Vec::new(),
            ..MeshNetworkPolicySpec::default()
        },
    );
    let (report, compiled) = sync(
        &mut mgr,
        &view(),
        &local(false),
        Some(&[policy]),
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    let id = compiled.expect("compiled").cidr_identities[&"198.51.100.0/24".parse().expect("net")];
    let entry = &mgr.datapath().ipcache[&"198.51.100.0/24".parse().expect("cidr")];
    assert_eq!(
        (entry.identity, entry.node_ip, entry.encrypt),
        (id, None, false)
    );
    assert!(id.is_node_local());
    let (report, _) = sync(
        &mut mgr,
        &view(),
        &local(false),
        Some(&[]),
        &PolicyContext::default(),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    assert!(
        !mgr.datapath()
            .ipcache
            .contains_key(&"198.51.100.0/24".parse().expect("cidr")),
        "the CIDR identity goes with the last policy naming it"
    );
}

/// A pod registered (CNI ADD) before the policy controller has computed its
/// policy is held from its first packet by whatever could select a pod of
/// its namespace: default-deny there, open elsewhere. This also holds for
/// an agent whose mesh feed has not synced since it started (no
/// identities): the held-by set is compiled from the policies alone.
#[test]
fn a_new_endpoint_is_enforced_from_its_registration_where_a_policy_could_select_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = manager(dir.path());
    let policy = PolicySource::namespaced(
        "shop",
        "backend",
        &MeshNetworkPolicySpec {
            endpoint_selector: Selector {
                match_labels: [("app".to_string(), "backend".to_string())].into(),
                match_expressions: Vec::new(),
            },
            ingress: vec![IngressRule::default()],
            egress: Vec::new(),
            ..MeshNetworkPolicySpec::default()
        },
    );
    // Before any policy is known, a new endpoint is open (nothing selects)...
    let early = mgr.register(registration("10.1.1.2")).expect("register");
    assert_eq!(
        mgr.datapath().policies[&early.id],
        EndpointPolicy::default()
    );
    // The policies alone, without identities (mesh feed not synced).
    mgr.hold_new_endpoints_by(crate::policy::compile::compile(
        &[policy],
        &CompileInputs {
            cluster: &"c1".parse().expect("cluster"),
            identities: &Default::default(),
            namespaces: &NO_NAMESPACES,
            allow_localhost: false,
            named_ports: &Default::default(),
            services: &Default::default(),
            apiserver_on_this_node: false,
            apiserver_on_remote_node: false,
        },
    ));
    let mut in_shop = registration("10.1.1.3");
    in_shop.container_id = "new-shop-pod".into();
    in_shop.host_ifname = "mwshop".into();
    in_shop.host_ifindex = 43;
    let held = mgr.register(in_shop).expect("register");
    let p = &mgr.datapath().policies[&held.id];
    assert!(p.ingress_enforced, "held at default-deny: {p:?}");
    assert!(
        p.allow.is_empty(),
        "nothing allowed before its policy: {p:?}"
    );
    let mut elsewhere = registration("10.1.1.4");
    elsewhere.container_id = "other-pod".into();
    elsewhere.host_ifname = "mwother".into();
    elsewhere.host_ifindex = 44;
    elsewhere.pod_namespace = Some("other".into());
    let free = mgr.register(elsewhere).expect("register");
    assert_eq!(mgr.datapath().policies[&free.id], EndpointPolicy::default());
    // ...and held as soon as the policies are (it had no policy of its own
    // yet: a CNI ADD that came before the policies were listed).
    assert!(mgr.datapath().policies[&early.id].ingress_enforced);
}

/// No namespace labels known.
static NO_NAMESPACES: crate::policy::compile::NamespaceLabels = std::collections::BTreeMap::new();

#[test]
fn a_host_policy_selecting_this_node_becomes_its_firewall_and_goes_with_it() {
    use crate::policy::crd::MeshClusterwideNetworkPolicySpec;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = manager(dir.path());
    let spec: MeshClusterwideNetworkPolicySpec = serde_yaml::from_str(
        r#"
nodeSelector: {matchLabels: {role: edge}}
ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"#,
    )
    .expect("spec");
    let policy = PolicySource::clusterwide("ssh-from-frontends", &spec);
    let context = |role: &str| PolicyContext {
        node_labels: Some([("role".to_string(), role.to_string())].into()),
        ..PolicyContext::default()
    };
    let mut audited = local(false);
    audited.policy_audit = true;
    let (report, _) = sync(
        &mut mgr,
        &view(),
        &audited,
        Some(std::slice::from_ref(&policy)),
        &context("edge"),
        &mut Default::default(),
    )
    .expect("sync");
    assert!(report.is_ok(), "{report:?}");
    let host = mgr.datapath().host.clone().expect("the node is selected");
    assert!(host.audit && host.policy.ingress_enforced && !host.policy.egress_enforced);
    let allowed: Vec<_> = host
        .policy
        .allow
        .iter()
        .map(|a| (a.identity, a.port))
        .collect();
    assert_eq!(
        allowed,
        vec![(Some(id(1, 257)), 22)],
        "this cluster's frontends on 22"
    );
    // No pod is selected by a host policy.
    assert!(
        mgr.datapath()
            .policies
            .values()
            .all(|p| !p.ingress_enforced)
    );
    // Another node's labels: off.
    let _ = sync(
        &mut mgr,
        &view(),
        &audited,
        Some(std::slice::from_ref(&policy)),
        &context("worker"),
        &mut Default::default(),
    )
    .expect("sync");
    assert_eq!(mgr.datapath().host, None);
}

#[test]
fn the_api_servers_addresses_get_the_kube_apiserver_identity_unless_this_node_or_a_pod_has_them() {
    let ip = |s: &str| -> Ipv4Addr { s.parse().expect("ip") };
    // Off the nodes, on c1's other node, on this node, on a pod, and on a
    // node of another cluster (not ours: that one stays remote-node).
    let apiserver = [
        ip("192.168.77.20"),
        ip("192.168.77.12"),
        ip("192.168.77.11"),
        ip("10.1.2.2"),
        ip("192.168.77.21"),
    ];
    let entries = ipcache_entries(&view(), &local(false), &apiserver);
    let by: BTreeMap<String, Identity> = entries
        .iter()
        .map(|e| (e.cidr.to_string(), e.identity))
        .collect();
    let kube = ReservedIdentity::KubeApiserver.identity();
    assert_eq!(by["192.168.77.20/32"], kube);
    assert_eq!(
        by["192.168.77.12/32"], kube,
        "a remote node of this cluster"
    );
    assert_eq!(by["192.168.77.11/32"], ReservedIdentity::Host.identity());
    assert_eq!(by["10.1.2.2/32"], id(1, 257), "a pod keeps its own");
    assert_eq!(
        by["192.168.77.21/32"],
        ReservedIdentity::RemoteNode.identity()
    );
}
