use super::*;
use mesh_agent_api::datapath::{BackendAddr, Frontend, FrontendKind};

fn svc(ns: &str, name: &str, ip: &str, annotations: &[(&str, &str)]) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name,
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn names() -> ClusterNames {
    ClusterNames {
        by_id: [(1, "c1".to_string()), (2, "c2".to_string())].into(),
        own: "c1".into(),
        own_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
    }
}

fn ipcache(cidr: &str, identity: u32) -> IpcacheEntry {
    IpcacheEntry {
        cidr: cidr.parse().unwrap(),
        identity: mesh_api::Identity::from_u32(identity).unwrap(),
        node_ip: None,
        encrypt: false,
    }
}

#[test]
fn global_services_list_backends_by_cluster_and_skip_the_others() {
    let services = vec![
        svc(
            "shop",
            "web",
            "10.96.0.10",
            &[
                ("service.meshwork.io/global", "true"),
                ("service.meshwork.io/affinity", "local"),
            ],
        ),
        svc("shop", "local-only", "10.96.0.11", &[]),
        svc(
            "shop",
            "broken",
            "10.96.0.12",
            &[
                ("service.meshwork.io/global", "true"),
                ("service.meshwork.io/affinity", "sideways"),
            ],
        ),
    ];
    let entries = vec![ServiceEntry {
        frontend: Frontend {
            ip: "10.96.0.10".parse().unwrap(),
            port: 80,
            protocol: mesh_api::Protocol::Tcp,
            kind: FrontendKind::ClusterIp,
        },
        backends: vec![
            BackendAddr {
                ip: "10.1.2.3".parse().unwrap(),
                port: 8080,
            },
            BackendAddr {
                ip: "10.2.1.4".parse().unwrap(),
                port: 8080,
            },
            BackendAddr {
                ip: "10.2.1.5".parse().unwrap(),
                port: 8080,
            },
        ],
        affinity_timeout: None,
    }];
    // 10.1.2.3 has no ipcache entry and no node: named by this cluster's pod CIDR.
    // 10.2.1.4 has no ipcache entry either: named by the node holding it.
    let dump = DatapathDump {
        node: "c1-n1".into(),
        services: entries,
        ipcache: vec![ipcache("10.2.1.5/32", 0x2_0101)],
        nodes: vec![node("c2", "c2-n1", "10.2.1.0/24")],
    };
    let got = global_services(&services, Some(&dump), &names(), false);
    assert_eq!(got.len(), 2, "{got:#?}");
    let broken = &got[0];
    assert_eq!(broken.name, "broken");
    assert!(broken.invalid.as_deref().unwrap().contains("sideways"));
    let web = &got[1];
    assert_eq!(
        (web.affinity.as_str(), web.shared, web.ports.clone()),
        ("local", true, vec!["80/TCP".to_string()])
    );
    assert_eq!(
        web.backends_by_cluster,
        BTreeMap::from([("c1".to_string(), 1), ("c2".to_string(), 2)])
    );
    assert_eq!(web.backends[2].cluster.as_deref(), Some("c2"));
    // Without a datapath the backends are unknown, not "none".
    let blind = global_services(&services, None, &names(), false);
    assert!(blind[1].backends.is_empty() && blind[1].backends_by_cluster.is_empty());
}

fn node(cluster: &str, name: &str, cidr: &str) -> NodeRecord {
    NodeRecord {
        cluster: mesh_api::ClusterName::new(cluster).unwrap(),
        name: mesh_api::NodeName::new(name).unwrap(),
        ips: vec![],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    }
}

#[test]
fn unknown_cluster_ids_are_shown_as_numbers_and_identity_wins_over_node() {
    let cache = vec![ipcache("10.9.0.0/16", 0x9_0100)];
    let nodes = vec![node("c2", "c2-n1", "10.9.1.0/24")];
    assert_eq!(
        names()
            .cluster_of("10.9.1.1".parse().unwrap(), &cache, &nodes)
            .as_deref(),
        Some("cluster-id-9")
    );
    assert_eq!(
        names().cluster_of("192.0.2.1".parse().unwrap(), &cache, &nodes),
        None
    );
    assert_eq!(
        node_of(&nodes, "10.9.1.7".parse().unwrap()).map(|n| n.name.to_string()),
        Some("c2-n1".into())
    );
}
