//! A remote cluster's mesh-apiserver lost: its state is kept stale, then
//! withdrawn, and resyncs when it returns.

use std::time::Duration;

use mesh_e2e::Lab;

use super::helpers::{T, eventually};
use super::requests::{pod_ip, who_answers};

/// c2's mesh-apiserver dies. The data plane does not depend on it: an
/// established connection from c1 to a c2 pod keeps streaming and new ones
/// succeed; c1 keeps c2's last known state (stale) and keeps serving its
/// global service with c2's backends; after the stale timeout (20 s in this
/// lab) c1 withdraws c2's state and its ClusterIP has no backend left; when
/// c2 returns, it resyncs and serves again.
pub(super) fn a_lost_remote_is_kept_stale_then_withdrawn_and_resyncs(lab: &Lab) {
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
    let global = format!("{}:80", vip.trim());
    let served_by_c2 = |n| {
        who_answers(lab, &global, n)
            .iter()
            .all(|a| a.as_ref().is_some_and(|(c, _)| c == "c2"))
    };
    eventually(
        "c1's global service is served by c2 (c1 has no web pod now)",
        || served_by_c2(5),
    );
    let web2 = format!("{}:8080", pod_ip(lab, "lab-c2", "shop", "web-2"));
    let stream = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", "client"),
                &mesh_e2e::bin("mesh-echo"),
                &["stream", &web2, "--seconds", "8", "--every-ms", "500"],
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        lab.ok(&["kill", "c2/mesh-apiserver"]);
        let st = lab.wait_status("c1", "c2 marked stale", T, |s| {
            s.remotes
                .get("c2")
                .is_some_and(|r| !r.connected && r.stale_since.is_some())
        });
        let r = &st.remotes["c2"];
        assert_eq!(
            (r.counts.nodes, r.counts.services),
            (2, 1),
            "c2's last known state must be kept while it is unreachable: {r:?}"
        );
        assert!(
            served_by_c2(10),
            "c2's backends keep serving while c2 is stale"
        );
        stream.join().expect("stream thread")
    });
    let report: serde_json::Value = serde_json::from_slice(&stream.stdout)
        .unwrap_or_else(|e| panic!("stream report: {e}: {stream:?}"));
    assert_eq!(
        report["broken"], false,
        "an established connection broke: {report}"
    );
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    lab.wait_status(
        "c1",
        "c2's state withdrawn after the stale timeout",
        T,
        |s| {
            s.remotes
                .get("c2")
                .is_some_and(|r| r.counts.services == 0 && r.counts.nodes == 0)
        },
    );
    eventually("c1's ClusterIP has no backend once c2 is withdrawn", || {
        who_answers(lab, &global, 3).iter().all(Option::is_none)
    });
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    let st = lab.wait_status("c1", "c2 back and synced", T, |s| {
        s.is_synced_with("c2") && s.remotes["c2"].stale_since.is_none()
    });
    assert_eq!(st.remotes["c2"].counts.services, 1);
    eventually("c2 serves c1's global service again", || served_by_c2(5));
}
