//! What many scenarios share: the wait bound, the lab's commands (meshctl
//! connect, the clustermesh Secret, meshctl as typed JSON, the
//! meshwork-config ConfigMap) and the global Service fixture of shop/web.

use std::time::Duration;

use mesh_e2e::Lab;
use mesh_testbed::Wait;

pub(super) const T: Duration = Duration::from_secs(45);

pub(super) fn secret(lab: &Lab, ctx: &str) -> String {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", lab.kubeconfig())
        .args([
            &format!("--context={ctx}"),
            "-n",
            "meshwork-system",
            "get",
            "secret",
            "meshwork-clustermesh",
            "-o",
            "jsonpath={.data}",
        ])
        .output()
        .unwrap();
    // A missing Secret reads as empty: "nothing configured" either way.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn connect(lab: &Lab, a: &str, b: &str) -> serde_json::Value {
    lab.meshctl_json(&[
        "connect",
        "--context",
        &format!("lab-{a}"),
        "--destination-context",
        &format!("lab-{b}"),
        "--timeout",
        "60s",
    ])
}

pub(super) const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    service.meshwork.io/global: "true"
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata:
  name: internal
  namespace: shop
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

/// `kubectl annotate --overwrite service shop/web <annotation>` in `ctx`
/// (`key=value` sets, `key-` removes).
pub(super) fn annotate_web(lab: &Lab, ctx: &str, annotation: &str) {
    lab.kubectl(
        ctx,
        &[
            "-n",
            "shop",
            "annotate",
            "--overwrite",
            "service",
            "web",
            annotation,
        ],
    );
}

/// Waits (bounded by `T`) until `cond` holds, saying what it waited for.
pub(super) fn eventually(what: &str, cond: impl Fn() -> bool) {
    Wait::new(what)
        .timeout(T)
        .interval(Duration::from_millis(300))
        .until(cond);
}

/// `meshctl <args> -o json`, parsed into `T`; returns it with the exit code.
pub(super) fn meshctl_typed<T: serde::de::DeserializeOwned>(
    lab: &Lab,
    args: &[&str],
) -> (T, Option<i32>) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = lab.meshctl(&all);
    let v: T = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "meshctl {args:?} -o json does not parse ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code())
}

/// Polls `meshctl <args> -o json` until `done` holds (bounded by `T`).
pub(super) fn meshctl_until<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    lab: &Lab,
    args: &[&str],
    what: &str,
    done: impl Fn(&T, Option<i32>) -> bool,
) -> T {
    Wait::new(what)
        .timeout(T)
        .interval(Duration::from_millis(500))
        .until_ok(|| {
            let (v, code) = meshctl_typed::<T>(lab, args);
            if done(&v, code) {
                Ok(v)
            } else {
                Err(format!("exit {code:?}: {v:#?}"))
            }
        })
}

/// `kubectl patch` of one key of cluster `c`'s meshwork-config (the lab's
/// kubelet part carries it to the agents' config dir).
pub(super) fn set_meshwork_config(lab: &Lab, c: &str, key: &str, value: &str) {
    let patch = serde_json::json!({"data": {key: value}}).to_string();
    lab.kubectl(
        &format!("lab-{c}"),
        &[
            "-n",
            "meshwork-system",
            "patch",
            "configmap",
            "meshwork-config",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}
