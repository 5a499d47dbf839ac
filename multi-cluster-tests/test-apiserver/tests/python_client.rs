//! The official Kubernetes Python client (Debian's python3-kubernetes, run
//! with /usr/bin/python3) against the server: `tests/python_client.py`
//! creates without apiVersion/kind, lists, watches with
//! `watch.Watch().stream()` resumed from a resourceVersion, patches three
//! ways, deletes, and writes and reads Events through core/v1 and
//! events.k8s.io/v1. The script asserts; this test checks its exit status
//! and shows its output when it fails.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_test_apiserver::{Config, TestApiServer};

/// Longest the script may run (it takes about a second).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the script to completion (killed after `SCRIPT_TIMEOUT`); returns
/// its success, stdout and stderr.
fn run_script(args: &[&str], tmp: &std::path::Path) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_client.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        // Anything the client writes to a temporary directory stays in ours.
        .env("TMPDIR", tmp)
        .env("HOME", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (scripts/setup.sh installs python3-kubernetes)");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for python3") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, mut err) = (out.join().unwrap(), err.join().unwrap());
    if status.is_none() {
        err.push_str(&format!("\n(killed after {SCRIPT_TIMEOUT:?})"));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_watches_writes_and_reads_events_through_both_apis() {
    let mut cfg = Config::local("lab-c1");
    // The script also checks allowWatchBookmarks=True; don't make it wait 5 s.
    cfg.bookmark_interval = Duration::from_millis(200);
    let server = TestApiServer::start(cfg).await.expect("server starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let url = server.url();
    let tmp = dir.path().to_path_buf();
    let started = Instant::now();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run_script(
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--context",
                "lab-c1",
                "--server",
                &url,
                "--workdir",
                tmp.to_str().unwrap(),
            ],
            &tmp,
        )
    })
    .await
    .unwrap();
    assert!(
        ok,
        "the Python client script failed after {:?}\n--- stdout\n{out}\n--- stderr\n{err}",
        started.elapsed()
    );
    assert!(
        out.contains("all Python client checks passed"),
        "the script ended early:\n{out}\n{err}"
    );
    eprintln!("Python client script: {:?}\n{out}", started.elapsed());
}
