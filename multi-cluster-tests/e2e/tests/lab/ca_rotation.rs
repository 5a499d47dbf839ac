//! `meshctl ca rotate` under cross-cluster traffic, and an interrupted
//! rotation that resumes where it stopped.

use std::time::Duration;

use mesh_e2e::Lab;
use mesh_testbed::Wait;

use super::helpers::{T, eventually};
use super::node_agent::agent_get;
use super::requests::{pod_ip, reaches};

/// Calls c2's mesh-apiserver (its gRPC port, from its control namespace)
/// with the client certificate `cert`/`key`: curl's exit status and stderr.
fn call_c2_apiserver_with(
    lab: &Lab,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (bool, String) {
    let ns = format!("mw{}-c2-ctl", lab.name);
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["curl", "-sS", "-k", "--max-time", "5", "--http2"])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("https://192.168.77.40:32379/")
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The refusals c2's mesh-apiserver reports on its status endpoint.
fn c2_refused_peers(lab: &Lab) -> String {
    let ns = format!("mw{}-c2-ctl", lab.name);
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:9963/status",
        ])
        .output()
        .expect("run curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "c2 mesh-apiserver /status: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["refused_peers"].to_string()
}

/// `meshctl ca rotate --context lab-c2 --context lab-c1` while c1's client keeps a stream to
/// c2's web-2 busy and opens a new connection every 200 ms: the stream never
/// breaks, no new connection fails (the lab's stale timeout is 20 s, so a
/// remote refused during the rotation would have its backends withdrawn),
/// every cluster reports c2 connected and synced, and again after c2's
/// mesh-apiserver restarts (every client then handshakes with the new
/// certificates). A certificate from c2's old CA is accepted before and
/// refused after.
pub(super) fn ca_rotation_under_cross_cluster_traffic(lab: &Lab) {
    let target = format!("{}:8080", pod_ip(lab, "lab-c2", "shop", "web-2"));
    eventually("c1's client reaches c2's web-2", || {
        reaches(lab, "c1", "shop", "client", &target)
    });
    // The node-agents' certificate as c2's old CA issued it.
    let keep = lab.dir.join("c2-old-ca-client");
    std::fs::create_dir_all(&keep).unwrap();
    let projected = lab.dir.join("c2/tls/meshwork-node-agent-tls");
    let (old_cert, old_key) = (keep.join("old.crt"), keep.join("old.key"));
    std::fs::copy(projected.join("tls.crt"), &old_cert).unwrap();
    std::fs::copy(projected.join("tls.key"), &old_key).unwrap();
    let (ok_before, before) = call_c2_apiserver_with(lab, &old_cert, &old_key);
    eprintln!("old-CA certificate before the rotation: curl ok={ok_before} {before}");
    assert!(
        !before.contains("alert"),
        "the old certificate must be accepted before the rotation: {before}"
    );
    let stream_seconds = 80;
    let (rotation, stream, took) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", "client"),
                &mesh_e2e::bin("mesh-echo"),
                &[
                    "stream",
                    &target,
                    "--seconds",
                    &stream_seconds.to_string(),
                    "--every-ms",
                    "200",
                ],
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let t = std::time::Instant::now();
        let rotation = lab.meshctl_json(&[
            "ca",
            "rotate",
            "--context",
            "lab-c2",
            "--context",
            "lab-c1",
            "--reload-wait",
            "8s",
            "--timeout",
            "60s",
        ]);
        let took = t.elapsed();
        (rotation, stream.join().expect("stream thread"), took)
    });
    eprintln!("ca rotate: {rotation} in {took:?}");
    assert!(
        took < Duration::from_secs(stream_seconds - 4),
        "the rotation ({took:?}) outlasted the traffic ({stream_seconds} s)"
    );
    for (i, (me, others)) in [("c2", ["c1", "c3"]), ("c1", ["c2", "c3"])]
        .iter()
        .enumerate()
    {
        let c = &rotation["clusters"][i];
        assert_eq!(c["cluster"], *me, "{rotation}");
        assert_ne!(c["old_ca"], c["new_ca"], "{rotation}");
        let importers: Vec<&str> = c["importers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert!(
            others.iter().all(|o| importers.contains(o)),
            "{others:?} import {me}: {rotation}"
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&stream.stdout).unwrap_or_else(|e| {
        panic!(
            "stream report: {e}: {}{}",
            String::from_utf8_lossy(&stream.stdout),
            String::from_utf8_lossy(&stream.stderr)
        )
    });
    eprintln!("stream across the CA rotation: {report}");
    assert_eq!(
        report["broken"], false,
        "the established stream broke: {report}"
    );
    assert_eq!(
        report["new_failures"], 0,
        "new connections failed: {report}"
    );
    assert!(report["verified_bytes"].as_u64() > Some(0), "{report}");
    // The rotation is finished: no phase left on the CA Secrets.
    for ctx in ["lab-c1", "lab-c2"] {
        let phase = lab.kubectl(
            ctx,
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                "jsonpath={.metadata.annotations}",
            ],
        );
        assert!(!phase.contains("ca-rotation"), "{ctx}: {phase}");
    }
    // Every client handshakes again, with the new certificates only: the
    // streams are seen broken before c2's mesh-apiserver comes back.
    let feed = |node: &str| agent_get(lab, "c2", node, "/v1/status")["mesh_feed"].clone();
    let connects: Vec<u64> = ["c2-n1", "c2-n2"]
        .iter()
        .map(|n| feed(n)["connects"].as_u64().expect("mesh_feed.connects"))
        .collect();
    lab.ok(&["kill", "c2/mesh-apiserver"]);
    for other in ["c1", "c3"] {
        lab.wait_status(other, "c2 seen disconnected", T, |s| {
            s.remotes.get("c2").is_some_and(|r| !r.connected)
        });
    }
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    lab.ok(&["restart", "c2/mesh-apiserver"]);
    for other in ["c1", "c3"] {
        lab.wait_status(other, "c2 connected and synced again", T, |s| {
            s.is_synced_with("c2")
        });
    }
    lab.wait_status("c2", "c1 and c3 synced again, after the restart", T, |s| {
        s.updated_at > restarted && s.is_synced_with("c1") && s.is_synced_with("c3")
    });
    for (node, before) in ["c2-n1", "c2-n2"].iter().zip(connects) {
        eventually(
            &format!("{node}'s node-agent reconnects with its new certificate"),
            || {
                let f = feed(node);
                f["connected"] == true
                    && f["synced"] == true
                    && f["connects"].as_u64().is_some_and(|c| c > before)
            },
        );
    }
    // The old CA's certificate is refused at the handshake, and said so.
    // (How curl words it depends on timing: an "unknown ca" alert, or the
    // connection already closed. The server's own record, fresh since its
    // restart above, is the proof of why.)
    let (ok, after) = call_c2_apiserver_with(lab, &old_cert, &old_key);
    eprintln!("old-CA certificate after the rotation: curl ok={ok} {after}");
    assert!(!ok, "old-CA certificate not refused: {after}");
    let refused = c2_refused_peers(lab);
    assert!(
        refused.contains("wrong-ca"),
        "c2 names the refusal: {refused}"
    );
}

/// `meshctl ca rotate --context lab-c3` killed once step 1 is recorded
/// resumes where it stopped when run again: the same new CA, the remaining
/// steps, and c1 and c2 still synced with c3 afterwards.
pub(super) fn an_interrupted_ca_rotation_resumes(lab: &Lab) {
    let phase = || {
        lab.kubectl(
            "lab-c3",
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                "jsonpath={.metadata.annotations.meshwork\\.io/ca-rotation}",
            ],
        )
    };
    let mut child = std::process::Command::new(mesh_e2e::bin("meshctl"))
        .env("KUBECONFIG", lab.kubeconfig())
        .args(["ca", "rotate", "--context", "lab-c3", "--reload-wait", "8s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run meshctl");
    Wait::new("step 1 recorded")
        .timeout(T)
        .interval(Duration::from_millis(200))
        .until_ok(|| match phase() {
            p if p == "trust-both" => Ok(()),
            p => Err(format!("phase {p:?}")),
        });
    child.kill().expect("kill meshctl");
    let _ = child.wait();
    assert_eq!(phase(), "trust-both", "interrupted in step 2");
    let ca_key = |key: &str| {
        lab.kubectl(
            "lab-c3",
            &[
                "-n",
                "meshwork-system",
                "get",
                "secret",
                "meshwork-ca",
                "-o",
                &format!("jsonpath={{.data.{key}}}"),
            ],
        )
    };
    let kept = ca_key("new-ca\\.crt");
    assert!(!kept.is_empty(), "the new CA is kept in the Secret");
    let r = lab.meshctl_json(&[
        "ca",
        "rotate",
        "--context",
        "lab-c3",
        "--reload-wait",
        "8s",
        "--timeout",
        "60s",
    ]);
    eprintln!("resumed rotation: {r}");
    let c = &r["clusters"][0];
    assert_eq!(c["resumed_from"], "trust-both", "{r}");
    let steps: Vec<&str> = c["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["reissue certificates", "drop the old CA"], "{r}");
    assert_eq!(phase(), "", "the rotation finished");
    assert_eq!(
        ca_key("ca\\.crt"),
        kept,
        "the resumed rotation finished with the CA the interrupted one made"
    );
    assert_eq!(ca_key("new-ca\\.crt"), "", "the kept new CA is removed");
    for other in ["c1", "c2"] {
        lab.wait_status(other, "c3 synced after the rotation", T, |s| {
            s.is_synced_with("c3")
        });
    }
}
