//! The `mesh-test-apiserver` binary started as the lab starts it: on a
//! loopback port, writing its kubeconfig and, once it serves, a ready file
//! with its address. Killed when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_testbed::Wait;

use super::kubectl::Kubectl;

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_mesh-test-apiserver");

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running server binary and the temp dir holding what it wrote.
pub struct ServerProcess {
    _server: Killed,
    /// The kubeconfig it wrote (context `lab-c1`).
    pub kubeconfig: PathBuf,
    /// The ready file: the address it listens on.
    pub ready: PathBuf,
    /// Its temp dir (kubeconfig, ready file, kubectl's cache, manifests).
    pub dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary (`--listen 127.0.0.1:0 --context lab-c1` and
    /// `extra` flags) and waits up to 20 s for its ready file.
    pub fn start(extra: &[&str]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let ready = dir.path().join("ready");
        let child = Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .args(["--context", "lab-c1"])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("mesh-test-apiserver binary starts");
        let server = Killed(child);
        Wait::new("the server's ready file")
            .timeout(Duration::from_secs(20))
            .interval(Duration::from_millis(50))
            .until(|| ready.exists());
        ServerProcess {
            _server: server,
            kubeconfig,
            ready,
            dir,
        }
    }

    /// kubectl against it, with a cache dir of its own.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig, self.dir.path().join("kube-cache"))
    }
}
