//! meshctl services, observe and explain: the cross-cluster path, a
//! streamed follow, a service without backends and a stale remote cluster.

use std::time::Duration;

use mesh_e2e::Lab;

use super::helpers::{T, annotate_web, meshctl_typed, meshctl_until};
use super::requests::{ask_until, who_answers};

/// A global service with backends in c1 and c2: `meshctl services` shows
/// both clusters' backends; requests from c1 to it appear in `meshctl
/// observe` with their verdict and cluster; `meshctl explain` passes every
/// hop (WireGuard is off in this lab: skipped, said so) and names what is
/// wrong for a service without backends; every new command's --help runs.
pub(super) fn meshctl_services_observe_and_explain_show_the_cross_cluster_path(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus, ObserveReport, ServicesReport, Verdict};
    for cmd in [
        &["observe", "--help"][..],
        &["services", "--help"],
        &["explain", "--help"],
        &["encryption", "status", "--help"],
    ] {
        let out = lab.meshctl(cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Examples:"),
            "meshctl {cmd:?}: {text}"
        );
    }
    lab.ok(&[
        "pod",
        "add",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1b",
        "--label=app=web",
    ]);
    annotate_web(lab, "lab-c1", "service.meshwork.io/affinity-");
    let services: ServicesReport = meshctl_until(
        lab,
        &["services", "--context", "lab-c1"],
        "shop/web with backends in c1 and c2",
        |r: &ServicesReport, code| {
            code == Some(0)
                && r.services.iter().any(|s| {
                    s.name == "web"
                        && s.backends_by_cluster.get("c1") == Some(&1)
                        && s.backends_by_cluster.get("c2") == Some(&2)
                })
        },
    );
    let web = services.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(
        (
            services.cluster.as_str(),
            web.namespace.as_str(),
            web.affinity.as_str(),
            web.shared
        ),
        ("c1", "shop", "none", true)
    );
    assert!(
        services.services.iter().all(|s| s.name != "internal"),
        "a non-global Service is listed: {services:#?}"
    );
    assert!(services.datapath_node.is_some() && services.unreachable.is_empty());

    // Traffic from c1 to the global service, answered by both clusters.
    let vip = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    ask_until(
        lab,
        &format!("{}:80", vip.trim()),
        "meshctl: both clusters",
        |c| c.keys().map(String::as_str).eq(["c1", "c2"]),
    );
    let observed: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c1",
            "--pod",
            "shop/client",
            "--cluster",
            "c2",
            "--last",
            "50",
        ],
        "a forwarded flow from shop/client to c2",
        |r: &ObserveReport, code| {
            code == Some(0)
                && r.flows.iter().any(|f| {
                    f.verdict == Verdict::Forwarded
                        && f.destination.cluster.as_deref() == Some("c2")
                })
        },
    );
    let f = observed
        .flows
        .iter()
        .find(|f| f.verdict == Verdict::Forwarded && f.destination.cluster.as_deref() == Some("c2"))
        .unwrap();
    assert_eq!(
        (
            f.source.namespace.as_deref(),
            f.source.pod.as_deref(),
            f.source.cluster.as_deref(),
            f.cluster.as_str(),
            f.destination.port
        ),
        (Some("shop"), Some("client"), Some("c1"), "c1", 8080),
        "{f:#?}"
    );
    assert!(f.node.starts_with("c1-"), "{f:#?}");
    // The far end saw it too, with the backend pod named.
    let far: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c2",
            "--pod-namespace",
            "shop",
            "--cluster",
            "c1",
            "--last",
            "50",
        ],
        "c2's agents saw c1's client",
        |r: &ObserveReport, _| {
            r.flows.iter().any(|f| {
                f.source.cluster.as_deref() == Some("c1")
                    && f.destination
                        .pod
                        .as_deref()
                        .is_some_and(|p| p.starts_with("web-"))
            })
        },
    );
    assert!(far.unreachable.is_empty(), "{far:#?}");
    meshctl_observe_follow_streams_new_flows(lab, &format!("{}:80", vip.trim()));

    // explain: every hop of the working path passes.
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/web:80",
        ],
    );
    assert_eq!(code, Some(0), "{ex:#?}");
    assert!(ex.ok, "{ex:#?}");
    let steps: Vec<&str> = ex.hops.iter().map(|h| h.step.as_str()).collect();
    assert_eq!(steps, ["source", "agent", "identity", "service"], "{ex:#?}");
    // Every hop of a working path is ✔ (the identity too: the agent
    // resolved the pod's labels from the mesh feed).
    for h in &ex.hops {
        assert_eq!(h.status, HopStatus::Pass, "{h:#?}");
    }
    assert_eq!(ex.backends.len(), 3, "{ex:#?}");
    for b in &ex.backends {
        assert!(b.ok, "{b:#?}");
        let want: &[&str] = if b.cluster.as_deref() == Some("c2") {
            &[
                "remote cluster",
                "route",
                "egress policy",
                "wireguard",
                "destination",
                "ingress policy",
            ]
        } else {
            &[
                "route",
                "egress policy",
                "wireguard",
                "destination",
                "ingress policy",
            ]
        };
        assert_eq!(
            b.hops.iter().map(|h| h.step.as_str()).collect::<Vec<_>>(),
            want,
            "{b:#?}"
        );
        for h in &b.hops {
            let expected = if h.step == "wireguard" {
                HopStatus::Skip
            } else {
                HopStatus::Pass
            };
            assert_eq!(h.status, expected, "{h:#?}");
        }
        assert!(
            b.pod.as_deref().is_some_and(|p| p.starts_with("shop/web-")),
            "{b:#?}"
        );
    }
    assert_eq!(
        ex.backends
            .iter()
            .filter(|b| b.cluster.as_deref() == Some("c2"))
            .count(),
        2
    );
    assert!(
        !ex.flows.is_empty(),
        "explain shows the last flows: {ex:#?}"
    );
    // The table a person reads: one ✔ line per hop, the verdict last.
    let out = lab.meshctl(&[
        "explain",
        "--context",
        "lab-c1",
        "shop/client",
        "shop/web:80",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("✔ shop/client can reach shop/web:80")),
        "{text}"
    );

    // A destination that does not exist: exit 3, the ✘ hop says why.
    let (bad, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/nowhere:80",
        ],
    );
    assert_eq!(code, Some(3), "{bad:#?}");
    assert!(
        !bad.ok && bad.summary.contains("neither a Service nor a Pod"),
        "{bad:#?}"
    );

    meshctl_explain_and_observe_name_a_service_without_backends(lab);
    meshctl_explain_names_a_stale_remote_cluster(lab);
    lab.ok(&[
        "pod",
        "del",
        "--cluster=c1",
        "--node=c1-n2",
        "--namespace=shop",
        "--name=web-c1b",
    ]);
}

/// Kills a child process when dropped (also when the scenario panics).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `meshctl observe --follow -o json` prints one flow per line as requests
/// happen.
fn meshctl_observe_follow_streams_new_flows(lab: &Lab, addr: &str) {
    use std::io::BufRead as _;
    let mut child = KillOnDrop(
        std::process::Command::new(mesh_e2e::bin("meshctl"))
            .env("KUBECONFIG", lab.kubeconfig())
            .args([
                "observe",
                "--context",
                "lab-c1",
                "--pod",
                "shop/client",
                "--follow",
                "--last",
                "0",
                "-o",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("meshctl observe --follow"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let flow: meshctl::report::FlowRecord = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a followed line is not a flow ({e}): {line}"));
            if tx.send(flow).is_err() {
                return;
            }
        }
    });
    // The follower needs a moment to open its streams.
    std::thread::sleep(Duration::from_millis(500));
    who_answers(lab, addr, 3);
    let flow = rx
        .recv_timeout(T)
        .expect("meshctl observe --follow printed no flow for new requests");
    assert_eq!(
        (flow.source.namespace.as_deref(), flow.source.pod.as_deref()),
        (Some("shop"), Some("client")),
        "{flow:#?}"
    );
}

/// A Service whose selector matches no pod: `meshctl explain` stops at the
/// service hop with "no backends" (exit 3), and the request the client
/// makes anyway shows in `meshctl observe --verdict dropped` with the
/// datapath's reason.
fn meshctl_explain_and_observe_name_a_service_without_backends(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus, ObserveReport, Verdict};
    lab.apply(
        "lab-c1",
        r#"
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
    );
    let ex: ExplainReport = meshctl_until(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/empty",
        ],
        "explain names the missing backends",
        |r: &ExplainReport, code| {
            code == Some(3)
                && r.hops.iter().any(|h| {
                    h.step == "service"
                        && h.status == HopStatus::Fail
                        && h.detail.contains("no backends")
                })
        },
    );
    assert!(!ex.ok && ex.summary.contains("no backends"), "{ex:#?}");
    let vip = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "empty",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let vip = vip.trim().to_string();
    let answers = who_answers(lab, &format!("{vip}:80"), 2);
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    let dropped: ObserveReport = meshctl_until(
        lab,
        &[
            "observe",
            "--context",
            "lab-c1",
            "--pod",
            "shop/client",
            "--verdict",
            "dropped",
            "--last",
            "50",
        ],
        "the dropped request to the empty service",
        |r: &ObserveReport, _| {
            r.flows
                .iter()
                .any(|f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(vip.as_str()))
        },
    );
    let f = dropped
        .flows
        .iter()
        .find(|f| f.destination.ip.map(|i| i.to_string()).as_deref() == Some(vip.as_str()))
        .unwrap();
    assert_eq!(
        (f.verdict, f.drop_reason.as_deref(), f.destination.port),
        (Verdict::Dropped, Some("no_service_backend"), 80),
        "{f:#?}"
    );
    lab.kubectl("lab-c1", &["-n", "shop", "delete", "service", "empty"]);
}

/// c2's mesh-apiserver is lost: `meshctl explain` still passes through c1's
/// backend, and marks c2's backends ✘ at the remote-cluster hop, saying
/// the cluster is stale; after the restart everything passes again.
fn meshctl_explain_names_a_stale_remote_cluster(lab: &Lab) {
    use meshctl::report::{ExplainReport, HopStatus};
    lab.ok(&["kill", "c2/mesh-apiserver"]);
    lab.wait_status("c1", "c2 marked stale", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.stale_since.is_some())
    });
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/web:80",
        ],
    );
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    lab.wait_status("c1", "c2 back and synced", T, |s| {
        s.is_synced_with("c2") && s.remotes["c2"].stale_since.is_none()
    });
    assert_eq!(code, Some(0), "c1's own backend still works: {ex:#?}");
    let c2: Vec<_> = ex
        .backends
        .iter()
        .filter(|b| b.cluster.as_deref() == Some("c2"))
        .collect();
    assert_eq!(c2.len(), 2, "stale backends are kept: {ex:#?}");
    for b in c2 {
        let h = &b.hops[0];
        assert!(
            !b.ok
                && h.step == "remote cluster"
                && h.status == HopStatus::Fail
                && h.detail.contains("stale"),
            "{b:#?}"
        );
    }
    assert!(
        ex.summary.contains("1 of 3") && ex.summary.contains("others fail"),
        "{}",
        ex.summary
    );
}
