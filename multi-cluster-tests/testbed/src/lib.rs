//! Test support: kernel objects that tests create and that remove themselves
//! on drop, also when the test panics.
//!
//! What it is for: datapath, WireGuard, component and lab tests that need
//! network namespaces, veth pairs, bridges, cgroup v2 directories and bpffs
//! pin directories, and the test kit they share: bounded waits
//! ([`Wait`], [`eventually`]) and packet captures ([`Capture`]).
//!
//! Every name carries the test process id, so tests running in parallel
//! (and helpers on the same host) never collide, and every object is removed
//! when its guard drops.
//!
//! What it is not for: production code. The node-agent and the lab manage
//! their own objects; this crate only isolates tests.
//!
//! Safety rule of the project: clients run inside namespaces created here,
//! which have no route to the host's uplink. Nothing here ever touches the
//! host namespace's routes or joins a bridge to a host interface.

mod capture;
mod cgroup;
mod cmd;
mod eventually;
mod mount;
mod netns;

pub use capture::{Capture, Captured, parse_pcap};
pub use cgroup::{BpfDir, Cgroup, cgroup2_root, ensure_bpffs};
pub use cmd::{run, run_ok, run_status};
pub use eventually::{Wait, eventually, eventually_async};
pub use mount::{MountDir, mount_at};
pub use netns::{Bridge, NetNs, unique_name, veth};

/// Panics, with what to do, unless the test runs as root. Tests that need the
/// kernel call this first: they fail loudly instead of skipping.
pub fn require_root() {
    let euid = effective_uid();
    assert!(
        euid == 0,
        "this test needs root (eBPF, network namespaces, TUN devices): run the suite as root (`make test` does)"
    );
}

fn effective_uid() -> u32 {
    // Read from /proc so this crate needs no unsafe libc call.
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("effective uid in /proc/self/status")
}
