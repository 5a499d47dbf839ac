use mesh_api::{ClusterId, Identity, ReservedIdentity};

use super::*;
use crate::datapath::{FaultyDatapath, MemoryDatapath};

fn reg(container: &str, addr: &str) -> EndpointRegistration {
    EndpointRegistration {
        container_id: container.to_string(),
        ifname: "eth0".into(),
        netns: format!("/var/run/netns/{container}"),
        host_ifname: host_ifname(container, "eth0"),
        host_ifindex: 42,
        pod_mac: Some("02:00:00:00:00:01".into()),
        ips: vec![addr.parse().expect("ip")],
        pod_namespace: Some("default".into()),
        pod_name: Some(container.to_string()),
    }
}

fn cidr() -> Option<IpNet> {
    Some("10.1.0.0/24".parse().expect("cidr"))
}

fn open<D: Datapath>(dir: &Path, dp: D) -> EndpointManager<D> {
    let (mgr, report) = EndpointManager::open(dir, cidr(), dp).expect("open");
    assert!(report.is_ok(), "{report:?}");
    mgr
}

#[test]
fn register_assigns_ids_persists_and_feeds_the_datapath() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    let a = mgr.register(reg("a", "10.1.0.2")).expect("a");
    let b = mgr.register(reg("b", "10.1.0.3")).expect("b");
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(a.identity, ReservedIdentity::Init.identity());
    assert_eq!(
        std::fs::read_dir(dir.path().join("endpoints"))
            .expect("dir")
            .count(),
        2
    );
    let dp = mgr.datapath();
    assert_eq!(dp.endpoints[&1].host_ifindex, 42);
    assert_eq!(dp.ipcache.len(), 2);
    assert_eq!(
        dp.ipcache[&"10.1.0.3/32".parse().expect("cidr")].identity,
        ReservedIdentity::Init.identity()
    );
    // Re-registration keeps the id.
    let mut again = reg("a", "10.1.0.2");
    again.host_ifindex = 43;
    assert_eq!(mgr.register(again).expect("again").id, 1);
    assert_eq!(mgr.datapath().endpoints[&1].host_ifindex, 43);
}

#[test]
fn a_restarted_manager_recovers_endpoints_and_converges_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    mgr.register(reg("b", "10.1.0.3")).expect("b");
    let before = mgr.list();
    let mut maps = mgr.datapath().clone(); // what the pinned maps hold
    maps.writes = 0;
    drop(mgr);

    // Same maps (pinned): nothing is rewritten.
    let mgr = open(dir.path(), maps);
    assert_eq!(mgr.list(), before);
    assert_eq!(
        mgr.datapath().writes,
        0,
        "restart must not rewrite unchanged entries"
    );

    // Empty maps (e.g. after a reboot): everything is installed again.
    let mgr = open(dir.path(), MemoryDatapath::default());
    assert_eq!(mgr.list(), before);
    assert_eq!(mgr.datapath().endpoints.len(), 2);
    assert_eq!(mgr.datapath().ipcache.len(), 2);
}

#[test]
fn deregister_is_idempotent_and_removes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    assert!(mgr.deregister("a", "eth0").expect("del").is_some());
    assert!(mgr.deregister("a", "eth0").expect("del again").is_none());
    assert!(mgr.deregister("never", "eth0").expect("unknown").is_none());
    assert!(mgr.list().is_empty());
    assert!(mgr.datapath().endpoints.is_empty());
    assert!(mgr.datapath().ipcache.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("endpoints"))
            .expect("dir")
            .count(),
        0
    );
    // The id is free again.
    assert_eq!(mgr.register(reg("c", "10.1.0.4")).expect("c").id, 1);
}

#[test]
fn invalid_registrations_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    let mut bad_ifindex = reg("x", "10.1.0.9");
    bad_ifindex.host_ifindex = 0;
    let mut relative_ns = reg("y", "10.1.0.9");
    relative_ns.netns = "netns/y".into();
    let mut no_ips = reg("z", "10.1.0.9");
    no_ips.ips.clear();
    let cases = [
        (reg("b", "10.2.0.2"), "outside this node's pod CIDR"),
        (reg("b", "10.1.0.2"), "already belongs to endpoint a/eth0"),
        (reg("bad/id", "10.1.0.9"), "container id"),
        (bad_ifindex, "host_ifindex"),
        (relative_ns, "absolute path"),
        (no_ips, "at least one IP"),
    ];
    for (r, wanted) in cases {
        let err = mgr.register(r).expect_err(wanted).to_string();
        assert!(err.contains(wanted), "{wanted:?} not in {err}");
    }
    assert_eq!(mgr.list().len(), 1);
}

#[test]
fn a_datapath_refusal_undoes_the_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(
        dir.path(),
        FaultyDatapath {
            fail_endpoint: Some(2),
            ..Default::default()
        },
    );
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    let err = mgr.register(reg("b", "10.1.0.3")).expect_err("refused");
    assert!(matches!(err, Error::Datapath { .. }), "{err}");
    assert_eq!(mgr.list().len(), 1);
    assert!(
        !mgr.datapath()
            .inner
            .ipcache
            .contains_key(&"10.1.0.3/32".parse().expect("cidr"))
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("endpoints"))
            .expect("dir")
            .count(),
        1
    );
}

#[test]
fn identity_updates_reach_the_ipcache_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    let id = Identity::new(ClusterId::new(1).expect("cluster"), 1000).expect("identity");
    mgr.set_identity("a", "eth0", id)
        .expect("set")
        .expect("known");
    let key: IpNet = "10.1.0.2/32".parse().expect("cidr");
    assert_eq!(mgr.datapath().ipcache[&key].identity, id);
    assert_eq!(mgr.datapath().endpoints[&1].identity, id);
    drop(mgr);
    let mgr = open(dir.path(), MemoryDatapath::default());
    assert_eq!(mgr.get("a", "eth0").expect("a").identity, id);
}

#[test]
fn a_corrupt_state_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("endpoints")).expect("mkdir");
    std::fs::write(dir.path().join("endpoints/x.json"), "{not json").expect("write");
    let err =
        EndpointManager::open(dir.path(), cidr(), MemoryDatapath::default()).expect_err("corrupt");
    let msg = err.to_string();
    assert!(msg.contains("x.json") && msg.contains("corrupt"), "{msg}");
}

#[test]
fn names_are_short_stable_and_distinct() {
    let a = host_ifname("abc", "eth0");
    assert_eq!(a.len(), 13);
    assert!(a.starts_with("mw"));
    assert_eq!(a, host_ifname("abc", "eth0"));
    assert_ne!(a, host_ifname("abc", "net1"));
    assert_ne!(a, host_ifname("abd", "eth0"));
    assert!(ifname_problem(&a).is_none());
}

#[test]
fn prune_forgets_endpoints_whose_interfaces_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mgr = open(dir.path(), MemoryDatapath::default());
    mgr.register(reg("a", "10.1.0.2")).expect("a");
    mgr.register(reg("b", "10.1.0.3")).expect("b");
    let gone = mgr
        .prune(|e| e.registration.container_id == "a")
        .expect("prune");
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].registration.container_id, "b");
    assert_eq!(mgr.list().len(), 1);
    assert_eq!(mgr.datapath().endpoints.len(), 1);
    assert_eq!(mgr.datapath().ipcache.len(), 1);
    drop(mgr);
    assert_eq!(open(dir.path(), MemoryDatapath::default()).list().len(), 1);
}
