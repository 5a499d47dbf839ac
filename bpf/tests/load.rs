//! Loading, pinning, restart reuse, layout checks, bad input, map full.

use std::net::Ipv4Addr;

use mesh_bpf::{
    Backend, BackendId, Datapath, EndpointPolicy, Error, Frontend, LbAlgorithm, Protocol, ServiceId,
};
use mesh_testbed::{BpfDir, require_root, run_ok};

fn frontend() -> Frontend {
    Frontend {
        addr: Ipv4Addr::new(10, 96, 0, 10),
        port: 80,
        proto: Protocol::Tcp,
    }
}

#[test]
fn reload_reuses_pinned_maps_without_flushing() {
    require_root();
    let dir = BpfDir::new();
    {
        let dp = Datapath::load(dir.path()).expect("first load");
        let mut backends = dp.backends().expect("backends");
        backends
            .upsert(
                BackendId(7),
                Backend {
                    addr: Ipv4Addr::new(10, 244, 1, 7),
                    port: 8080,
                    proto: Protocol::Tcp,
                    cluster_id: 1,
                },
            )
            .expect("upsert backend");
        let mut svc = dp.services().expect("services");
        svc.upsert(
            frontend(),
            ServiceId(3),
            &[BackendId(7)],
            LbAlgorithm::Random,
        )
        .expect("upsert service");
        // Idempotent: the same upsert again changes nothing.
        svc.upsert(
            frontend(),
            ServiceId(3),
            &[BackendId(7)],
            LbAlgorithm::Random,
        )
        .expect("upsert service again");
    }
    // A "restarted" loader: same pin root, state still there.
    let dp = Datapath::load(dir.path()).expect("second load");
    let svc = dp.services().expect("services");
    let entry = svc
        .get(frontend())
        .expect("get")
        .expect("service kept across reload");
    assert_eq!(entry.id, ServiceId(3));
    assert_eq!(entry.backends, vec![BackendId(7)]);
    let b = dp
        .backends()
        .unwrap()
        .get(BackendId(7))
        .unwrap()
        .expect("backend kept");
    assert_eq!(b.addr, Ipv4Addr::new(10, 244, 1, 7));
    assert_eq!(b.port, 8080);

    // Map pressure for metrics: one entry in each LB map, capacities known.
    let usage = mesh_bpf::usage(dir.path()).unwrap();
    let get = |name: &str| usage.iter().find(|u| u.name == name).cloned().unwrap();
    assert_eq!(get("mw_services").entries, 1);
    assert_eq!(get("mw_slots").entries, 1);
    assert_eq!(get("mw_backends").entries, 1);
    assert_eq!(get("mw_revnat").entries, 1);
    assert_eq!(get("mw_ipcache").entries, 0);
    assert_eq!(get("mw_services").max_entries, 65536);

    // The dump for meshctl serializes to JSON.
    let json = serde_json::to_value(mesh_bpf::dump(dir.path()).unwrap()).unwrap();
    assert_eq!(json["services"][0]["id"], 3, "{json}");
    assert_eq!(json["backends"][0][1]["port"], 8080, "{json}");

    // bpftool, an independent reader, sees the same entry.
    let path = dir.path().join("mw_services");
    let out = run_ok(
        "bpftool",
        &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("bpftool json");
    let entries = v.as_array().expect("array");
    assert_eq!(entries.len(), 1, "bpftool dump: {out}");
    // BTF-formatted dump names the C struct fields.
    let text = out.to_string();
    assert!(text.contains("\"svc_id\":3"), "svc_id in dump: {text}");
    assert!(
        text.contains("\"backend_count\":1"),
        "backend_count in dump: {text}"
    );
}

#[test]
fn pinned_map_with_wrong_layout_is_refused_with_a_clear_error() {
    require_root();
    let dir = BpfDir::new();
    let path = dir.path().join("mw_services");
    run_ok(
        "bpftool",
        &[
            "map",
            "create",
            path.to_str().unwrap(),
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "16",
            "name",
            "mw_services",
        ],
    );
    let err = Datapath::load(dir.path()).expect_err("incompatible pinned map must be refused");
    match &err {
        Error::MapLayout { map, what, .. } => {
            assert_eq!(*map, "mw_services");
            assert_eq!(*what, "key size");
        }
        other => panic!("expected MapLayout, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("Remove the pin"), "{msg}");
}

#[test]
fn pin_root_outside_bpffs_is_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let err = Datapath::load(tmp.path()).expect_err("tmpfs is not bpffs");
    assert!(matches!(err, Error::NotBpffs { .. }), "{err:?}");
}

#[test]
fn invalid_input_is_refused_and_nothing_is_written() {
    require_root();
    let dir = BpfDir::new();
    let dp = Datapath::load(dir.path()).expect("load");
    let mut svc = dp.services().unwrap();
    let bad = Frontend {
        port: 0,
        ..frontend()
    };
    let err = svc
        .upsert(bad, ServiceId(1), &[BackendId(1)], LbAlgorithm::Random)
        .expect_err("port 0");
    assert!(err.to_string().contains("service port"), "{err}");
    let err = svc
        .upsert(
            frontend(),
            ServiceId(0),
            &[BackendId(1)],
            LbAlgorithm::Random,
        )
        .expect_err("id 0");
    assert!(err.to_string().contains("service id"), "{err}");
    let err = svc
        .upsert(
            frontend(),
            ServiceId(1),
            &[BackendId(0)],
            LbAlgorithm::Random,
        )
        .expect_err("backend id 0");
    assert!(err.to_string().contains("backend id"), "{err}");
    assert!(svc.dump().unwrap().is_empty(), "nothing written");
    let mut ipc = dp.ipcache().unwrap();
    let err = ipc
        .upsert(
            Ipv4Addr::new(10, 0, 0, 1),
            8,
            mesh_bpf::IpcacheEntry {
                identity: 5,
                tunnel_endpoint: None,
                encrypt: false,
                cluster_id: 0,
            },
        )
        .expect_err("host bits set");
    assert!(err.to_string().contains("no host bits"), "{err}");
    // Deletes of absent entries are no-ops.
    svc.delete(frontend()).expect("idempotent delete");
    dp.backends()
        .unwrap()
        .delete(BackendId(99))
        .expect("idempotent delete");
}

#[test]
fn full_map_gives_map_full_error_and_keeps_serving() {
    require_root();
    let dir = BpfDir::new();
    let dp = Datapath::load(dir.path()).expect("load");
    let mut pol = dp.policy().unwrap();
    let p = EndpointPolicy {
        identity: 1000,
        ingress_enforced: true,
        egress_enforced: false,
    };
    let mut n = 0u32;
    let err = loop {
        n += 1;
        match pol.set_endpoint(n, p) {
            Ok(()) => assert!(n < 1_000_000, "map never filled"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::MapFull {
                map: "mw_endpoints",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is full"), "{err}");
    // Existing entries are intact and updatable.
    assert_eq!(pol.endpoint(1).unwrap(), Some(p));
    pol.set_endpoint(
        1,
        EndpointPolicy {
            ingress_enforced: false,
            ..p
        },
    )
    .expect("update existing");
}

#[test]
fn policy_sync_endpoint_converges_without_touching_other_endpoints() {
    use mesh_bpf::{Direction, PolicyAction, PolicyEntry, PolicyKey};
    require_root();
    let dir = BpfDir::new();
    let dp = Datapath::load(dir.path()).expect("load");
    let mut pol = dp.policy().unwrap();
    let key = |ep: u32, id: u32, port: u16| PolicyKey {
        endpoint: ep,
        identity: id,
        port,
        proto: Some(Protocol::Tcp),
        direction: Direction::Ingress,
    };
    let allow = PolicyEntry {
        action: PolicyAction::Allow,
        rule_id: 1,
    };
    let enforced = EndpointPolicy {
        identity: 9,
        ingress_enforced: true,
        egress_enforced: false,
    };
    pol.upsert(key(7, 100, 80), allow).unwrap();
    let first = vec![(key(5, 100, 80), allow), (key(5, 200, 443), allow)];
    assert_eq!(pol.sync_endpoint(5, enforced, &first).unwrap(), 0);
    let second = vec![(key(5, 200, 443), allow), (key(5, 300, 53), allow)];
    assert_eq!(
        pol.sync_endpoint(5, enforced, &second).unwrap(),
        1,
        "one stale entry"
    );
    assert_eq!(
        pol.sync_endpoint(5, enforced, &second).unwrap(),
        0,
        "idempotent"
    );
    let keys: Vec<PolicyKey> = pol.dump().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![key(5, 200, 443), key(5, 300, 53), key(7, 100, 80)]
    );
    assert_eq!(pol.endpoints().unwrap(), vec![(5, enforced)]);
    let err = pol
        .sync_endpoint(5, enforced, &[(key(6, 1, 1), allow)])
        .expect_err("wrong endpoint");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
}

#[test]
fn two_pin_roots_are_independent_datapaths() {
    require_root();
    let a = BpfDir::new();
    let b = BpfDir::new();
    let dpa = Datapath::load(a.path()).expect("load a");
    let dpb = Datapath::load(b.path()).expect("load b");
    dpa.services()
        .unwrap()
        .upsert(
            frontend(),
            ServiceId(1),
            &[BackendId(1)],
            LbAlgorithm::Random,
        )
        .unwrap();
    assert!(dpa.services().unwrap().get(frontend()).unwrap().is_some());
    assert!(
        dpb.services().unwrap().get(frontend()).unwrap().is_none(),
        "agents with different pin roots must not share maps"
    );
}

#[test]
fn endpoint_records_survive_in_the_map_for_a_restarted_agent() {
    use mesh_bpf::EndpointInfo;
    require_root();
    let dir = BpfDir::new();
    let info = EndpointInfo {
        endpoint_id: 42,
        ipv4: Some(Ipv4Addr::new(10, 244, 1, 9)),
        mac: Some([2, 0, 0, 0, 0, 9]),
        ifname: "lxc0123456789ab".into(),
    };
    let enforced = EndpointPolicy {
        identity: 1234,
        ingress_enforced: true,
        egress_enforced: false,
    };
    {
        let dp = Datapath::load(dir.path()).expect("load");
        let mut pol = dp.policy().unwrap();
        pol.upsert_endpoint(17, &info, enforced).unwrap();
        // Changing only the enforcement keeps the record.
        pol.set_endpoint(
            17,
            EndpointPolicy {
                egress_enforced: true,
                ..enforced
            },
        )
        .unwrap();
        let err = pol
            .upsert_endpoint(
                18,
                &EndpointInfo {
                    ifname: "x".repeat(16),
                    ..info.clone()
                },
                enforced,
            )
            .expect_err("16-byte name");
        assert!(err.to_string().contains("at most 15 bytes"), "{err}");
    }
    let dp = Datapath::load(dir.path()).expect("reload");
    let records = dp.policy().unwrap().endpoint_records().unwrap();
    assert_eq!(
        records,
        vec![(
            17,
            info,
            EndpointPolicy {
                egress_enforced: true,
                ..enforced
            }
        )]
    );
}

#[test]
fn load_balancer_allocates_ids_dedupes_backends_and_recovers_them_on_reopen() {
    require_root();
    let dir = BpfDir::new();
    let dp = Datapath::load(dir.path()).expect("load");
    let be = |last: u8| Backend {
        addr: Ipv4Addr::new(10, 244, 1, last),
        port: 8080,
        proto: Protocol::Tcp,
        cluster_id: 1,
    };
    let other = Frontend {
        port: 81,
        ..frontend()
    };
    let (id_a, id_b);
    {
        let mut lb = dp.load_balancer().unwrap();
        id_a = lb
            .upsert(frontend(), &[be(1), be(2)], LbAlgorithm::Random)
            .unwrap();
        id_b = lb
            .upsert(other, &[be(2), be(3)], LbAlgorithm::Maglev)
            .unwrap();
        assert_ne!(id_a, id_b);
        assert_eq!(
            lb.upsert(frontend(), &[be(1), be(2)], LbAlgorithm::Random)
                .unwrap(),
            id_a,
            "idempotent"
        );
        assert_eq!(
            dp.backends().unwrap().dump().unwrap().len(),
            3,
            "shared backend stored once"
        );
    }
    // A restarted agent gets the same ids back and allocates past them.
    let mut lb = dp.load_balancer().unwrap();
    assert_eq!(
        lb.upsert(other, &[be(3)], LbAlgorithm::Maglev).unwrap(),
        id_b
    );
    let third = Frontend {
        port: 82,
        ..frontend()
    };
    let id_c = lb.upsert(third, &[be(4)], LbAlgorithm::Random).unwrap();
    assert!(id_c.0 > id_a.0.max(id_b.0), "fresh id");
    let views = lb.dump().unwrap();
    let view = views.iter().find(|v| v.frontend == other).unwrap();
    assert_eq!(view.backends, vec![be(3)]);
    assert_eq!(view.algorithm, LbAlgorithm::Maglev);
    // be(2) is still used by the first service: nothing to prune yet.
    assert_eq!(lb.prune_backends().unwrap(), 0);
    lb.delete(frontend()).unwrap();
    assert_eq!(
        lb.prune_backends().unwrap(),
        2,
        "be(1) and be(2) unreferenced"
    );
    assert_eq!(dp.backends().unwrap().dump().unwrap().len(), 2);
    // Graceful prune: a withdrawn backend stays for the grace period (its
    // flows drain), is kept when referenced again, and then goes.
    let grace = std::time::Duration::from_millis(300);
    lb.upsert(third, &[be(5)], LbAlgorithm::Random).unwrap();
    assert_eq!(
        lb.prune_backends_unused_for(grace).unwrap(),
        0,
        "be(4) just withdrawn"
    );
    lb.upsert(third, &[be(4)], LbAlgorithm::Random).unwrap();
    std::thread::sleep(grace);
    assert_eq!(
        lb.prune_backends_unused_for(grace).unwrap(),
        0,
        "be(4) used again; be(5)'s clock starts"
    );
    std::thread::sleep(grace);
    assert_eq!(
        lb.prune_backends_unused_for(grace).unwrap(),
        1,
        "be(5) unused for the grace period"
    );
    let left: Vec<_> = dp
        .backends()
        .unwrap()
        .dump()
        .unwrap()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(left.contains(&be(4)) && !left.contains(&be(5)), "{left:?}");
}
