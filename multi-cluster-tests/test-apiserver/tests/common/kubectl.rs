//! The stock kubectl run against a test server: its kubeconfig, a cache dir
//! of the test's own (never the user's), and errors that print what kubectl
//! said.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// How to run kubectl against one server.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    context: Option<String>,
}

impl Kubectl {
    /// kubectl with `--kubeconfig kubeconfig --cache-dir cache_dir`.
    pub fn new(kubeconfig: &Path, cache_dir: PathBuf) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir,
            context: None,
        }
    }

    /// Names the context (`--context`) instead of the kubeconfig's current one.
    pub fn context(mut self, context: &str) -> Kubectl {
        self.context = Some(context.to_string());
        self
    }

    /// The command, global flags set, for the caller's arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(ctx) = &self.context {
            c.args(["--context", ctx]);
        }
        c.arg("--cache-dir").arg(&self.cache_dir);
        c
    }

    /// Runs `kubectl args…`; its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("kubectl runs (the machine image ships kubectl)")
    }

    /// Runs `kubectl args…`, panics with what it printed unless it succeeds;
    /// returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
    }

    /// `kubectl args… -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl -o json parses")
    }
}
