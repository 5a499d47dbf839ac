//! Clusters joining and leaving the mesh: connect and status, connecting
//! again changes nothing, refusals that change nothing, a third cluster
//! joining, disconnect and reconnect.

use mesh_e2e::Lab;

use super::helpers::{T, connect, meshctl_typed, secret};

pub(super) fn connect_and_status(lab: &Lab) {
    let r = connect(lab, "c1", "c2");
    assert_eq!(r["synced"], true, "{r}");
    assert_eq!(r["written"].as_array().unwrap().len(), 2, "{r}");
    for (me, other) in [("c1", "c2"), ("c2", "c1")] {
        let st = lab.wait_status(me, "the other's 2 nodes", T, |s| {
            s.remotes.get(other).is_some_and(|r| r.counts.nodes == 2)
        });
        let r = &st.remotes[other];
        assert!(
            r.connected && r.synced && r.stale_since.is_none() && r.refused.is_none(),
            "{me}: {r:?}"
        );
    }
    // status also reports this cluster's node-agents and encryption mode.
    let (st, code) =
        meshctl_typed::<meshctl::report::StatusReport>(lab, &["status", "--context", "lab-c1"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        (
            st.agents.nodes,
            st.agents.ready,
            st.agents.encryption.as_str()
        ),
        (2, 2, "off"),
        "{st:#?}"
    );
    assert!(st.agents.unreachable.is_empty(), "{st:#?}");
    let table = String::from_utf8_lossy(&lab.meshctl(&["status", "--context", "lab-c1"]).stdout)
        .to_string();
    assert!(
        table.contains("2/2 ready") && table.contains("encryption"),
        "{table}"
    );
}

pub(super) fn connecting_again_changes_nothing(lab: &Lab) {
    let before = (secret(lab, "lab-c1"), secret(lab, "lab-c2"));
    let r = connect(lab, "c1", "c2");
    assert_eq!(r["written"], serde_json::json!([]), "{r}");
    assert_eq!(r["unchanged"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        (secret(lab, "lab-c1"), secret(lab, "lab-c2")),
        before,
        "a repeated connect rewrote a Secret"
    );
}

fn set_c3_config(lab: &Lab, key: &str, value: &str) {
    let patch = serde_json::json!({"data": {key: value}}).to_string();
    lab.kubectl(
        "lab-c3",
        &[
            "-n",
            "meshwork-system",
            "patch",
            "configmap",
            "mesh-apiserver-config",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

pub(super) fn refusals_change_nothing(lab: &Lab) {
    let before = (secret(lab, "lab-c1"), secret(lab, "lab-c3"));
    for (key, value, original, want) in [
        ("cluster-id", "1", "3", "cluster id 1"),
        ("cluster-name", "c1", "c3", "names must be unique"),
        ("pod-cidrs", "10.1.128.0/17", "10.3.0.0/16", "overlaps"),
    ] {
        set_c3_config(lab, key, value);
        let out = lab.meshctl(&[
            "connect",
            "--context",
            "lab-c1",
            "--destination-context",
            "lab-c3",
            "--timeout",
            "20s",
        ]);
        set_c3_config(lab, key, original);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && err.contains("nothing was changed"),
            "{key}={value}: {err}"
        );
    }
    // A mesh-apiserver that is not running: once its published status is
    // stale (meshctl can know no sooner), connect refuses.
    lab.ok(&["kill", "c3/mesh-apiserver"]);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    lab.wait_status("c3", "its status to go stale", T, |s| {
        now().saturating_sub(s.updated_at) > 10
    });
    let out = lab.meshctl(&[
        "connect",
        "--context",
        "lab-c1",
        "--destination-context",
        "lab-c3",
        "--timeout",
        "20s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not running"),
        "{err}"
    );
    assert!(
        err.contains("c3") && err.contains("nothing was changed"),
        "{err}"
    );
    lab.ok(&["restart", "c3/mesh-apiserver"]);
    lab.wait_status("c3", "c3's mesh-apiserver back", T, |s| s.cluster == "c3");
    assert_eq!(
        (secret(lab, "lab-c1"), secret(lab, "lab-c3")),
        before,
        "a refused connect changed a Secret"
    );
}

pub(super) fn a_third_cluster_joins(lab: &Lab) {
    for other in ["c1", "c2"] {
        assert_eq!(connect(lab, "c3", other)["synced"], true);
    }
    let st = lab.wait_status("c3", "c1 and c2 synced", T, |s| {
        s.is_synced_with("c1") && s.is_synced_with("c2")
    });
    assert_eq!(
        st.remotes["c2"].counts.services, 1,
        "c3 sees c2's global service"
    );
    for other in ["c1", "c2"] {
        lab.wait_status(other, "c3 synced", T, |s| s.is_synced_with("c3"));
    }
}

pub(super) fn disconnect_withdraws_and_reconnect_works(lab: &Lab) {
    let r = lab.meshctl(&[
        "disconnect",
        "--context",
        "lab-c1",
        "--destination-context",
        "lab-c2",
        "--timeout",
        "60s",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let st = lab.status("c1");
    assert!(
        !st.remotes.contains_key("c2") && st.is_synced_with("c3"),
        "c1 withdrew c2 only: {:?}",
        st.remotes.keys()
    );
    assert!(!lab.status("c2").remotes.contains_key("c1"));
    assert_eq!(connect(lab, "c1", "c2")["synced"], true);
    lab.wait_status("c1", "c2 back", T, |s| {
        s.remotes.get("c2").is_some_and(|r| r.counts.services == 1)
    });
}
