//! `mesh-lab down`: removes everything a lab created, whether or not `up`
//! finished. It works from the state file and, for what the state file may
//! have missed, from the naming contract: every namespace, cgroup and
//! WireGuard socket of lab `<name>` starts with `mw<name>-` (or
//! `mwg-mw<name>` for WireGuard interfaces), which nothing else uses.

use std::path::Path;

use mesh_testbed::run;

use crate::state::{LabState, Proc};

/// What `down` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Removed {
    /// Processes killed.
    pub processes: usize,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Other paths removed (the lab's bpffs, cgroups, sockets).
    pub paths: Vec<String>,
}

/// Removes lab `prefix` (`mw<name>`) recorded in `state_dir`.
pub fn down(state_dir: &Path, prefix: &str) -> anyhow::Result<Removed> {
    let state = LabState::load(state_dir)?;
    let mut removed = Removed::default();
    // Processes first (reverse start order), then whatever still runs inside
    // a lab namespace.
    for p in state.procs.iter().rev() {
        if kill_if_ours(p) {
            removed.processes += 1;
        }
    }
    // Host-namespace helpers (port forwarders) carry `--lab=<prefix>`; a
    // forwarder started just before `up` was killed may be missing from the
    // state file.
    removed.processes += kill_host_helpers(prefix);
    let list = run("ip", &["netns", "list"]);
    let ours: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    for ns in &ours {
        let pids = run("ip", &["netns", "pids", ns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            if run("kill", &["-9", pid]).status.success() {
                removed.processes += 1;
            }
        }
    }
    for ns in ours {
        if run("ip", &["netns", "del", &ns]).status.success() {
            removed.namespaces.push(ns);
        }
    }
    if let Some(p) = crate::bpffs::unmount(state_dir) {
        removed.paths.push(p.display().to_string());
    }
    let cgroup_root = mesh_testbed::cgroup2_root();
    for (dir, pat) in [
        (cgroup_root.as_path(), format!("{prefix}-")),
        (Path::new("/var/run/wireguard"), format!("mwg-{prefix}")),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&pat) {
                continue;
            }
            let path = e.path();
            if dir == cgroup_root.as_path() {
                evacuate_cgroup(&path, &cgroup_root);
                let _ = std::fs::remove_dir(&path);
            } else if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
            removed.paths.push(path.display().to_string());
        }
    }
    // The files the lab wrote in its state directory (CAs, certificates,
    // kubeconfigs, config dirs, etcd data, logs), named one by one: the
    // directory itself may be any path a person chose.
    let clusters: Vec<String> = match &state.plan {
        Some(plan) => plan.clusters.iter().map(|c| c.name.to_string()).collect(),
        None => (1..=crate::plan::MAX_CLUSTERS)
            .map(|c| format!("c{c}"))
            .collect(),
    };
    for name in clusters.iter().map(String::as_str).chain(["logs"]) {
        let p = state_dir.join(name);
        if p.is_dir() && std::fs::remove_dir_all(&p).is_ok() {
            removed.paths.push(p.display().to_string());
        }
    }
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "kubeconfig" || name.ends_with(".kube-port") || name.ends_with(".pcap") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(LabState::file(state_dir));
    Ok(removed)
}

fn evacuate_cgroup(path: &Path, root: &Path) {
    if let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(root.join("cgroup.procs"), pid);
        }
    }
}

/// Kills `p` if that pid still runs the recorded program.
fn kill_if_ours(p: &Proc) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let running = String::from_utf8_lossy(argv0);
    let matches = running.rsplit('/').next() == Some(p.program.as_str())
        || String::from_utf8_lossy(&cmdline).contains(&p.program);
    matches && run("kill", &["-9", &p.pid.to_string()]).status.success()
}

fn kill_host_helpers(prefix: &str) -> usize {
    let marker = format!("--lab={prefix}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for e in procs.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
            && run("kill", &["-9", &name]).status.success()
        {
            killed += 1;
        }
    }
    killed
}
