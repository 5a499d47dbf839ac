//! `meshctl ca` run as a user runs it: the real binary, real files, JSON
//! output parsed, exit codes checked.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .expect("run meshctl")
}

fn ok_json(args: &[&str]) -> Value {
    let out = meshctl(args);
    assert!(
        out.status.success(),
        "meshctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("meshctl -o json prints JSON")
}

fn failure(args: &[&str]) -> String {
    let out = meshctl(args);
    assert!(!out.status.success(), "meshctl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec![],
        vec!["ca"],
        vec!["ca", "create"],
        vec!["ca", "issue"],
        vec!["ca", "issue", "server"],
        vec!["ca", "issue", "cluster"],
        vec!["ca", "issue", "node"],
        vec!["ca", "inspect"],
        vec!["ca", "rotate"],
        vec!["connect"],
        vec!["disconnect"],
        vec!["status"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = meshctl(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: meshctl"), "{args:?}: {text}");
    }
}

#[test]
fn create_issue_inspect_rotate_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let certs = tmp.path().join("certs");
    let created = ok_json(&[
        "ca",
        "create",
        "--ca-dir",
        p(&ca),
        "--trust-domain",
        "lab.example",
        "-o",
        "json",
    ]);
    assert_eq!(created["state"], "stable");
    assert_eq!(created["trusted"].as_array().unwrap().len(), 1);
    let mode = std::fs::metadata(ca.join("ca.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "CA key must be private");

    // A second create refuses and leaves the CA as it was.
    let before = std::fs::read(ca.join("ca.key")).unwrap();
    let err = failure(&["ca", "create", "--ca-dir", p(&ca)]);
    assert!(err.contains("meshctl ca rotate"), "{err}");
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), before);

    let old = ok_json(&[
        "ca",
        "issue",
        "cluster",
        "--ca-dir",
        p(&ca),
        "--out-dir",
        p(&certs),
        "--cluster",
        "c2",
        "-o",
        "json",
    ]);
    assert_eq!(
        old["certificate"]["spiffe_id"],
        "spiffe://lab.example/cluster/c2"
    );
    let node = ok_json(&[
        "ca",
        "issue",
        "node",
        "--ca-dir",
        p(&ca),
        "--out-dir",
        p(&certs),
        "--cluster",
        "c1",
        "--node",
        "worker-1",
        "-o",
        "json",
    ]);
    assert_eq!(
        node["certificate"]["spiffe_id"],
        "spiffe://lab.example/cluster/c1/node/worker-1"
    );
    let server = ok_json(&[
        "ca",
        "issue",
        "server",
        "--ca-dir",
        p(&ca),
        "--out-dir",
        p(&certs),
        "--cluster",
        "c1",
        "--name",
        "api",
        "--san",
        "mesh.c1.example",
        "--san",
        "192.0.2.10",
        "-o",
        "json",
    ]);
    assert_eq!(server["certificate"]["dns_names"][0], "mesh.c1.example");
    assert_eq!(server["certificate"]["ip_addresses"][0], "192.0.2.10");
    assert_eq!(
        server["certificate"]["spiffe_id"],
        "spiffe://lab.example/cluster/c1"
    );

    let c2 = certs.join("c2.crt");
    let bundle = ca.join("bundle.crt");
    let seen = ok_json(&[
        "ca",
        "inspect",
        p(&c2),
        "--bundle",
        p(&bundle),
        "-o",
        "json",
    ]);
    assert_eq!(seen[0]["verification"], "trusted");

    // Rotation: both CAs trusted, the old certificate still accepted.
    let rot = ok_json(&["ca", "rotate", "--ca-dir", p(&ca), "-o", "json"]);
    assert_eq!(rot["state"], "overlap");
    assert_eq!(rot["trusted"].as_array().unwrap().len(), 2);
    assert!(rot["next_step"].as_str().unwrap().contains("--finish"));
    assert_eq!(
        ok_json(&[
            "ca",
            "inspect",
            p(&c2),
            "--bundle",
            p(&bundle),
            "-o",
            "json"
        ])[0]["verification"],
        "trusted"
    );
    let err = failure(&["ca", "rotate", "--ca-dir", p(&ca)]);
    assert!(err.contains("already under way"), "{err}");

    // Reissue from the new CA, finish: the old certificate is refused, the new one trusted.
    std::fs::rename(&c2, tmp.path().join("old-c2.crt")).unwrap();
    ok_json(&[
        "ca",
        "issue",
        "cluster",
        "--ca-dir",
        p(&ca),
        "--out-dir",
        p(&certs),
        "--cluster",
        "c2",
        "-o",
        "json",
    ]);
    let fin = ok_json(&["ca", "rotate", "--ca-dir", p(&ca), "--finish", "-o", "json"]);
    assert_eq!(fin["state"], "stable");
    assert_eq!(
        ok_json(&[
            "ca",
            "inspect",
            p(&c2),
            "--bundle",
            p(&bundle),
            "-o",
            "json"
        ])[0]["verification"],
        "trusted"
    );
    let out = meshctl(&[
        "ca",
        "inspect",
        p(&tmp.path().join("old-c2.crt")),
        "--bundle",
        p(&bundle),
        "-o",
        "json",
    ]);
    assert!(
        !out.status.success(),
        "an old-CA certificate must not verify after the rotation finished"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v[0]["verification"]
            .as_str()
            .unwrap()
            .starts_with("not trusted"),
        "{v}"
    );
}

#[test]
fn bad_input_says_what_is_wrong_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let certs = tmp.path().join("certs");
    ok_json(&["ca", "create", "--ca-dir", p(&ca), "-o", "json"]);

    let err = failure(&[
        "ca",
        "issue",
        "cluster",
        "--ca-dir",
        p(&ca),
        "--out-dir",
        p(&certs),
        "--cluster",
        "Bad_Name",
    ]);
    assert!(
        err.contains("Bad_Name") && err.contains("1-32 lowercase"),
        "{err}"
    );
    assert!(!certs.exists(), "nothing may be written for a refused name");

    let err = failure(&[
        "ca",
        "issue",
        "cluster",
        "--ca-dir",
        p(&tmp.path().join("nope")),
        "--out-dir",
        p(&certs),
        "--cluster",
        "c1",
    ]);
    assert!(err.contains("meshctl ca create"), "{err}");

    let err = failure(&[
        "ca",
        "create",
        "--ca-dir",
        p(&tmp.path().join("ca2")),
        "--days",
        "0",
    ]);
    assert!(err.contains('0'), "{err}");

    let junk = tmp.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = failure(&["ca", "inspect", p(&junk)]);
    assert!(err.contains("junk.pem"), "{err}");

    let err = failure(&["ca", "rotate", "--ca-dir", p(&ca), "--finish"]);
    assert!(err.contains("no rotation is under way"), "{err}");
}

#[test]
fn an_unknown_context_lists_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: lab-c1\n  context: {cluster: c, user: u}\ncurrent-context: lab-c1\n",
    )
    .unwrap();
    let err = failure(&["status", "--context", "lab-c9", "--kubeconfig", p(&kc)]);
    assert!(err.contains("lab-c9") && err.contains("lab-c1"), "{err}");
    // A reachable-looking context whose API server is down: a clear error, not a hang.
    let err = failure(&["status", "--context", "lab-c1", "--kubeconfig", p(&kc)]);
    assert!(err.contains("lab-c1"), "{err}");
}
