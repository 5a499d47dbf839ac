use super::*;

fn bound(name: &str, uid: &str, ip: Option<&str>, ready: bool) -> Bound {
    Bound {
        namespace: "shop".into(),
        name: name.into(),
        uid: uid.into(),
        terminating: false,
        ip: ip.map(str::to_string),
        ready,
        containers: vec![("echo".into(), "mesh-echo".into())],
        ports: vec![POD_PORT],
        host_ports: vec![],
    }
}

fn running(name: &str, uid: &str, ip: Option<&str>) -> Running {
    Running {
        namespace: "shop".into(),
        name: name.into(),
        uid: uid.into(),
        ip: ip.map(str::to_string),
        host_ports: vec![],
    }
}

#[test]
fn the_kubelet_runs_what_is_bound_and_removes_what_is_not() {
    let ip = Some("10.1.1.5");
    let mut terminating = bound("old", "u-old", ip, true);
    terminating.terminating = true;
    for (bound, running, want) in [
        // A new pod starts.
        (
            vec![bound("web", "u1", None, false)],
            vec![],
            vec![Action::Start(bound("web", "u1", None, false))],
        ),
        // Running and reported: nothing to do.
        (
            vec![bound("web", "u1", ip, true)],
            vec![running("web", "u1", ip)],
            vec![],
        ),
        // Running but not reported Ready (restarted kubelet, lost status).
        (
            vec![bound("web", "u1", None, false)],
            vec![running("web", "u1", ip)],
            vec![Action::Report(
                bound("web", "u1", None, false),
                "10.1.1.5".into(),
            )],
        ),
        // Deleted, or being deleted: stopped.
        (
            vec![],
            vec![running("web", "u1", ip)],
            vec![Action::Stop(running("web", "u1", ip))],
        ),
        (
            vec![terminating],
            vec![running("old", "u-old", ip)],
            vec![Action::Stop(running("old", "u-old", ip))],
        ),
        // Deleted and made again under the same name: the old one goes first.
        (
            vec![bound("web", "u2", None, false)],
            vec![running("web", "u1", ip)],
            vec![
                Action::Stop(running("web", "u1", ip)),
                Action::Start(bound("web", "u2", None, false)),
            ],
        ),
        // A start that failed half-way (no address yet) is cleaned up as a stop
        // only when its Pod is gone; otherwise it waits for its record's IP.
        (
            vec![],
            vec![running("web", "u1", None)],
            vec![Action::Stop(running("web", "u1", None))],
        ),
    ] {
        assert_eq!(plan(&bound, &running), want, "{bound:?} / {running:?}");
    }
}

#[test]
fn a_pod_object_reads_as_bound() {
    let pod = serde_json::json!({
        "metadata": {"name": "web-abc12", "namespace": "shop", "uid": "u1"},
        "spec": {"nodeName": "c1-n1", "containers": [{"name": "web", "image": "any",
            "ports": [{"containerPort": 81, "protocol": "UDP", "hostPort": 18081}, {"containerPort": 80}, {"containerPort": 81}]}]},
        "status": {"podIP": "10.1.1.9", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    assert_eq!(
        Bound::of(&pod),
        Some(Bound {
            namespace: "shop".into(),
            name: "web-abc12".into(),
            uid: "u1".into(),
            terminating: false,
            ip: Some("10.1.1.9".into()),
            ready: true,
            containers: vec![("web".into(), "any".into())],
            ports: vec![80, 81],
            host_ports: vec![HostPort {
                host_port: 18081,
                container_port: 81,
                protocol: "udp".into()
            }],
        })
    );
    assert_eq!(
        pod_netns("mwlab", "c1", "shop", "web-abc12"),
        "mwlab-pod-c1-shop-web-abc12"
    );
}
