//! Network namespaces, veth pairs and bridges.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{run, run_ok};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid36><seq36>`, at most
/// 15 characters (the kernel's interface-name limit) when `prefix` has at most 5.
pub fn unique_name(prefix: &str) -> String {
    assert!(
        prefix.len() <= 5,
        "prefix {prefix:?} too long for a 15-character interface name"
    );
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{}", base36(std::process::id()), base36(n))
}

fn base36(mut v: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A network namespace, deleted (with its processes killed) on drop. It starts
/// with only `lo` (up) and no routes: nothing inside can reach the host's uplink.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl NetNs {
    /// Creates `mw<prefix>…` (unique).
    pub fn new(prefix: &str) -> NetNs {
        crate::require_root();
        let name = format!("mw{}", unique_name(prefix));
        run_ok("ip", &["netns", "add", &name]);
        let ns = NetNs {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/var/run/netns/<name>`: what `CNI_NETNS` names, and
    /// what a thread enters with `mesh_bpf::netns::in_netns` (the one
    /// `setns` helper; this crate only creates and removes namespaces).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A command that runs in the namespace's network only (`nsenter
    /// --net`): unlike [`NetNs::command`] (`ip netns exec`, which remounts
    /// /sys), it keeps the host's bpffs and cgroup mounts, where an agent's
    /// maps are pinned and its cgroup lives.
    pub fn nsenter(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args…` inside; returns its output whatever the status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs inside and panics with stderr unless it succeeds; returns stdout.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Starts a long-running process inside; it is killed when the namespace drops.
    /// Returns its pid.
    pub fn spawn(&self, program: &str, args: &[&str]) -> u32 {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", self.name));
        let pid = child.id();
        self.children.lock().expect("children lock").push(child);
        pid
    }

    /// Keeps `child` (started by the caller, e.g. with piped output) to be
    /// killed when the namespace drops.
    pub fn adopt(&self, child: Child) {
        self.children.lock().expect("children lock").push(child);
    }

    /// Adds `addr` (CIDR form) to `dev` and sets it up.
    pub fn addr(&self, dev: &str, addr: &str) {
        self.run_ok("ip", &["addr", "add", addr, "dev", dev]);
        self.run_ok("ip", &["link", "set", dev, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Any process still inside (e.g. started by a test via `command`) would
        // keep the namespace's interfaces alive: kill them too.
        let pids = run("ip", &["netns", "pids", &self.name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with `a_name` in `a` and `b_name` in `b`, both up.
pub fn veth(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) {
    let tmp_a = unique_name("va");
    let tmp_b = unique_name("vb");
    run_ok(
        "ip",
        &[
            "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
        ],
    );
    run_ok(
        "ip",
        &["link", "set", &tmp_a, "netns", a.name(), "name", a_name],
    );
    run_ok(
        "ip",
        &["link", "set", &tmp_b, "netns", b.name(), "name", b_name],
    );
    a.run_ok("ip", &["link", "set", a_name, "up"]);
    b.run_ok("ip", &["link", "set", b_name, "up"]);
}

/// A bridge inside a namespace of its own (the underlay), never joined to any
/// host interface. Nodes attach with [`Bridge::attach`].
#[derive(Debug)]
pub struct Bridge {
    ns: NetNs,
    ports: AtomicU32,
}

impl Bridge {
    /// Creates the underlay namespace and its bridge `br0`.
    pub fn new() -> Bridge {
        let ns = NetNs::new("ul");
        ns.run_ok("ip", &["link", "add", "br0", "type", "bridge"]);
        ns.run_ok("ip", &["link", "set", "br0", "up"]);
        Bridge {
            ns,
            ports: AtomicU32::new(0),
        }
    }

    /// The namespace holding the bridge (for captures on the underlay).
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Connects `node` to the bridge through a veth whose node end is `dev`,
    /// with address `addr` (CIDR form). Returns the bridge-side port name.
    pub fn attach(&self, node: &NetNs, dev: &str, addr: &str) -> String {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        veth(node, dev, &self.ns, &port);
        self.ns
            .run_ok("ip", &["link", "set", &port, "master", "br0"]);
        node.addr(dev, addr);
        port
    }
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new()
    }
}
