//! The lab's own bpffs: one mount at `<state dir>/bpffs`, with a pin root per
//! node-agent below it. The lab never depends on, or disturbs, whatever the
//! host has (or lacks) at /sys/fs/bpf, so two labs, the demo and the suite
//! can run side by side. `mesh-lab down` unmounts it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mesh_testbed::{mount_at, run};

/// Where the lab's bpffs is mounted.
pub fn dir(state_dir: &Path) -> PathBuf {
    absolute(state_dir).join("bpffs")
}

/// The pin root of one node's agent.
pub fn pin_root(state_dir: &Path, node: &str) -> PathBuf {
    dir(state_dir).join(node)
}

/// Mounts the lab's bpffs unless it is mounted already.
pub fn mount(state_dir: &Path) -> anyhow::Result<()> {
    let at = dir(state_dir);
    if mount_at(&at).is_some_and(|(fs, _)| fs == "bpf") {
        return Ok(());
    }
    std::fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?;
    let out = run("mount", &["-t", "bpf", "bpf", &at.display().to_string()]);
    anyhow::ensure!(
        out.status.success(),
        "cannot mount the lab's bpffs at {}: {} (the lab needs root and a kernel with bpffs)",
        at.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Unmounts the lab's bpffs (its pins, and so the pinned links that keep
/// programs attached, go with it) and removes the directory. Returns the
/// path when something was removed.
pub fn unmount(state_dir: &Path) -> Option<PathBuf> {
    let at = dir(state_dir);
    let mut removed = false;
    for _ in 0..8 {
        if mount_at(&at).is_none() {
            break;
        }
        removed |= run("umount", &["-l", &at.display().to_string()])
            .status
            .success();
    }
    // Never recursive: only an empty, unmounted directory goes.
    if mount_at(&at).is_none() && std::fs::remove_dir(&at).is_ok() {
        removed = true;
    }
    removed.then_some(at)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
