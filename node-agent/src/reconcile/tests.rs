use std::net::IpAddr;

use mesh_api::{ClusterId, Identity, Protocol, ReservedIdentity};

use super::*;
use crate::datapath::{
    BackendAddr, Direction, FaultyDatapath, FrontendKind, MemoryDatapath, PolicyMatch,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn endpoint(id: EndpointId, addr: &str) -> DatapathEndpoint {
    DatapathEndpoint {
        id,
        host_ifindex: 100 + u32::from(id),
        host_ifname: format!("mw{id}"),
        pod_mac: None,
        ips: vec![ip(addr)],
        identity: ReservedIdentity::Init.identity(),
    }
}

fn service(vip: &str, port: u16, backends: &[&str]) -> ServiceEntry {
    ServiceEntry {
        frontend: Frontend {
            ip: ip(vip),
            port,
            protocol: Protocol::Tcp,
            kind: FrontendKind::ClusterIp,
        },
        backends: backends
            .iter()
            .map(|b| BackendAddr {
                ip: ip(b),
                port: 8080,
            })
            .collect(),
        affinity_timeout: None,
    }
}

fn ipc(cidr: &str, identity: u32) -> IpcacheEntry {
    IpcacheEntry {
        cidr: cidr.parse().expect("cidr"),
        identity: Identity::from_u32(identity).expect("identity"),
        node_ip: None,
        encrypt: false,
    }
}

fn remote_identity() -> Identity {
    Identity::new(ClusterId::new(2).expect("id"), 300).expect("identity")
}

#[test]
fn installs_desired_state_then_a_second_pass_changes_nothing() {
    let mut r = Reconciler::new(MemoryDatapath::default());
    r.set_endpoint(endpoint(1, "10.0.0.2"));
    r.set_services("k8s", vec![service("10.96.0.10", 53, &["10.0.0.2"])]);
    r.set_ipcache(LOCAL_SOURCE, vec![ipc("10.0.0.2/32", 5)]);
    let report = r.reconcile();
    assert!(report.is_ok(), "{report:?}");
    // endpoint, service, ipcache, and the default (allow-all) policy.
    assert_eq!(report.upserted.len(), 4, "{report:?}");
    assert_eq!(r.datapath().endpoints.len(), 1);
    assert_eq!(r.datapath().policies[&1], EndpointPolicy::default());
    let writes = r.datapath().writes;
    let again = r.reconcile();
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(r.datapath().writes, writes);
}

#[test]
fn converges_in_place_on_a_datapath_that_already_holds_state() {
    // What a restarted agent finds in pinned maps: mostly right, one stale
    // service, one changed backend set, one ipcache entry nobody wants.
    let mut dp = MemoryDatapath::default();
    let keep = service("10.96.0.10", 53, &["10.0.0.2"]);
    let changed_old = service("10.96.0.20", 80, &["10.0.0.3"]);
    let stale = service("10.96.0.30", 80, &["10.0.0.9"]);
    for s in [&keep, &changed_old, &stale] {
        dp.services.insert(s.frontend, s.clone());
    }
    dp.endpoints.insert(1, endpoint(1, "10.0.0.2"));
    dp.policies.insert(1, EndpointPolicy::default());
    dp.ipcache
        .insert("10.0.0.2/32".parse().expect("cidr"), ipc("10.0.0.2/32", 5));
    dp.ipcache
        .insert("10.0.9.9/32".parse().expect("cidr"), ipc("10.0.9.9/32", 5));

    let mut r = Reconciler::new(dp);
    r.set_endpoint(endpoint(1, "10.0.0.2"));
    let changed_new = service("10.96.0.20", 80, &["10.0.0.3", "10.0.0.4"]);
    r.set_services("k8s", vec![keep.clone(), changed_new.clone()]);
    r.set_ipcache(LOCAL_SOURCE, vec![ipc("10.0.0.2/32", 5)]);
    let report = r.reconcile();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        report.upserted,
        vec![ObjectRef::Service(changed_new.frontend)]
    );
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            ObjectRef::Service(stale.frontend),
            ObjectRef::Ipcache("10.0.9.9/32".parse().expect("cidr")),
        ]
    );
    assert_eq!(
        r.datapath().writes,
        3,
        "only the three differences are written"
    );
    assert_eq!(r.datapath().services[&changed_new.frontend], changed_new);
}

#[test]
fn local_endpoints_win_ipcache_conflicts_and_sources_replace_only_their_part() {
    let mut r = Reconciler::new(MemoryDatapath::default());
    r.set_ipcache(
        "mesh",
        vec![
            ipc("10.0.0.2/32", remote_identity().get()),
            ipc("10.1.0.0/24", remote_identity().get()),
        ],
    );
    r.set_ipcache(LOCAL_SOURCE, vec![ipc("10.0.0.2/32", 5)]);
    assert!(r.reconcile().is_ok());
    let dp = r.datapath();
    assert_eq!(
        dp.ipcache[&"10.0.0.2/32".parse().expect("cidr")]
            .identity
            .get(),
        5
    );
    assert_eq!(dp.ipcache.len(), 2);
    // The mesh source withdraws its range; the local entry stays.
    r.set_ipcache("mesh", vec![]);
    let report = r.reconcile();
    assert_eq!(
        report.removed,
        vec![ObjectRef::Ipcache("10.1.0.0/24".parse().expect("cidr"))]
    );
    assert_eq!(r.datapath().ipcache.len(), 1);
}

#[test]
fn a_refused_update_is_reported_others_applied_and_retried_next_pass() {
    let mut r = Reconciler::new(FaultyDatapath {
        fail_endpoint: Some(2),
        ..Default::default()
    });
    r.set_endpoint(endpoint(1, "10.0.0.2"));
    r.set_endpoint(endpoint(2, "10.0.0.3"));
    let report = r.reconcile();
    assert!(
        report.failure(&ObjectRef::Endpoint(2)).is_some(),
        "{report:?}"
    );
    assert!(report.failure(&ObjectRef::Endpoint(1)).is_none());
    assert!(r.datapath().inner.endpoints.contains_key(&1));
    // No policy is written for an endpoint that is not installed.
    assert!(!r.datapath().inner.policies.contains_key(&2));
    r.datapath_mut().fail_endpoint = None;
    let report = r.reconcile();
    assert!(report.is_ok());
    assert_eq!(
        report.upserted,
        vec![ObjectRef::Endpoint(2), ObjectRef::Policy(2)]
    );
}

#[test]
fn a_failed_dump_writes_nothing_blindly() {
    let mut r = Reconciler::new(FaultyDatapath {
        fail_dumps: true,
        ..Default::default()
    });
    r.set_endpoint(endpoint(1, "10.0.0.2"));
    r.set_services("k8s", vec![service("10.96.0.10", 53, &["10.0.0.2"])]);
    let report = r.reconcile();
    assert_eq!(report.failed.len(), 3, "{report:?}"); // endpoint, service, policy
    assert_eq!(r.datapath().inner.writes, 0);
}

#[test]
fn policy_changes_write_only_the_endpoint_concerned() {
    let mut r = Reconciler::new(MemoryDatapath::default());
    r.set_endpoint(endpoint(1, "10.0.0.2"));
    r.set_endpoint(endpoint(2, "10.0.0.3"));
    assert!(r.reconcile().is_ok());
    let policy = EndpointPolicy {
        ingress_enforced: true,
        egress_enforced: false,
        allow: [PolicyMatch {
            direction: Direction::Ingress,
            identity: Some(remote_identity()),
            port: 8080,
            protocol: Some(Protocol::Tcp),
            rule: 7,
        }]
        .into_iter()
        .collect(),
        ..EndpointPolicy::default()
    };
    r.set_policy(2, policy.clone());
    let report = r.reconcile();
    assert_eq!(report.upserted, vec![ObjectRef::Policy(2)]);
    assert_eq!(r.datapath().policies[&2], policy);
    // Removing the endpoint removes its policy with it.
    r.remove_endpoint(2);
    let report = r.reconcile();
    assert_eq!(report.removed, vec![ObjectRef::Endpoint(2)]);
    assert!(!r.datapath().policies.contains_key(&2));
}

#[test]
fn nothing_is_removed_until_every_expected_source_has_delivered() {
    let mut r = Reconciler::new(MemoryDatapath::default());
    r.set_services("feed", vec![service("10.96.0.1", 80, &["10.1.0.1"])]);
    assert!(r.reconcile().is_ok());
    // A restarted agent: same maps, the feed has not delivered yet.
    let mut r = Reconciler::new(r.datapath().clone());
    r.expect_source("feed");
    let report = r.reconcile();
    assert!(report.is_noop(), "{report:?}");
    assert_eq!(r.datapath().services.len(), 1, "kept while the feed syncs");
    r.set_services("feed", vec![]);
    let report = r.reconcile();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(r.datapath().services.is_empty());
}
