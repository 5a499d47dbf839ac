use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use mesh_api::{ClusterName, NodeName, NodeRecord};

use super::*;
use crate::error::Error;

fn node(cluster: &str, name: &str, ip: &str, cidr: &str) -> NodeRecord {
    NodeRecord {
        cluster: ClusterName::new(cluster).unwrap(),
        name: NodeName::new(name).unwrap(),
        ips: vec![ip.parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        wireguard_key: None,
    }
}

fn local() -> LocalNode {
    LocalNode {
        cluster: ClusterName::new("c1").unwrap(),
        name: NodeName::new("n1").unwrap(),
        pod_cidrs: vec!["10.1.1.0/24".parse().unwrap()],
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn settings() -> MasqueradeSettings {
    MasqueradeSettings {
        masquerade: true,
        node_ip: Some(Ipv4Addr::new(192, 168, 77, 11)),
        ports: 61000..=65535,
        extra_exempt: vec![net("172.16.0.0/12")],
    }
}

#[test]
fn every_known_pod_cidr_node_address_remote_cidr_and_extra_is_exempt() {
    let nodes = [
        node("c1", "n1", "192.168.77.11", "10.1.1.0/24"),
        node("c1", "n2", "192.168.77.12", "10.1.2.0/24"),
        node("c2", "m1", "192.168.77.21", "10.2.1.0/24"),
    ];
    let set = exempt(
        &nodes,
        &local(),
        &[net("10.3.0.0/16")],
        &[net("172.16.0.1/12")],
    );
    let want: BTreeSet<Ipv4Net> = [
        "10.1.1.0/24",
        "10.1.2.0/24",
        "10.2.1.0/24",
        "10.3.0.0/16",
        "172.16.0.0/12",
        "192.168.77.11/32",
        "192.168.77.12/32",
        "192.168.77.21/32",
    ]
    .into_iter()
    .map(net)
    .collect();
    assert_eq!(set, want);
}

#[derive(Default)]
struct Table {
    exempt: BTreeSet<Ipv4Net>,
    config: Option<mesh_bpf::MasqueradeConfig>,
    fail_exempt: bool,
    /// Every call in order, to check the exempt set comes first.
    calls: Vec<&'static str>,
}

impl MasqueradeTable for Table {
    fn sync_exempt(&mut self, cidrs: &BTreeSet<Ipv4Net>) -> Result<Vec<String>> {
        self.calls.push("exempt");
        if self.fail_exempt {
            return Err(Error::Config {
                flag: "test",
                reason: "map full".into(),
            });
        }
        let added = cidrs
            .difference(&self.exempt)
            .map(|c| c.to_string())
            .collect();
        self.exempt = cidrs.clone();
        Ok(added)
    }

    fn set_config(&mut self, config: Option<&mesh_bpf::MasqueradeConfig>) -> Result<()> {
        self.calls.push(if config.is_some() { "on" } else { "off" });
        self.config = config.cloned();
        Ok(())
    }
}

fn run(
    s: &MasqueradeSettings,
    nodes: &[NodeRecord],
    local: &LocalNode,
    table: &mut Table,
) -> (MasqueradeStatus, Vec<String>, Vec<String>) {
    let (mut changes, mut failures) = (Vec::new(), Vec::new());
    let st = sync(s, nodes, local, &[], table, &mut changes, &mut failures);
    (st, changes, failures)
}

#[test]
fn a_pass_writes_the_exempt_set_then_turns_masquerade_on() {
    let nodes = [node("c1", "n2", "192.168.77.12", "10.1.2.0/24")];
    let mut table = Table::default();
    let (st, changes, failures) = run(&settings(), &nodes, &local(), &mut table);
    assert!(st.active, "{st:?}");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(table.calls, ["exempt", "on"]);
    assert_eq!(
        table.config,
        Some(mesh_bpf::MasqueradeConfig {
            node_addr: Ipv4Addr::new(192, 168, 77, 11),
            masquerade: true,
            pod_cidr: (Ipv4Addr::new(10, 1, 1, 0), 24),
            ports: 61000..=65535,
        })
    );
    assert_eq!(st.ports, "61000-65535");
    assert!(changes.iter().any(|c| c == "10.1.2.0/24"), "{changes:?}");
    assert!(st.exempt.contains(&net("192.168.77.12/32")));
}

#[test]
fn an_exempt_set_that_cannot_be_written_turns_masquerade_off() {
    let mut table = Table {
        fail_exempt: true,
        config: Some(mesh_bpf::MasqueradeConfig {
            node_addr: Ipv4Addr::new(192, 168, 77, 11),
            masquerade: true,
            pod_cidr: (Ipv4Addr::new(10, 1, 1, 0), 24),
            ports: 61000..=65535,
        }),
        ..Default::default()
    };
    let (st, _, failures) = run(&settings(), &[], &local(), &mut table);
    assert!(!st.active);
    assert_eq!(
        table.config, None,
        "off, never masquerading towards unlisted pods"
    );
    assert!(st.reason.unwrap().contains("exempt set"));
    assert_eq!(failures.len(), 1, "{failures:?}");
}

#[test]
fn without_a_node_address_or_an_ipv4_pod_cidr_it_stays_off_and_says_why() {
    let mut table = Table::default();
    let no_ip = MasqueradeSettings {
        node_ip: None,
        ..settings()
    };
    let (st, _, failures) = run(&no_ip, &[], &local(), &mut table);
    assert!(!st.active);
    assert!(st.reason.unwrap().contains("InternalIP"));
    assert_eq!(table.calls, ["exempt", "off"]);
    assert!(
        failures.is_empty(),
        "a missing input is a state, not a failure"
    );
    let v6 = LocalNode {
        pod_cidrs: vec!["fd00::/64".parse().unwrap()],
        ..local()
    };
    let (st, _, _) = run(&settings(), &[], &v6, &mut table);
    assert!(st.reason.unwrap().contains("IPv4 pod CIDR"));
}

#[test]
fn masquerade_off_still_gives_nodeport_snat_its_address_and_ports() {
    let mut table = Table::default();
    let off = MasqueradeSettings {
        masquerade: false,
        ..settings()
    };
    let (st, _, failures) = run(&off, &[], &local(), &mut table);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!st.active && !st.enabled);
    assert_eq!(st.node_ip, Some(Ipv4Addr::new(192, 168, 77, 11)));
    let c = table.config.expect("SNAT config written");
    assert!(!c.masquerade);
    assert_eq!(c.ports, 61000..=65535);
}
