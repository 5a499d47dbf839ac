//! The scenarios that need nothing but kube contexts: the same code runs
//! against the local lab (from `tests/lab.rs`) and against real clusters
//! such as kind (`tests/contexts.rs`, run by `kind-mesh.sh test` with
//! `MESHWORK_E2E_CONTEXTS`). They drive `meshctl` and `kubectl` only, and
//! assert on what the clusters report.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use mesh_api::clustermesh::MeshStatus;

use crate::Scenario;

/// How long a scenario waits for the clusters to report something.
const T: Duration = Duration::from_secs(90);

/// The clusters under test, by kube context.
#[derive(Debug, Clone)]
pub struct Contexts {
    /// The kubeconfig (None: kubectl's and meshctl's default).
    pub kubeconfig: Option<PathBuf>,
    /// At least two contexts, each a cluster with Meshwork installed.
    pub names: Vec<String>,
}

impl Contexts {
    /// The contexts named in `MESHWORK_E2E_CONTEXTS` (comma-separated), with
    /// the ambient `KUBECONFIG`. Panics, saying what to set, when there are
    /// fewer than two.
    pub fn from_env() -> Contexts {
        let names: Vec<String> = std::env::var("MESHWORK_E2E_CONTEXTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        assert!(
            names.len() >= 2,
            "set MESHWORK_E2E_CONTEXTS to two or more kube contexts with Meshwork installed, e.g. MESHWORK_E2E_CONTEXTS=kind-meshwork-c1,kind-meshwork-c2 (kind-mesh.sh test does)"
        );
        Contexts {
            kubeconfig: std::env::var_os("KUBECONFIG").map(PathBuf::from),
            names,
        }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        if let Some(k) = &self.kubeconfig {
            c.env("KUBECONFIG", k);
        }
        c
    }

    /// `meshctl <args>`.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.command(crate::bin("meshctl"))
            .args(args)
            .output()
            .expect("run meshctl")
    }

    /// `meshctl <args> -o json`, which must succeed.
    pub fn meshctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.meshctl(&all);
        assert!(
            out.status.success(),
            "meshctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("meshctl {args:?} -o json: {e}"))
    }

    /// The `meshwork-clustermesh` Secret's data in `ctx` (empty when absent).
    pub fn clustermesh_secret(&self, ctx: &str) -> String {
        let out = self
            .command("kubectl")
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
            .expect("run kubectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What `ctx`'s mesh-apiserver publishes (`meshctl status`).
    pub fn status(&self, ctx: &str) -> MeshStatus {
        serde_json::from_value(self.meshctl_json(&["status", "--context", ctx]))
            .expect("meshctl status -o json holds a MeshStatus")
    }

    /// Waits until `check(status of ctx)` holds.
    pub fn wait_status(&self, ctx: &str, what: &str, check: impl Fn(&MeshStatus) -> bool) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let st = self.status(ctx);
            if check(&st) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ctx}: {what}: not within {T:?}; last status {st:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every pair of contexts, each once.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for (i, a) in self.names.iter().enumerate() {
            for b in &self.names[i + 1..] {
                out.push((a.as_str(), b.as_str()));
            }
        }
        out
    }

    fn connect(&self, a: &str, b: &str) -> serde_json::Value {
        self.meshctl_json(&[
            "connect",
            "--context",
            a,
            "--destination-context",
            b,
            "--timeout",
            "90s",
        ])
    }
}

/// The cluster name a context's mesh-apiserver reports.
fn cluster_of(c: &Contexts, ctx: &str) -> String {
    c.status(ctx).cluster
}

/// Every pair is connected (idempotently) and both sides report the other
/// connected and synced.
pub fn every_pair_is_connected_and_synced(c: &Contexts) {
    for (a, b) in c.pairs() {
        let r = c.connect(a, b);
        assert_eq!(r["synced"], true, "{a} ↔ {b}: {r}");
        let (na, nb) = (cluster_of(c, a), cluster_of(c, b));
        for (ctx, other) in [(a, &nb), (b, &na)] {
            c.wait_status(ctx, &format!("{other} connected and synced"), |s| {
                s.is_synced_with(other)
            });
        }
    }
}

/// Connecting again writes nothing: the Secrets are compared before and
/// after.
pub fn connecting_again_changes_nothing(c: &Contexts) {
    for (a, b) in c.pairs() {
        let before = (c.clustermesh_secret(a), c.clustermesh_secret(b));
        let r = c.connect(a, b);
        assert_eq!(r["written"], serde_json::json!([]), "{a} ↔ {b}: {r}");
        assert_eq!(
            (c.clustermesh_secret(a), c.clustermesh_secret(b)),
            before,
            "{a} ↔ {b}: a repeated connect rewrote a Secret"
        );
    }
}

/// `meshctl disconnect` withdraws each side from the other, and a new
/// `connect` restores both.
pub fn disconnect_withdraws_and_reconnect_restores(c: &Contexts) {
    let (a, b) = c.pairs()[0];
    let (na, nb) = (cluster_of(c, a), cluster_of(c, b));
    let out = c.meshctl(&[
        "disconnect",
        "--context",
        a,
        "--destination-context",
        b,
        "--timeout",
        "90s",
    ]);
    assert!(
        out.status.success(),
        "disconnect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_status(a, &format!("{nb} withdrawn"), |s| {
        !s.remotes.contains_key(&nb)
    });
    c.wait_status(b, &format!("{na} withdrawn"), |s| {
        !s.remotes.contains_key(&na)
    });
    assert_eq!(c.connect(a, b)["synced"], true);
    c.wait_status(a, &format!("{nb} back"), |s| s.is_synced_with(&nb));
    c.wait_status(b, &format!("{na} back"), |s| s.is_synced_with(&na));
}

/// The portable scenarios, in order.
pub fn scenarios() -> Vec<Scenario<Contexts>> {
    vec![
        (
            "every pair of contexts is connected and synced",
            every_pair_is_connected_and_synced,
        ),
        (
            "connecting again changes nothing",
            connecting_again_changes_nothing,
        ),
        (
            "disconnect withdraws and reconnect restores",
            disconnect_withdraws_and_reconnect_restores,
        ),
    ]
}
