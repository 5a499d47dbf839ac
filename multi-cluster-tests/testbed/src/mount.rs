//! Directories that tests mount filesystems on, unmounted (every stacked
//! mount) and removed on drop.

use std::path::{Path, PathBuf};

use crate::netns::unique_name;

/// A fresh directory under the system temp dir, on the temp dir's own
/// filesystem until something is mounted on it.
#[derive(Debug)]
pub struct MountDir {
    path: PathBuf,
}

impl MountDir {
    /// Creates `<tmp>/meshwork-mnt-<unique>`.
    pub fn new(prefix: &str) -> MountDir {
        crate::require_root();
        let path = std::env::temp_dir().join(format!("meshwork-mnt-{}", unique_name(prefix)));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        MountDir { path }
    }

    /// Makes the directory a shared bind mount of itself: what a kubelet
    /// gives a container for a hostPath volume with `mountPropagation:
    /// Bidirectional`, so a mount made on it from another mount namespace
    /// (created with `--propagation unchanged`) appears here too.
    pub fn shared(self) -> MountDir {
        let p = self.path.to_str().expect("utf-8 path");
        crate::cmd::run_ok("mount", &["--bind", p, p]);
        crate::cmd::run_ok("mount", &["--make-shared", p]);
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The filesystem type and the mount's root within its filesystem
    /// (`/proc/self/mountinfo` fields 9 and 4) of the topmost mount on this
    /// directory, if anything is mounted on it.
    pub fn top_mount(&self) -> Option<(String, String)> {
        mount_at(&self.path)
    }
}

/// Type and root of the topmost mount at `path` (the last one listed).
pub fn mount_at(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let want = path.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        if f.get(4) != Some(&want) {
            return None;
        }
        Some((f.get(sep + 1)?.to_string(), f.get(3)?.to_string()))
    })
}

impl Drop for MountDir {
    fn drop(&mut self) {
        let p = self.path.to_str().unwrap_or_default().to_string();
        // Unmount every stacked mount (a filesystem over a bind of itself).
        for _ in 0..8 {
            if mount_at(&self.path).is_none() {
                break;
            }
            let _ = std::process::Command::new("umount")
                .args(["-l", &p])
                .status();
        }
        // Never a recursive removal: were a cgroup2 or bpffs mount still
        // there, it would delete the host's cgroups or pins.
        if mount_at(&self.path).is_none() {
            let _ = std::fs::remove_dir(&self.path);
        } else {
            eprintln!("still mounted, left in place: {}", self.path.display());
        }
    }
}
