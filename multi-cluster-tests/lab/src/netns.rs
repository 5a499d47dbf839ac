//! Entering a lab namespace from a thread: how the lab's port forwarder
//! opens connections inside a cluster's control namespace.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

/// The bind-mount `ip netns add` creates for a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Moves the calling thread into namespace `name`. Call it only on a
/// thread dedicated to that namespace: sockets the thread creates afterwards
/// belong to the namespace.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let f = File::open(netns_path(name)).map_err(|e| {
        anyhow::anyhow!("network namespace {name}: {e}; is the lab up (`mesh-lab status`)?")
    })?;
    setns(&f, CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow::anyhow!("enter network namespace {name}: {e}"))?;
    Ok(())
}
