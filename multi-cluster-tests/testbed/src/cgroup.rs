//! cgroup v2 directories and bpffs pin directories.

use std::path::{Path, PathBuf};

use crate::netns::unique_name;

/// Where cgroup v2 is mounted on this machine.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

/// A cgroup v2 directory created for one test, removed on drop (its
/// processes are moved back to the root first).
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<cgroup2 root>/meshwork-test-<unique>`.
    pub fn new() -> Cgroup {
        crate::require_root();
        let root = cgroup2_root();
        let path = root.join(format!("meshwork-test-{}", unique_name("cg")));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Cgroup { path }
    }

    /// Its directory (to attach programs to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", self.path.display()));
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Cgroup::new()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let root = cgroup2_root();
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The cgroup v2 mount point: [`CGROUP2_ROOT`] when it exists (hybrid
/// hierarchy, as on this machine), else `/sys/fs/cgroup`.
pub fn cgroup2_root() -> PathBuf {
    let unified = Path::new(CGROUP2_ROOT);
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted yet.
pub fn ensure_bpffs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return;
    }
    crate::cmd::run_ok("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]);
}

/// A bpffs directory for one test's pinned maps, removed with everything in
/// it on drop.
#[derive(Debug)]
pub struct BpfDir {
    path: PathBuf,
}

impl BpfDir {
    /// Creates `/sys/fs/bpf/meshwork-test-<unique>` (mounting bpffs if needed).
    pub fn new() -> BpfDir {
        crate::require_root();
        ensure_bpffs();
        let path = PathBuf::from(format!("/sys/fs/bpf/meshwork-test-{}", unique_name("bp")));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        BpfDir { path }
    }

    /// Its directory (the pin root to give the loader).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for BpfDir {
    fn default() -> Self {
        BpfDir::new()
    }
}

impl Drop for BpfDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
