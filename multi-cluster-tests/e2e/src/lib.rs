//! The end-to-end harness: one lab shared by every scenario of a run (as
//! CI's time allows), the real `meshctl`, `kubectl` and `mesh-lab` binaries
//! driven as a person drives them, and helpers that wait for what the
//! clusters report.
//!
//! What it is for: `tests/lab.rs`, and [`portable`]'s scenarios that also
//! run against real clusters (`tests/contexts.rs`). What it is not for:
//! unit or component tests (those live with their crates).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mesh_api::clustermesh::MeshStatus;

pub mod portable;

/// A binary built beside the test (`cargo build --workspace --bins` first;
/// `make test` does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        p.display()
    );
    p
}

/// A running lab, removed on drop (also when a scenario panicked).
#[derive(Debug)]
pub struct Lab {
    /// Its state directory.
    pub dir: PathBuf,
    /// Its name (prefix of everything it creates).
    pub name: String,
}

impl Lab {
    /// `mesh-lab up` with `clusters` × `nodes`, named `<name><2 characters of
    /// the pid>` so several runs on one host never share a namespace.
    pub fn up(name: &str, clusters: u8, nodes: u8, encryption: bool) -> Lab {
        Lab::up_with(name, clusters, nodes, encryption, &[])
    }

    /// [`Lab::up`] with more `mesh-lab up` arguments (e.g.
    /// `--stale-timeout=20`).
    pub fn up_with(name: &str, clusters: u8, nodes: u8, encryption: bool, extra: &[&str]) -> Lab {
        mesh_testbed::require_root();
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let pid = std::process::id() as usize;
        let name = &format!(
            "{name}{}{}",
            digits[pid / 36 % 36] as char,
            digits[pid % 36] as char
        );
        let dir = std::env::temp_dir().join(format!("meshwork-e2e-{name}-{}", std::process::id()));
        let lab = Lab {
            dir,
            name: name.into(),
        };
        let mut args = vec![
            "up".to_string(),
            format!("--clusters={clusters}"),
            format!("--nodes={nodes}"),
        ];
        if encryption {
            args.push("--encryption".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = lab.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "mesh-lab up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Runs `mesh-lab <args>` for this lab.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("mesh-lab"))
            .arg(format!("--state-dir={}", self.dir.display()))
            .arg(format!("--name={}", self.name))
            .args(args)
            .output()
            .expect("run mesh-lab")
    }

    /// Runs `mesh-lab <args>` and panics with its stderr unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mesh-lab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The lab's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The lab as kube contexts, for the [`portable`] scenarios.
    pub fn contexts(&self, names: &[&str]) -> portable::Contexts {
        portable::Contexts {
            kubeconfig: Some(self.kubeconfig()),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Runs `meshctl <args>` against the lab's kubeconfig.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        Command::new(bin("meshctl"))
            .env("KUBECONFIG", self.kubeconfig())
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
            "meshctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("meshctl {args:?} -o json: {e}"))
    }

    /// Runs `kubectl --context <ctx> <args>`, which must succeed.
    pub fn kubectl(&self, ctx: &str, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .arg(format!("--context={ctx}"))
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, ctx: &str, yaml: &str) {
        use std::io::Write as _;
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args([&format!("--context={ctx}"), "apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write manifest");
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The status `cluster`'s mesh-apiserver publishes (via meshctl).
    pub fn status(&self, cluster: &str) -> MeshStatus {
        let v = self.meshctl_json(&["status", "--context", &format!("lab-{cluster}")]);
        serde_json::from_value(v).expect("meshctl status -o json is a MeshStatus")
    }

    /// Waits until `check(status of cluster)` holds.
    pub fn wait_status(
        &self,
        cluster: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&MeshStatus) -> bool,
    ) -> MeshStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.meshctl(&[
                "status",
                "--context",
                &format!("lab-{cluster}"),
                "-o",
                "json",
            ]);
            let st: Option<MeshStatus> = serde_json::from_slice(&out.stdout).ok();
            if let Some(st) = &st
                && check(st)
            {
                return st.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{cluster}: {what} not reached within {timeout:?}; last status: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The namespace of node `node` (e.g. `c1-n1`).
    pub fn node_ns(&self, node: &str) -> String {
        format!("mw{}-{node}", self.name)
    }

    /// The namespace of the host outside every cluster (at
    /// `mesh_lab::plan::OUTSIDE_IPS`).
    pub fn outside_ns(&self) -> String {
        format!("mw{}-out", self.name)
    }

    /// The WireGuard interface of node `c<c>-n<n>`.
    pub fn wg_interface(&self, cluster: u8, node: u8) -> String {
        format!("mwg-mw{}{cluster}{node}", self.name)
    }

    /// Runs `program args` inside `ns` (a pod's or node's namespace).
    pub fn exec(&self, ns: &str, program: &Path, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// The namespace of pod `namespace/name` of `cluster`.
    pub fn pod_ns(&self, cluster: &str, namespace: &str, name: &str) -> String {
        format!("mw{}-pod-{cluster}-{namespace}-{name}", self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.run(&["down"]);
        if !out.status.success() {
            eprintln!(
                "mesh-lab down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A named scenario over a shared context.
pub type Scenario<C> = (&'static str, fn(&C));

/// Runs each scenario, catching its panic so every one reports; panics at
/// the end naming the scenarios that failed.
pub fn run_scenarios<C>(ctx: &C, scenarios: &[Scenario<C>]) {
    let mut failed = Vec::new();
    // While developing: MESH_E2E_SCENARIOS=<text>|<text>… runs only the
    // scenarios whose name contains one of them (the lab still comes up
    // whole; include the scenarios that create what later ones use).
    let only = std::env::var("MESH_E2E_SCENARIOS").ok();
    for (name, f) in scenarios {
        if let Some(only) = &only
            && !only.split('|').any(|part| name.contains(part))
        {
            eprintln!("scenario {name}: skipped (MESH_E2E_SCENARIOS={only})");
            continue;
        }
        let t = Instant::now();
        eprintln!("scenario {name}: start");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx))) {
            Ok(()) => eprintln!("scenario {name}: ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!(
                    "scenario {name}: FAILED ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
                failed.push(*name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed: {}",
        failed.len(),
        scenarios.len(),
        failed.join(", ")
    );
}

/// What a capture on the lab's underlay bridge saw.
#[derive(Debug)]
pub struct Capture {
    /// The raw pcap bytes (payloads included).
    pub bytes: Vec<u8>,
    /// Packets matching the filter, as tcpdump counted them.
    pub packets: usize,
}

impl Capture {
    /// Whether `marker` appears anywhere in the captured bytes.
    pub fn contains(&self, marker: &str) -> bool {
        self.bytes
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
    }
}

impl Lab {
    /// Captures on the underlay bridge (`filter`, tcpdump syntax) while `f` runs.
    pub fn capture(&self, filter: &str, f: impl FnOnce()) -> Capture {
        let file = self
            .dir
            .join(format!("capture-{}.pcap", std::process::id()));
        let ul = format!("mw{}-ul", self.name);
        let tcpdump = Command::new("ip")
            // -Z root: tcpdump would otherwise drop to its own user and may
            // not be allowed to write the file.
            .args([
                // --immediate-mode: without it the last second of packets
                // can be lost at SIGINT, and a check for absence passes.
                "netns",
                "exec",
                &ul,
                "tcpdump",
                "-Z",
                "root",
                "--immediate-mode",
                "-i",
                "br0",
                "-U",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tcpdump (make setup installs it)");
        // tcpdump needs a moment before it captures.
        std::thread::sleep(Duration::from_millis(800));
        f();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &tcpdump.id().to_string()])
            .status();
        let out = tcpdump.wait_with_output().expect("tcpdump");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let packets = stderr
            .lines()
            .find_map(|l| l.strip_suffix(" packets captured"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("tcpdump did not report its count: {stderr}"));
        let bytes = std::fs::read(&file).unwrap_or_default();
        // A pcap file is a 24-byte header, then 16 bytes + data per packet: a
        // check for what is absent must not pass on a file that was not written.
        assert!(
            bytes.len() >= 24 + 16 * packets,
            "the capture file holds {} bytes for {packets} packets: tcpdump could not write {}",
            bytes.len(),
            file.display()
        );
        let _ = std::fs::remove_file(&file);
        Capture { bytes, packets }
    }

    /// `mesh-echo ask <addr> -c <n>` inside pod `namespace/name` of `cluster`:
    /// the clusters that answered, in order (panics on any failure).
    pub fn ask(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        addr: &str,
        n: u32,
    ) -> Vec<serde_json::Value> {
        let out = self.exec(
            &self.pod_ns(cluster, namespace, name),
            &bin("mesh-echo"),
            &["ask", addr, "-c", &n.to_string()],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ask {addr} from {cluster}/{namespace}/{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("mesh-echo JSON")["answer"]
                    .clone()
            })
            .collect()
    }
}
