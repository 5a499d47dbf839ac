//! The guards really create and really remove what they manage.

use mesh_testbed::{BpfDir, Bridge, Cgroup, NetNs, run_ok};

fn netns_list() -> String {
    run_ok("ip", &["netns", "list"])
}

#[test]
fn two_nodes_on_a_bridge_talk_and_everything_is_removed_on_drop() {
    let (names, cg_path, bpf_path);
    {
        let bridge = Bridge::new();
        let a = NetNs::new("a");
        let b = NetNs::new("b");
        bridge.attach(&a, "eth0", "192.0.2.1/24");
        bridge.attach(&b, "eth0", "192.0.2.2/24");
        a.run_ok("ping", &["-c", "1", "-W", "2", "192.0.2.2"]);
        // No default route: nothing in a test namespace can leave the host.
        let routes = a.run_ok("ip", &["route", "show", "default"]);
        assert!(
            routes.trim().is_empty(),
            "unexpected default route: {routes}"
        );
        let pid = a.spawn("sleep", &["600"]);
        let cg = Cgroup::new();
        cg.add(pid);
        let bpf = BpfDir::new();
        names = [
            a.name().to_string(),
            b.name().to_string(),
            bridge.ns().name().to_string(),
        ];
        cg_path = cg.path().to_path_buf();
        bpf_path = bpf.path().to_path_buf();
        let list = netns_list();
        assert!(names.iter().all(|n| list.contains(n.as_str())), "{list}");
        assert!(cg_path.exists() && bpf_path.exists());
    }
    let list = netns_list();
    assert!(
        names.iter().all(|n| !list.contains(n.as_str())),
        "namespaces left behind: {list}"
    );
    assert!(
        !cg_path.exists(),
        "cgroup left behind: {}",
        cg_path.display()
    );
    assert!(
        !bpf_path.exists(),
        "bpffs dir left behind: {}",
        bpf_path.display()
    );
}
