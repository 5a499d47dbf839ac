//! The datapath on real packets between network namespaces: pod to pod,
//! ClusterIP through the socket LB (TCP, UDP with the reply from the
//! ClusterIP) and through TC only, policy with flow events and counters,
//! backend removal, Maglev, and restart safety.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Node, Pod, answer};
use mesh_bpf::{
    Backend, BackendId, CtDirection, Datapath, Direction, DropReason, EndpointPolicy,
    FlowObservation, FlowVerdict, Frontend, LbAlgorithm, PolicyAction, PolicyEntry, PolicyKey,
    Protocol, ServiceId,
};
use mesh_testbed::{BpfDir, Bridge, Capture, Cgroup, NetNs, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn tcp(port: u16) -> Frontend {
    Frontend {
        addr: VIP,
        port,
        proto: Protocol::Tcp,
    }
}

fn udp(port: u16) -> Frontend {
    Frontend {
        addr: VIP,
        port,
        proto: Protocol::Udp,
    }
}

/// Registers each pod as a backend (ids 1..) for `port`/proto and a service
/// on `frontend` with them.
fn service(dp: &Datapath, id: u32, frontend: Frontend, pods: &[&Pod], port: u16, alg: LbAlgorithm) {
    let mut b = dp.backends().unwrap();
    let mut ids = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let bid = BackendId(id * 100 + i as u32 + 1);
        b.upsert(
            bid,
            Backend {
                addr: p.ip,
                port,
                proto: frontend.proto,
                cluster_id: 1,
            },
        )
        .unwrap();
        ids.push(bid);
    }
    dp.services()
        .unwrap()
        .upsert(frontend, ServiceId(id), &ids, alg)
        .unwrap();
}

/// Polls `cond` for up to 5 s (a bounded liveness check, not a timing test).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Lab {
    _dir: BpfDir,
    dp: Datapath,
    node: Node,
    client: Pod,
    other: Pod,
    b1: Pod,
    b2: Pod,
}

fn lab() -> Lab {
    require_root();
    let dir = BpfDir::new();
    let mut dp = Datapath::load(dir.path()).expect("load datapath");
    let node = Node::new();
    let client = node.add_pod(1, "client", 1001);
    let other = node.add_pod(2, "other", 1002);
    let b1 = node.add_pod(3, "backend-1", 2001);
    let b2 = node.add_pod(4, "backend-2", 2001);
    node.attach(&mut dp, &[&client, &other, &b1, &b2]);
    b1.serve(8080);
    b2.serve(8080);
    Lab {
        _dir: dir,
        dp,
        node,
        client,
        other,
        b1,
        b2,
    }
}

#[test]
fn pod_to_pod_through_the_tc_programs() {
    let lab = lab();
    let (name, peer) = answer(&lab.client.probe(&["tcp", "10.244.1.13:8080"]));
    assert_eq!(name, "backend-1");
    assert_eq!(peer, "10.244.1.13:8080");
    let (name, _) = answer(&lab.client.probe(&["udp", "10.244.1.14:8080"]));
    assert_eq!(name, "backend-2");
    // The flow went through our programs: a conntrack entry for it exists.
    let ct = lab.dp.conntrack().unwrap().dump().unwrap();
    assert!(
        ct.iter().any(|e| e.saddr == lab.client.ip
            && e.daddr == lab.b1.ip
            && e.dport == 8080
            && e.direction == CtDirection::Out),
        "no conntrack entry for client -> backend-1: {ct:?}"
    );
    let m = lab.dp.metrics().unwrap().read().unwrap();
    assert!(m.packets(DropReason::Forwarded) > 0, "{m:?}");
}

#[test]
fn clusterip_through_tc_only_tcp_and_udp_replies_from_the_clusterip() {
    let lab = lab();
    service(
        &lab.dp,
        1,
        tcp(80),
        &[&lab.b1, &lab.b2],
        8080,
        LbAlgorithm::Random,
    );
    service(
        &lab.dp,
        2,
        udp(53),
        &[&lab.b1, &lab.b2],
        8080,
        LbAlgorithm::Random,
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        // The client is in no cgroup with the socket LB: only TC translates.
        let (name, peer) = answer(&lab.client.probe(&["tcp", "10.96.0.10:80"]));
        assert_eq!(peer, "10.96.0.10:80", "the socket still sees the ClusterIP");
        seen.insert(name);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["backend-1".to_string(), "backend-2".to_string()],
        "random selection over 20 connections reaches both backends"
    );
    let (name, peer) = answer(&lab.client.probe(&["udp", "10.96.0.10:53"]));
    assert!(name.starts_with("backend-"), "{name}");
    assert_eq!(
        peer, "10.96.0.10:53",
        "UDP reply must come from the ClusterIP"
    );
    // TC did it: service conntrack entries exist for the ClusterIP tuples.
    let ct = lab.dp.conntrack().unwrap().dump().unwrap();
    assert!(
        ct.iter()
            .any(|e| e.direction == CtDirection::Service && e.daddr == VIP && e.dport == 80),
        "{ct:?}"
    );
    assert!(
        ct.iter()
            .any(|e| e.direction == CtDirection::Service && e.daddr == VIP && e.dport == 53),
        "{ct:?}"
    );
}

#[test]
fn clusterip_through_socket_lb_tcp_and_udp() {
    let mut lab = lab();
    let cg = Cgroup::new();
    lab.dp.attach_cgroup(cg.path()).expect("attach cgroup");
    service(&lab.dp, 1, tcp(80), &[&lab.b1], 8080, LbAlgorithm::Random);
    service(&lab.dp, 2, udp(53), &[&lab.b2], 8080, LbAlgorithm::Random);
    let mut flows = lab.dp.flows().unwrap();
    flows.drain();

    let (name, peer) = answer(
        &lab.client
            .probe_in_cgroup(cg.path(), &["tcp", "10.96.0.10:80"]),
    );
    assert_eq!(name, "backend-1");
    // The socket was connected to the backend itself: no translation on the wire.
    assert_eq!(peer, "10.244.1.13:8080");
    let (ev, _) = flows.wait_for(Duration::from_secs(2), |e| {
        e.observation == FlowObservation::Socket && e.verdict == FlowVerdict::Translated
    });
    let ev = ev.expect("socket LB flow event");
    assert_eq!((ev.daddr, ev.dport, ev.svc_id), (VIP, 80, 1));

    // Unconnected UDP: sendmsg4 translates, recvmsg4 restores the ClusterIP.
    let (name, peer) = answer(
        &lab.client
            .probe_in_cgroup(cg.path(), &["udp", "10.96.0.10:53"]),
    );
    assert_eq!(name, "backend-2");
    assert_eq!(peer, "10.96.0.10:53", "recvfrom must report the ClusterIP");
    // Connected UDP: connect4 translates, getpeername4 restores the ClusterIP.
    let (name, peer) = answer(
        &lab.client
            .probe_in_cgroup(cg.path(), &["udp", "10.96.0.10:53", "--connected"]),
    );
    assert_eq!(name, "backend-2");
    assert_eq!(
        peer, "10.96.0.10:53",
        "getpeername must report the ClusterIP"
    );

    // No packet carried the ClusterIP, so TC made no service entries.
    let ct = lab.dp.conntrack().unwrap().dump().unwrap();
    assert!(
        !ct.iter().any(|e| e.direction == CtDirection::Service),
        "socket LB flows must not need per-packet DNAT: {ct:?}"
    );
    // A frontend with no backends: connect() is refused at the socket, and
    // the drop is reported with its reason.
    lab.dp
        .services()
        .unwrap()
        .upsert(tcp(90), ServiceId(3), &[], LbAlgorithm::Random)
        .unwrap();
    flows.drain();
    let out = lab
        .client
        .probe_in_cgroup(cg.path(), &["tcp", "10.96.0.10:90"]);
    assert!(!out.status.success(), "no backends: connect must fail");
    let (ev, seen) = flows.wait_for(Duration::from_secs(2), |e| {
        e.observation == FlowObservation::Socket && e.verdict == FlowVerdict::Dropped
    });
    let ev = ev.unwrap_or_else(|| panic!("no socket drop event: {seen:?}"));
    assert_eq!(
        (ev.reason, ev.svc_id, ev.dport),
        (DropReason::NoServiceBackend, 3, 90)
    );

    lab.dp.detach_cgroup(cg.path()).expect("detach");
}

#[test]
fn policy_default_deny_allow_by_identity_and_port_deny_other_identity() {
    let lab = lab();
    let ep = lab.b1.ifindex;
    let mut pol = lab.dp.policy().unwrap();
    // Allow client (1001) to TCP 8080, then enforce: default deny for the rest.
    pol.upsert(
        PolicyKey {
            endpoint: ep,
            identity: lab.client.identity,
            port: 8080,
            proto: Some(Protocol::Tcp),
            direction: Direction::Ingress,
        },
        PolicyEntry {
            action: PolicyAction::Allow,
            rule_id: 11,
        },
    )
    .unwrap();
    pol.set_endpoint(
        ep,
        EndpointPolicy {
            identity: lab.b1.identity,
            ingress_enforced: true,
            egress_enforced: false,
        },
    )
    .unwrap();
    let mut flows = lab.dp.flows().unwrap();
    let before = lab.dp.metrics().unwrap().read().unwrap();

    let (name, _) = answer(&lab.client.probe(&["tcp", "10.244.1.13:8080"]));
    assert_eq!(name, "backend-1", "allowed identity + port passes");

    let out = lab.other.probe(&["tcp", "10.244.1.13:8080"]);
    assert!(!out.status.success(), "identity 1002 must be dropped");
    let (ev, seen) = flows.wait_for(Duration::from_secs(2), |e| {
        e.verdict == FlowVerdict::Dropped && e.ifindex == ep && e.dport == 8080
    });
    let ev = ev.unwrap_or_else(|| panic!("no drop event; saw {seen:?}"));
    assert_eq!(ev.reason, DropReason::PolicyDefaultDeny);
    assert_eq!(ev.src_identity, 1002);
    assert_eq!(ev.dst_identity, 2001);
    assert_eq!(ev.observation, FlowObservation::ToPod);

    // Same identity, another port: not allowed either (UDP 8080).
    let out = lab.client.probe(&["udp", "10.244.1.13:8080"]);
    assert!(!out.status.success(), "UDP was not allowed");

    // An explicit deny rule gives its own reason and rule id.
    pol.upsert(
        PolicyKey {
            endpoint: ep,
            identity: lab.other.identity,
            port: 0,
            proto: None,
            direction: Direction::Ingress,
        },
        PolicyEntry {
            action: PolicyAction::Deny,
            rule_id: 22,
        },
    )
    .unwrap();
    flows.drain();
    let out = lab.other.probe(&["tcp", "10.244.1.13:8080"]);
    assert!(!out.status.success());
    let (ev, seen) = flows.wait_for(Duration::from_secs(2), |e| {
        e.verdict == FlowVerdict::Dropped && e.ifindex == ep && e.dport == 8080
    });
    let ev = ev.unwrap_or_else(|| panic!("no drop event; saw {seen:?}"));
    assert_eq!(ev.reason, DropReason::PolicyDenied);
    assert_eq!(ev.rule_id, 22);

    let after = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        after.packets(DropReason::PolicyDefaultDeny)
            > before.packets(DropReason::PolicyDefaultDeny),
        "default-deny counter: {after:?}"
    );
    assert!(
        after.packets(DropReason::PolicyDenied) > before.packets(DropReason::PolicyDenied),
        "deny counter: {after:?}"
    );
    // Backend-2 is not selected by any policy: everyone still reaches it.
    let (name, _) = answer(&lab.other.probe(&["tcp", "10.244.1.14:8080"]));
    assert_eq!(name, "backend-2");
    // Replies to flows the enforced pod opened itself are not dropped.
    lab.other.serve(9000);
    let (name, _) = answer(&lab.b1.probe(&["tcp", "10.244.1.12:9000"]));
    assert_eq!(name, "other");
}

#[test]
fn backend_removal_new_connections_avoid_it() {
    let lab = lab();
    service(
        &lab.dp,
        1,
        tcp(80),
        &[&lab.b1, &lab.b2],
        8080,
        LbAlgorithm::Random,
    );
    let mut svc = lab.dp.services().unwrap();
    let entry = svc.get(tcp(80)).unwrap().unwrap();
    assert_eq!(entry.backends.len(), 2);
    // Remove backend-1 from the service (the reconciler's order: slots, then backend).
    svc.upsert(
        tcp(80),
        ServiceId(1),
        &[entry.backends[1]],
        LbAlgorithm::Random,
    )
    .unwrap();
    lab.dp
        .backends()
        .unwrap()
        .delete(entry.backends[0])
        .unwrap();
    for _ in 0..15 {
        let (name, _) = answer(&lab.client.probe(&["tcp", "10.96.0.10:80"]));
        assert_eq!(
            name, "backend-2",
            "removed backend must not get new connections"
        );
    }
    // No backends: connections fail and the drop is counted with its reason.
    svc.upsert(tcp(80), ServiceId(1), &[], LbAlgorithm::Random)
        .unwrap();
    let out = lab.client.probe(&["tcp", "10.96.0.10:80"]);
    assert!(!out.status.success());
    let m = lab.dp.metrics().unwrap().read().unwrap();
    assert!(m.packets(DropReason::NoServiceBackend) > 0, "{m:?}");
}

#[test]
fn established_connection_keeps_its_backend_when_removed_from_the_service() {
    use std::io::{BufRead, BufReader, Write};
    let lab = lab();
    // Port 8081 of every backend echoes lines prefixed with the pod name.
    service(&lab.dp, 1, tcp(81), &[&lab.b1], 8081, LbAlgorithm::Random);
    let stream = mesh_bpf::netns::in_netns(
        &std::path::PathBuf::from("/var/run/netns").join(lab.client.ns.name()),
        || {
            std::net::TcpStream::connect_timeout(
                &"10.96.0.10:81".parse().unwrap(),
                Duration::from_secs(2),
            )
        },
    )
    .unwrap()
    .expect("connect through TC");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    writeln!(w, "one").unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "backend-1 one");

    // The service now has only backend-2 (new ids, so backend-1's entry stays).
    let mut b = lab.dp.backends().unwrap();
    b.upsert(
        BackendId(50),
        Backend {
            addr: lab.b2.ip,
            port: 8081,
            proto: Protocol::Tcp,
            cluster_id: 1,
        },
    )
    .unwrap();
    lab.dp
        .services()
        .unwrap()
        .upsert(tcp(81), ServiceId(1), &[BackendId(50)], LbAlgorithm::Random)
        .unwrap();
    // Documented behaviour: conntrack keeps the established flow on its
    // backend while the backend entry exists...
    line.clear();
    writeln!(w, "two").unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "backend-1 two",
        "established flow stays on its backend"
    );
    // ...while new connections go to the remaining backend.
    let fresh = mesh_bpf::netns::in_netns(
        &std::path::PathBuf::from("/var/run/netns").join(lab.client.ns.name()),
        || {
            std::net::TcpStream::connect_timeout(
                &"10.96.0.10:81".parse().unwrap(),
                Duration::from_secs(2),
            )
        },
    )
    .unwrap()
    .expect("new connection");
    fresh
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut fw = fresh.try_clone().unwrap();
    let mut fr = BufReader::new(fresh);
    line.clear();
    writeln!(fw, "three").unwrap();
    fr.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "backend-2 three");
}

#[test]
fn maglev_service_uses_the_generated_table() {
    let lab = lab();
    service(
        &lab.dp,
        1,
        tcp(80),
        &[&lab.b1, &lab.b2],
        8080,
        LbAlgorithm::Maglev,
    );
    let svc = lab.dp.services().unwrap();
    let entry = svc.get(tcp(80)).unwrap().unwrap();
    assert_eq!(entry.algorithm, LbAlgorithm::Maglev);
    let table = svc
        .maglev_table(ServiceId(1))
        .unwrap()
        .expect("maglev table");
    let backends = lab.dp.backends().unwrap();
    let addressed: Vec<(BackendId, Backend)> = entry
        .backends
        .iter()
        .map(|id| (*id, backends.get(*id).unwrap().expect("backend")))
        .collect();
    assert_eq!(table, mesh_bpf::maglev::table(&addressed, 16381));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (name, _) = answer(&lab.client.probe(&["tcp", "10.96.0.10:80"]));
        seen.insert(name);
    }
    assert_eq!(seen.len(), 2, "flows hash over both backends: {seen:?}");
}

#[test]
fn restart_keeps_maps_and_attachments_and_reattach_is_idempotent() {
    let Lab {
        _dir: dir,
        mut dp,
        node,
        client,
        other,
        b1,
        b2,
    } = lab();
    let cg = Cgroup::new();
    dp.attach_cgroup(cg.path()).unwrap();
    service(&dp, 1, tcp(80), &[&b1], 8080, LbAlgorithm::Random);
    let before = mesh_bpf::dump(dir.path()).unwrap();
    assert_eq!(before.services.len(), 1);
    assert_eq!(before.ipcache.len(), 4);

    // An established connection opened through TC (ClusterIP) before the restart.
    let stream = mesh_bpf::netns::in_netns(
        &std::path::PathBuf::from("/var/run/netns").join(client.ns.name()),
        || {
            std::net::TcpStream::connect_timeout(
                &"10.96.0.10:80".parse().unwrap(),
                Duration::from_secs(2),
            )
        },
    )
    .unwrap()
    .expect("connect before restart");

    // The agent process "exits": all its fds close; pinned maps and links stay.
    drop(dp);
    let (name, _) = answer(&client.probe(&["tcp", "10.96.0.10:80"]));
    assert_eq!(name, "backend-1", "TC path works with no loader alive");
    let (name, peer) = answer(&client.probe_in_cgroup(cg.path(), &["tcp", "10.96.0.10:80"]));
    assert_eq!(
        (name.as_str(), peer.as_str()),
        ("backend-1", "10.244.1.13:8080"),
        "socket LB works with no loader alive"
    );

    // Restart: load again, re-attach everything (idempotent), state unchanged.
    let mut dp = Datapath::load(dir.path()).unwrap();
    node.attach(&mut dp, &[&client, &other, &b1, &b2]);
    node.attach(&mut dp, &[&client, &other, &b1, &b2]);
    dp.attach_cgroup(cg.path()).unwrap();
    dp.attach_cgroup(cg.path()).unwrap();
    let after = mesh_bpf::dump(dir.path()).unwrap();
    assert_eq!(
        (
            &after.services,
            &after.backends,
            &after.ipcache,
            &after.endpoints,
            &after.policy
        ),
        (
            &before.services,
            &before.backends,
            &before.ipcache,
            &before.endpoints,
            &before.policy
        ),
        "no flush on restart: state identical"
    );
    assert!(
        after.conntrack_entries >= before.conntrack_entries,
        "conntrack kept"
    );
    let links: Vec<_> = std::fs::read_dir(dir.path().join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        links.len(),
        8 + 4,
        "one pinned link per hook, no duplicates: {links:?}"
    );

    // The pre-restart connection still gets the backend's answer (reverse NAT via CT).
    let mut buf = String::new();
    let mut s = stream;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    std::io::Read::read_to_string(&mut s, &mut buf).expect("read on established connection");
    assert_eq!(buf.trim(), "backend-1");

    let (name, _) = answer(&client.probe(&["tcp", "10.96.0.10:80"]));
    assert_eq!(name, "backend-1");
    let (name, _) = answer(&client.probe_in_cgroup(cg.path(), &["tcp", "10.96.0.10:80"]));
    assert_eq!(name, "backend-1");

    // Detach removes the attachments: the cgroup client now reaches the
    // ClusterIP only through TC (the socket sees the ClusterIP as peer).
    dp.detach_cgroup(cg.path()).unwrap();
    // The kernel releases an unpinned link asynchronously: allow it a moment.
    eventually("socket LB detached", || {
        let (_, peer) = answer(&client.probe_in_cgroup(cg.path(), &["tcp", "10.96.0.10:80"]));
        peer == "10.96.0.10:80"
    });
    mesh_bpf::netns::in_netns(&node.netns_path(), || dp.detach_interface(&client.host_if))
        .unwrap()
        .unwrap();
    let links = std::fs::read_dir(dir.path().join("links")).unwrap().count();
    assert_eq!(links, 6, "client's two TC links removed");

    // A pod deleted while no agent ran: its veth is gone, its pins are pruned.
    let other_if = other.host_if.clone();
    drop(other);
    // Namespace teardown (and with it the veth pair) is asynchronous.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node
        .ns
        .run("ip", &["link", "show", &other_if])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{other_if} not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pruned = mesh_bpf::netns::in_netns(&node.netns_path(), || dp.prune_stale_interfaces())
        .unwrap()
        .unwrap();
    assert_eq!(pruned, vec![other_if]);
    let links = std::fs::read_dir(dir.path().join("links")).unwrap().count();
    assert_eq!(links, 4, "only the live pods' links remain");
}

#[test]
fn nodeport_from_another_node_reaches_a_local_backend() {
    let mut lab = lab();
    // Two nodes on an underlay bridge of their own; the other node is a
    // namespace with only the underlay subnet routed (no default route).
    let underlay = Bridge::new();
    underlay.attach(&lab.node.ns, "eth0", "192.168.77.1/24");
    let other_node = NetNs::new("nd");
    underlay.attach(&other_node, "eth0", "192.168.77.2/24");
    lab.b1.ns.run_ok(
        "ip",
        &[
            "route",
            "add",
            "192.168.77.0/24",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ],
    );
    let path = lab.node.netns_path();
    mesh_bpf::netns::in_netns(&path, || lab.dp.attach_node_interface("eth0"))
        .unwrap()
        .expect("attach NodePort program");
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    for (id, proto) in [(7, Protocol::Tcp), (8, Protocol::Udp)] {
        let frontend = Frontend {
            addr: node_ip,
            port: 30080,
            proto,
        };
        service(&lab.dp, id, frontend, &[&lab.b1], 8080, LbAlgorithm::Random);
    }
    let probe = env!("CARGO_BIN_EXE_mesh-bpf-probe");
    for mode in ["tcp", "udp"] {
        let out = other_node.run(probe, &[mode, "192.168.77.1:30080"]);
        let (name, peer) = answer(&out);
        assert_eq!(
            name, "backend-1",
            "{mode} NodePort reaches the local backend"
        );
        assert_eq!(
            peer, "192.168.77.1:30080",
            "{mode} reply comes from the node address"
        );
    }
    let ct = lab.dp.conntrack().unwrap().dump().unwrap();
    assert!(
        ct.iter().any(|e| e.direction == CtDirection::NodePort
            && e.saddr == Ipv4Addr::new(192, 168, 77, 2)
            && e.daddr == lab.b1.ip),
        "{ct:?}"
    );
    // Traffic to the node that is not a NodePort is untouched.
    other_node.run_ok("ping", &["-c", "1", "-W", "2", "192.168.77.1"]);
    mesh_bpf::netns::in_netns(&path, || lab.dp.detach_node_interface("eth0"))
        .unwrap()
        .unwrap();
    eventually("NodePort detached", || {
        !other_node
            .run(probe, &["tcp", "192.168.77.1:30080"])
            .status
            .success()
    });
}

/// Which backends answered `n` TCP connections from the client to `addr`
/// (in the socket LB's cgroup when `cg` is given, else through TC only).
fn answered(lab: &Lab, cg: Option<&std::path::Path>, addr: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let out = match cg {
                Some(cg) => lab.client.probe_in_cgroup(cg, &["tcp", addr]),
                None => lab.client.probe(&["tcp", addr]),
            };
            answer(&out).0
        })
        .collect()
}

#[test]
fn client_ip_session_affinity_keeps_a_client_on_one_backend_through_both_paths() {
    let mut lab = lab();
    let cg = Cgroup::new();
    lab.dp.attach_cgroup(cg.path()).expect("attach cgroup");
    service(
        &lab.dp,
        1,
        tcp(80),
        &[&lab.b1, &lab.b2],
        8080,
        LbAlgorithm::Random,
    );
    let distinct = |v: &[String]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    // The control: without affinity 20 connections reach both backends.
    let spread = answered(&lab, Some(cg.path()), "10.96.0.10:80", 20);
    assert_eq!(distinct(&spread), 2, "{spread:?}");

    let mut services = lab.dp.services().unwrap();
    services.set_affinity(tcp(80), Some(60)).unwrap();
    assert_eq!(
        services.get(tcp(80)).unwrap().unwrap().affinity_timeout,
        Some(60)
    );
    // Socket LB (client = its network namespace) and TC (client = its address).
    for (path, cg) in [("socket LB", Some(cg.path())), ("TC", None)] {
        let sticky = answered(&lab, cg, "10.96.0.10:80", 20);
        assert_eq!(
            distinct(&sticky),
            1,
            "{path}: one backend for one client: {sticky:?}"
        );
    }
    // Backend updates keep affinity on; a backend leaving the service is
    // never chosen again, affinity or not.
    let pinned = answered(&lab, Some(cg.path()), "10.96.0.10:80", 1).remove(0);
    let keep_id = if pinned == "backend-1" { 102 } else { 101 };
    services
        .upsert(
            tcp(80),
            ServiceId(1),
            &[BackendId(keep_id)],
            LbAlgorithm::Random,
        )
        .unwrap();
    assert_eq!(
        services.get(tcp(80)).unwrap().unwrap().affinity_timeout,
        Some(60)
    );
    let moved = answered(&lab, Some(cg.path()), "10.96.0.10:80", 5);
    assert!(
        moved.iter().all(|n| *n != pinned),
        "{pinned} left the service: {moved:?}"
    );
    // Clearing affinity spreads again.
    services
        .upsert(
            tcp(80),
            ServiceId(1),
            &[BackendId(101), BackendId(102)],
            LbAlgorithm::Random,
        )
        .unwrap();
    services.set_affinity(tcp(80), None).unwrap();
    assert_eq!(
        services.get(tcp(80)).unwrap().unwrap().affinity_timeout,
        None
    );
    let spread = answered(&lab, Some(cg.path()), "10.96.0.10:80", 20);
    assert_eq!(distinct(&spread), 2, "{spread:?}");
    // Maglev with affinity hashes the client: sticky as well.
    services
        .upsert(
            tcp(80),
            ServiceId(1),
            &[BackendId(101), BackendId(102)],
            LbAlgorithm::Maglev,
        )
        .unwrap();
    services.set_affinity(tcp(80), Some(60)).unwrap();
    let sticky = answered(&lab, Some(cg.path()), "10.96.0.10:80", 20);
    assert_eq!(
        distinct(&sticky),
        1,
        "Maglev: one backend for one client: {sticky:?}"
    );
    // A zero timeout is refused.
    assert!(services.set_affinity(tcp(80), Some(0)).is_err());
    lab.dp.detach_cgroup(cg.path()).expect("detach");
}

/// Strict-mode encryption on real packets. The node has two ways to the
/// other node's pods: a "tunnel" link (a veth standing in for the WireGuard
/// device: the datapath only compares egress ifindexes) and the underlay
/// bridge. While the route uses the tunnel, pod traffic passes; when the
/// route moves to the underlay (what a removed peer does), the packets are
/// dropped in `from_pod` with reason EncryptionRequired (counter and flow
/// event), none reaches the underlay; with enforcement off the same packets
/// cross the underlay in clear (so the capture check can fail).
#[test]
fn strict_mode_drops_pod_traffic_that_would_leave_outside_the_tunnel() {
    const MARKER_HEX: &str = "6d657368776f726b2d73656372657421";
    const MARKER: &[u8] = b"meshwork-secret!";
    let lab = lab();
    let underlay = Bridge::new();
    underlay.attach(&lab.node.ns, "eth0", "192.168.77.1/24");
    let other = NetNs::new("nd");
    underlay.attach(&other, "eth0", "192.168.77.2/24");
    mesh_testbed::veth(&lab.node.ns, "tun0", &other, "tun0");
    lab.node.ns.addr("tun0", "192.168.78.1/30");
    other.addr("tun0", "192.168.78.2/30");
    // The remote pod, and the way back to this node's pods.
    other.run_ok("ip", &["addr", "add", "10.245.0.10/32", "dev", "lo"]);
    other.run_ok("ip", &["link", "set", "lo", "up"]);
    other.run_ok(
        "ip",
        &["route", "add", "10.244.1.0/24", "via", "192.168.78.1"],
    );
    let set_route = |via: &str| {
        lab.node
            .ns
            .run_ok("ip", &["route", "replace", "10.245.0.0/24", "via", via]);
    };
    set_route("192.168.78.2");

    let tun_ifindex: u32 = lab
        .node
        .ns
        .run_ok("cat", &["/sys/class/net/tun0/ifindex"])
        .trim()
        .parse()
        .unwrap();
    let mut enc = lab.dp.encryption().unwrap();
    assert_eq!(enc.config().unwrap(), mesh_bpf::EncryptConfig::default());
    let desired = [(
        (Ipv4Addr::new(10, 245, 0, 0), 24),
        Ipv4Addr::new(192, 168, 77, 2),
    )]
    .into_iter()
    .collect();
    let sync = enc.sync(&desired, true).unwrap();
    assert_eq!(sync.upserted.len(), 1);
    assert!(
        enc.sync(&desired, true).unwrap().upserted.is_empty(),
        "sync is idempotent"
    );
    assert!(enc.covers(Ipv4Addr::new(10, 245, 0, 10)).unwrap());
    enc.set_config(mesh_bpf::EncryptConfig {
        strict: true,
        wg_ifindex: tun_ifindex,
    })
    .unwrap();

    let ping = |pod: &Pod| {
        pod.ns
            .run(
                "ping",
                &[
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    "-p",
                    MARKER_HEX,
                    "10.245.0.10",
                ],
            )
            .status
            .success()
    };
    assert!(ping(&lab.client), "through the tunnel: allowed");

    // The route leaves the tunnel: dropped, counted, reported, nothing on
    // the underlay.
    set_route("192.168.77.2");
    let mut flows = lab.dp.flows().unwrap();
    flows.drain();
    let before = lab.dp.metrics().unwrap().read().unwrap();
    let cap = common::Capture::start(underlay.ns());
    assert!(!ping(&lab.client), "strict mode must drop it");
    let pcap = cap.stop();
    assert!(
        !pcap.windows(MARKER.len()).any(|w| w == MARKER),
        "the marker reached the underlay"
    );
    let after = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        after.packets(DropReason::EncryptionRequired)
            >= before.packets(DropReason::EncryptionRequired) + 3,
        "{after:?}"
    );
    let (ev, seen) = flows.wait_for(Duration::from_secs(2), |e| {
        e.reason == DropReason::EncryptionRequired
    });
    let ev = ev.unwrap_or_else(|| panic!("no EncryptionRequired event; saw {seen:?}"));
    assert_eq!(ev.verdict, FlowVerdict::Dropped);
    assert_eq!(ev.observation, FlowObservation::FromPod);
    assert_eq!(ev.saddr, lab.client.ip);
    assert_eq!(ev.daddr, Ipv4Addr::new(10, 245, 0, 10));
    assert_eq!(ev.ifindex, lab.client.ifindex);
    assert_eq!(DropReason::EncryptionRequired.name(), "encryption_required");

    // No route at all: dropped with the same reason.
    lab.node.ns.run_ok("ip", &["route", "del", "10.245.0.0/24"]);
    let n = lab.dp.metrics().unwrap().read().unwrap();
    assert!(!ping(&lab.client));
    let m = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        m.packets(DropReason::EncryptionRequired) > n.packets(DropReason::EncryptionRequired),
        "{m:?}"
    );

    // Addresses outside the set are not affected: node-local pods still talk.
    let (name, _) = answer(&lab.client.probe(&["tcp", "10.244.1.13:8080"]));
    assert_eq!(name, "backend-1");

    // Control: enforcement off, the same packets cross the underlay in clear.
    set_route("192.168.77.2");
    other.run_ok(
        "ip",
        &["route", "replace", "10.244.1.0/24", "via", "192.168.77.1"],
    );
    enc.set_config(mesh_bpf::EncryptConfig {
        strict: false,
        wg_ifindex: tun_ifindex,
    })
    .unwrap();
    let cap = common::Capture::start(underlay.ns());
    assert!(ping(&lab.client), "enforcement off: native routing");
    let pcap = cap.stop();
    assert!(
        pcap.windows(MARKER.len()).any(|w| w == MARKER),
        "without strict mode the marker crosses the underlay"
    );
    // Unlisting works and is idempotent.
    let sync = enc.sync(&Default::default(), true).unwrap();
    assert_eq!(sync.removed.len(), 1);
    assert!(!enc.covers(Ipv4Addr::new(10, 245, 0, 10)).unwrap());
}

/// A pod sending TCP SYNs and UDP with another pod's source address (added
/// to its own interface, as a compromised pod can) towards a backend whose
/// policy admits only the impersonated pod: nothing arrives in the
/// backend's namespace, and the drops are counted as source_spoofed. The
/// impersonated pod itself still gets through.
#[test]
fn a_pod_forging_an_admitted_pods_address_reaches_nothing() {
    let lab = lab();
    let ep = lab.b1.ifindex;
    let mut pol = lab.dp.policy().unwrap();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        pol.upsert(
            PolicyKey {
                endpoint: ep,
                identity: lab.client.identity,
                port: 8080,
                proto: Some(proto),
                direction: Direction::Ingress,
            },
            PolicyEntry {
                action: PolicyAction::Allow,
                rule_id: 31,
            },
        )
        .unwrap();
    }
    pol.set_endpoint(
        ep,
        EndpointPolicy {
            identity: lab.b1.identity,
            ingress_enforced: true,
            egress_enforced: false,
        },
    )
    .unwrap();
    let (name, _) = answer(&lab.client.probe(&["tcp", "10.244.1.13:8080"]));
    assert_eq!(name, "backend-1", "the admitted pod gets through");
    let before = lab.dp.metrics().unwrap().read().unwrap();

    let forged = lab.client.ip.to_string();
    lab.other.ns.run_ok(
        "ip",
        &["addr", "add", &format!("{forged}/32"), "dev", "eth0"],
    );
    let cap = Capture::start(&lab.b1.ns, "eth0");
    let script = format!(
        "import socket\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         u.bind(('{forged}', 0))\n\
         for _ in range(3): u.sendto(b'forged', ('10.244.1.13', 8080))\n\
         t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
         t.bind(('{forged}', 0)); t.settimeout(2)\n\
         try:\n    t.connect(('10.244.1.13', 8080)); print('connected')\n\
         except OSError as e:\n    print('refused', e)\n"
    );
    let out = lab.other.ns.run("python3", &["-c", &script]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let cap = cap.stop();
    assert!(
        !said.contains("connected"),
        "a forged SYN was answered: {said}"
    );
    assert_eq!(
        cap.count(&format!("src host {forged} and port 8080")),
        0,
        "forged packets reached the backend's namespace"
    );
    let after = lab.dp.metrics().unwrap().read().unwrap();
    let spoofed =
        after.packets(DropReason::SourceSpoofed) - before.packets(DropReason::SourceSpoofed);
    assert!(
        spoofed >= 4,
        "3 datagrams and at least one SYN counted: {spoofed}"
    );
    // The real pod is unaffected.
    let (name, _) = answer(&lab.client.probe(&["udp", "10.244.1.13:8080"]));
    assert_eq!(name, "backend-1");
}

/// A UDP datagram larger than the MTU, under an ingress policy that admits
/// the client on its port only: the kernel fragments it, and every fragment
/// is judged by the datagram's port (the later ones have none of their
/// own), so it arrives whole. Before fragments were tracked the later ones
/// were judged as port 0 and dropped: the datagram never arrived.
#[test]
fn a_fragmented_datagram_passes_a_port_policy_whole() {
    let lab = lab();
    let ep = lab.b1.ifindex;
    let mut pol = lab.dp.policy().unwrap();
    pol.upsert(
        PolicyKey {
            endpoint: ep,
            identity: lab.client.identity,
            port: 9090,
            proto: Some(Protocol::Udp),
            direction: Direction::Ingress,
        },
        PolicyEntry {
            action: PolicyAction::Allow,
            rule_id: 41,
        },
    )
    .unwrap();
    pol.set_endpoint(
        ep,
        EndpointPolicy {
            identity: lab.b1.identity,
            ingress_enforced: true,
            egress_enforced: false,
        },
    )
    .unwrap();
    let mut receiver = lab
        .b1
        .ns
        .command("python3")
        .args([
            "-c",
            "import socket\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             u.bind(('0.0.0.0', 9090)); u.settimeout(5)\n\
             print('ready', flush=True)\n\
             try:\n    print(len(u.recv(65535)))\n\
             except OSError as e:\n    print('nothing', e)\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(receiver.stdout.take().unwrap());
    lab.b1.ns.adopt(receiver);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let before = lab.dp.metrics().unwrap().read().unwrap();
    lab.client.ns.run_ok(
        "python3",
        &[
            "-c",
            "import socket\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             u.sendto(b'x' * 4000, ('10.244.1.13', 9090))\n",
        ],
    );
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "4000",
        "the fragmented datagram did not arrive whole"
    );
    let after = lab.dp.metrics().unwrap().read().unwrap();
    assert_eq!(
        after.packets(DropReason::FragmentUnknown) - before.packets(DropReason::FragmentUnknown),
        0
    );
    assert_eq!(
        after.packets(DropReason::PolicyDefaultDeny)
            - before.packets(DropReason::PolicyDefaultDeny),
        0,
        "a fragment was judged without its port"
    );
}

/// Starts the probe server in `ns` answering `<name>@<the source it saw>`,
/// and waits until it listens.
fn serve_with_peer(ns: &NetNs, name: &str, port: u16) {
    ns.spawn(
        env!("CARGO_BIN_EXE_mesh-bpf-probe"),
        &[
            "serve",
            "--port",
            &port.to_string(),
            "--name",
            name,
            "--with-peer",
        ],
    );
    eventually("server listening", || {
        !ns.run_ok("ss", &["-Hltn", &format!("sport = :{port}")])
            .trim()
            .is_empty()
    });
}

/// "<name>@<addr>:<port>" as the server saw it.
fn seen_by(out: &std::process::Output) -> (String, Ipv4Addr, u16) {
    let (payload, _) = answer(out);
    let (name, peer) = payload.split_once('@').expect("name@peer");
    let peer: std::net::SocketAddrV4 = peer.parse().expect("peer address");
    (name.to_string(), *peer.ip(), peer.port())
}

#[test]
fn masquerade_gives_outside_destinations_the_node_address_and_keeps_pod_addresses_inside() {
    let mut lab = lab();
    // The underlay: this node, another node (exempt, routes the pod CIDR
    // back), and an outside host that knows nothing of pod addresses.
    let underlay = Bridge::new();
    underlay.attach(&lab.node.ns, "eth0", "192.168.77.1/24");
    let peer_node = NetNs::new("nd");
    underlay.attach(&peer_node, "eth0", "192.168.77.2/24");
    peer_node.run_ok(
        "ip",
        &["route", "add", "10.244.1.0/24", "via", "192.168.77.1"],
    );
    let outside = NetNs::new("out");
    underlay.attach(&outside, "eth0", "192.168.77.9/24");
    lab.client.ns.run_ok(
        "ip",
        &["route", "add", "192.168.77.0/24", "via", "169.254.1.1"],
    );
    serve_with_peer(&outside, "outside", 8080);
    serve_with_peer(&outside, "outside", 8090);
    serve_with_peer(&peer_node, "peer", 8080);
    let path = lab.node.netns_path();
    mesh_bpf::netns::in_netns(&path, || lab.dp.attach_node_interface("eth0"))
        .unwrap()
        .expect("attach node programs");

    // Off: the outside host cannot answer a pod address.
    let off = lab.client.probe(&["tcp", "192.168.77.9:8080"]);
    assert!(!off.status.success(), "reached outside without masquerade");

    let mut masq = lab.dp.masquerade().unwrap();
    let exempt = [
        (Ipv4Addr::new(10, 244, 0, 0), 16),
        (Ipv4Addr::new(192, 168, 77, 2), 32),
    ];
    masq.sync_exempt(&exempt.into_iter().collect()).unwrap();
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    let config = mesh_bpf::MasqueradeConfig {
        node_addr: node_ip,
        masquerade: true,
        pod_cidr: (Ipv4Addr::new(10, 244, 1, 0), 24),
        ports: 61000..=65535,
    };
    masq.set_config(Some(&config)).unwrap();
    assert_eq!(masq.config().unwrap(), Some(config.clone()));

    for mode in ["tcp", "udp"] {
        let (name, addr, port) = seen_by(&lab.client.probe(&[mode, "192.168.77.9:8080"]));
        assert_eq!(name, "outside");
        assert_eq!(addr, node_ip, "{mode}: the outside host sees the node");
        assert!((61000..=65535).contains(&port), "{mode}: port {port}");
    }
    let snat = masq.translations().unwrap();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        assert!(
            snat.iter().any(|e| e.proto == proto
                && e.original.0 == lab.client.ip
                && e.translated.0 == node_ip
                && e.destination == (Ipv4Addr::new(192, 168, 77, 9), 8080)
                && e.replied),
            "{proto:?}: {snat:?}"
        );
    }
    // Operators see the table fill and every translation.
    let usage = mesh_bpf::usage(lab.dp.pin_root()).unwrap();
    let snat = usage.iter().find(|u| u.name == "mw_snat").unwrap();
    assert!(snat.entries >= 4, "two flows, two entries each: {snat:?}");
    let dump = mesh_bpf::dump(lab.dp.pin_root()).unwrap();
    assert_eq!(dump.masquerade, Some(config.clone()));
    assert!(
        dump.snat.iter().any(|e| e.original.0 == lab.client.ip),
        "{:?}",
        dump.snat
    );
    // ping: an ICMP echo is masqueraded too (its identifier claimed like a
    // port) and the reply finds its way back.
    lab.client
        .ns
        .run_ok("ping", &["-c", "2", "-W", "2", "192.168.77.9"]);
    assert!(
        masq.translations()
            .unwrap()
            .iter()
            .any(|e| e.proto == Protocol::Icmp && e.original.0 == lab.client.ip && e.replied),
        "an ICMP echo translation"
    );
    // An exempt destination (another node) sees the pod.
    let (name, addr, _) = seen_by(&lab.client.probe(&["tcp", "192.168.77.2:8080"]));
    assert_eq!((name.as_str(), addr), ("peer", lab.client.ip));
    // A flow the outside host opens towards the pod is answered by the pod's
    // own address (a reply is never masqueraded).
    outside.run_ok(
        "ip",
        &["route", "add", "10.244.1.0/24", "via", "192.168.77.1"],
    );
    lab.client.serve(9090);
    let probe = env!("CARGO_BIN_EXE_mesh-bpf-probe");
    let (name, peer) = answer(&outside.run(probe, &["udp", "10.244.1.11:9090"]));
    assert_eq!(
        (name.as_str(), peer.as_str()),
        ("client", "10.244.1.11:9090")
    );

    // One port in the range: the second flow to a destination finds none
    // free (a destination no earlier flow used, so 61000 is free for the
    // first) and is dropped with its reason; the first keeps working.
    let one = mesh_bpf::MasqueradeConfig {
        ports: 61000..=61000,
        ..config
    };
    masq.set_config(Some(&one)).unwrap();
    let first = lab.client.probe(&["udp", "192.168.77.9:8090"]);
    assert_eq!(seen_by(&first).2, 61000);
    let before = lab.dp.metrics().unwrap().read().unwrap();
    let second = lab.client.probe(&["udp", "192.168.77.9:8090"]);
    assert!(!second.status.success(), "a second flow got the only port");
    let after = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        after.packets(DropReason::SnatPortsExhausted)
            > before.packets(DropReason::SnatPortsExhausted),
        "{after:?}"
    );
    // Off again: new flows leave untranslated (the outside host routes pod
    // addresses by now, so it answers the pod itself).
    masq.set_config(None).unwrap();
    let (_, addr, _) = seen_by(&lab.client.probe(&["tcp", "192.168.77.9:8080"]));
    assert_eq!(addr, lab.client.ip);
}

#[test]
fn nodeport_to_a_backend_on_another_node_is_snated_and_answered_through_this_node() {
    let mut lab = lab();
    // The underlay: this node, a second node which is the backend (a
    // host-network one: a UDP server there answers from this one address),
    // and an outside client on the same segment (so without SNAT the
    // backend would answer it directly, from an address it never spoke to).
    let underlay = Bridge::new();
    underlay.attach(&lab.node.ns, "eth0", "192.168.77.1/24");
    let other_node = NetNs::new("nd");
    underlay.attach(&other_node, "eth0", "192.168.77.2/24");
    let client = NetNs::new("out");
    underlay.attach(&client, "eth0", "192.168.77.9/24");
    // A third "node" behind another interface of this node: a path the
    // node programs cannot SNAT on (as the WireGuard device).
    let side = Bridge::new();
    side.attach(&lab.node.ns, "eth1", "192.168.78.1/24");
    let far_node = NetNs::new("nd");
    side.attach(&far_node, "eth0", "192.168.78.2/24");
    lab.node.ns.run_ok(
        "ip",
        &["route", "add", "10.244.3.0/24", "via", "192.168.78.2"],
    );
    serve_with_peer(&other_node, "remote", 8080);
    let path = lab.node.netns_path();
    mesh_bpf::netns::in_netns(&path, || lab.dp.attach_node_interface("eth0"))
        .unwrap()
        .expect("attach node programs");
    let node_ip = Ipv4Addr::new(192, 168, 77, 1);
    let mut backends = lab.dp.backends().unwrap();
    let mut services = lab.dp.services().unwrap();
    for (id, addr, port) in [
        (1u32, Ipv4Addr::new(192, 168, 77, 2), 30080u16),
        (2, Ipv4Addr::new(10, 244, 3, 5), 30090),
    ] {
        for (proto, offset) in [(Protocol::Tcp, 0), (Protocol::Udp, 100)] {
            let bid = BackendId(id * 10 + offset);
            backends
                .upsert(
                    bid,
                    Backend {
                        addr,
                        port: 8080,
                        proto,
                        cluster_id: 1,
                    },
                )
                .unwrap();
            let frontend = Frontend {
                addr: node_ip,
                port,
                proto,
            };
            services
                .upsert(
                    frontend,
                    ServiceId(id * 10 + offset),
                    &[bid],
                    LbAlgorithm::Random,
                )
                .unwrap();
        }
    }
    // NodePort SNAT without masquerade: the node's address and ports, and
    // pods keep theirs.
    let mut masq = lab.dp.masquerade().unwrap();
    masq.set_config(Some(&mesh_bpf::MasqueradeConfig {
        node_addr: node_ip,
        masquerade: false,
        pod_cidr: (Ipv4Addr::new(10, 244, 1, 0), 24),
        ports: 61000..=65535,
    }))
    .unwrap();
    let probe = env!("CARGO_BIN_EXE_mesh-bpf-probe");
    for mode in ["tcp", "udp"] {
        let out = client.run(probe, &[mode, "192.168.77.1:30080"]);
        let (payload, peer) = answer(&out);
        assert_eq!(
            peer, "192.168.77.1:30080",
            "{mode}: the reply comes from the NodePort"
        );
        let (name, seen) = payload.split_once('@').expect("name@peer");
        let seen: std::net::SocketAddrV4 = seen.parse().unwrap();
        assert_eq!(name, "remote");
        assert_eq!(*seen.ip(), node_ip, "{mode}: the backend saw this node");
        assert!((61000..=65535).contains(&seen.port()), "{mode}: {seen}");
    }
    let ct = lab.dp.conntrack().unwrap().dump().unwrap();
    assert!(
        ct.iter().any(|e| e.direction == CtDirection::NodePort
            && e.saddr == Ipv4Addr::new(192, 168, 77, 9)
            && e.daddr == Ipv4Addr::new(192, 168, 77, 2)),
        "{ct:?}"
    );
    // Through the other interface: dropped with its reason, not sent off
    // to be answered from elsewhere.
    let before = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        !client
            .run(probe, &["udp", "192.168.77.1:30090"])
            .status
            .success()
    );
    let after = lab.dp.metrics().unwrap().read().unwrap();
    assert!(
        after.packets(DropReason::NodePortNoSnatPath)
            > before.packets(DropReason::NodePortNoSnatPath),
        "{after:?}"
    );
}
