//! A fresh machine: the real node-agent mounts the bpffs and cgroup v2 it
//! needs when they are missing, says what to do when it may not, and the
//! chart's init step, run inside a private cgroup namespace as a container
//! runs, still leads the agent's socket LB to the host's cgroup v2 root
//! (checked with bpftool).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mesh_agent_api::AgentClient;
use mesh_testbed::{BpfDir, Cgroup, MountDir, NetNs, cgroup2_root, require_root};
use serde_json::Value;

mod common;

use common::AGENT;

/// An agent without Kubernetes or a mesh: just the datapath and its API.
struct Agent {
    ns: NetNs,
    dir: tempfile::TempDir,
}

impl Agent {
    fn new() -> Agent {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
        Agent {
            ns: NetNs::new("km"),
            dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    /// The agent's command line, run in the test's network namespace
    /// (nsenter keeps the host's mounts, unlike `ip netns exec`), optionally
    /// behind `wrapper` (e.g. setpriv), which runs inside the namespace.
    fn command(&self, wrapper: &[&str], bpf: &Path, cgroup: &Path) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = self.ns.nsenter(program);
                c.args(args).arg(AGENT);
                c
            }
            None => common::agent_command(&self.ns),
        };
        c.args([
            "--cluster-name=c1",
            "--cluster-id=1",
            "--node-name=n1",
            &format!("--state-dir={}", self.dir.path().join("state").display()),
            &format!("--agent-socket={}", self.socket().display()),
            &format!("--bpf-root={}", bpf.display()),
            &format!("--cgroup-root={}", cgroup.display()),
            &format!("--wireguard-interface={}", self.ns.name()),
            "--metrics-address=127.0.0.1:0",
        ])
        .stdin(Stdio::null());
        c
    }

    /// Starts the agent (killed with the namespace) and waits until its API
    /// answers; panics with its log if it exits or does not answer in 20 s.
    fn start(&self, bpf: &Path, cgroup: &Path) {
        let log_path = self.dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("agent log");
        let mut child = self
            .command(&[], bpf, cgroup)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node-agent");
        common::wait_answering(
            &mut child,
            &self.socket(),
            &log_path,
            Duration::from_secs(20),
            Duration::from_millis(100),
        );
        self.ns.adopt(child);
    }

    /// Runs the agent to its exit, which must be a failure, and returns its
    /// standard error.
    fn fails(&self, wrapper: &[&str], bpf: &Path, cgroup: &Path) -> String {
        let out: Output = self
            .command(wrapper, bpf, cgroup)
            .output()
            .expect("run node-agent");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "the agent must not start:\n{err}");
        assert!(
            AgentClient::new(self.socket()).status().is_err(),
            "nothing serves after a failed start"
        );
        err
    }
}

/// Runs the agent without CAP_SYS_ADMIN (still uid 0).
const NO_SYS_ADMIN: [&str; 3] = ["setpriv", "--bounding-set=-sys_admin", "--"];

#[test]
fn missing_bpffs_and_cgroup2_are_mounted_and_the_agent_runs() {
    let bpf = MountDir::new("bpf");
    let cgroup = MountDir::new("cg");
    // Declared last, dropped first: the agent stops before the unmounts.
    let agent = Agent::new();
    assert_eq!(bpf.top_mount(), None, "starts as a plain directory");
    let pin_root = bpf.path();
    agent.start(pin_root, cgroup.path());
    assert_eq!(
        bpf.top_mount().map(|(fs, _)| fs).as_deref(),
        Some("bpf"),
        "bpffs mounted on the pin root"
    );
    let (fs, root) = cgroup.top_mount().expect("cgroup v2 mounted");
    assert_eq!(fs, "cgroup2");
    assert_eq!(root, "/", "the hierarchy's root, where every process is");
    assert!(
        std::fs::read_dir(pin_root).expect("pins").count() > 5,
        "maps pinned on the new bpffs"
    );
    // Dropping the namespace kills the agent; unmounting the bpffs releases
    // its pinned links, which detaches the socket LB from the root.
}

#[test]
fn without_the_right_to_mount_the_agent_says_what_to_do() {
    let plain = MountDir::new("bpf");
    let real_bpffs = BpfDir::new();
    let cgroup = Cgroup::new();
    let agent = Agent::new();
    let err = agent.fails(&NO_SYS_ADMIN, plain.path(), cgroup.path());
    let at = plain.path().display().to_string();
    assert!(
        err.contains(&format!("cannot mount bpffs at {at}"))
            && err.contains("run node-agent as root")
            && err.contains(&format!("mount -t bpf bpf {at}")),
        "{err}"
    );
    assert_eq!(
        err.matches("cannot mount").count(),
        1,
        "a cause repeated: {err}"
    );
    assert_eq!(plain.top_mount(), None, "nothing mounted");

    let empty = MountDir::new("cg");
    let err = agent.fails(&NO_SYS_ADMIN, real_bpffs.path(), empty.path());
    let at = empty.path().display().to_string();
    assert!(
        err.contains(&format!("cannot mount cgroup2 at {at}"))
            && err.contains(&format!("mount -t cgroup2 none {at}")),
        "{err}"
    );

    // A directory with contents is never covered.
    std::fs::write(plain.path().join("keep"), "data").expect("write");
    let err = agent.fails(&[], plain.path(), cgroup.path());
    assert!(err.contains("would hide what it holds"), "{err}");
    assert!(plain.path().join("keep").exists(), "nothing lost");
    std::fs::remove_file(plain.path().join("keep")).expect("remove");

    // From a private cgroup namespace the agent refuses to mount its own
    // subtree as if it were the host's root.
    let err = agent.fails(
        &["unshare", "--cgroup", "--"],
        real_bpffs.path(),
        empty.path(),
    );
    assert!(
        err.contains("private cgroup namespace") && err.contains("nsenter --cgroup="),
        "{err}"
    );
    assert_eq!(empty.top_mount(), None, "nothing mounted");
}

/// The chart's init container (`helm/images/mount-bpffs-cgroup.sh`) as a
/// container runtime runs it: inside a child cgroup, in a private cgroup and
/// mount namespace, its volumes shared with the host (Bidirectional). The
/// agent then attaches its socket LB where the init step mounted cgroup v2,
/// and bpftool, on the host, finds those programs at the host's cgroup v2
/// root, not in the container's cgroup.
#[test]
fn init_step_in_a_private_cgroup_namespace_attaches_at_the_hosts_cgroup_root() {
    let host_root = cgroup2_root();
    let container = Cgroup::new();
    let bpf = MountDir::new("bpf").shared();
    let cgroup = MountDir::new("cg").shared();
    let agent = Agent::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/images/mount-bpffs-cgroup.sh");
    // The host's cgroup namespace, entered through the host's /proc: this
    // machine's pid 1 may not be inspected, so the test's own process (in
    // the initial cgroup namespace) stands for it.
    assert!(
        mesh_bpf::mounts::in_init_cgroup_namespace().expect("cgroupns"),
        "the test must run in the host's cgroup namespace"
    );

    // The control: the naive mount from the container's cgroup namespace
    // yields the container's own cgroup as the mount's root.
    let naive = MountDir::new("cg").shared();
    in_container(
        &container,
        &format!("mount -t cgroup2 none {}", naive.path().display()),
    );
    let (fs, root) = naive.top_mount().expect("naive mount reached the host");
    assert_eq!(fs, "cgroup2");
    let container_rel = container
        .path()
        .strip_prefix(&host_root)
        .expect("test cgroup below the root");
    assert_eq!(
        Path::new(&root),
        Path::new("/").join(container_rel),
        "without the fix the mount is the container's subtree"
    );

    in_container(
        &container,
        &format!(
            "BPFFS_ROOT={} CGROUP_ROOT={} HOST_CGROUP_NS=/proc/{}/ns/cgroup sh {}",
            bpf.path().display(),
            cgroup.path().display(),
            std::process::id(),
            script.display()
        ),
    );
    assert_eq!(bpf.top_mount().map(|(fs, _)| fs).as_deref(), Some("bpf"));
    let (fs, root) = cgroup.top_mount().expect("init step mounted cgroup v2");
    assert_eq!(fs, "cgroup2");
    assert_eq!(root, "/", "the host's cgroup v2 root");

    let pin_root = bpf.path().join("meshwork");
    agent.start(&pin_root, cgroup.path());

    // Our programs, by id, from the links the agent pinned.
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(pin_root.join("links")).expect("links dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("cgroup-") {
            let link = bpftool(&["link", "show", "pinned", path.to_str().unwrap()]);
            ours.push(link["prog_id"].as_u64().expect("prog_id"));
        }
    }
    assert_eq!(ours.len(), 4, "connect4, sendmsg4, recvmsg4, getpeername4");
    let tree = bpftool(&["cgroup", "tree", host_root.to_str().unwrap()]);
    let attached_at = |cg: &Path| -> Vec<u64> {
        tree.as_array()
            .expect("cgroup tree")
            .iter()
            .filter(|e| e["cgroup"].as_str().map(Path::new) == Some(cg))
            .flat_map(|e| e["programs"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["id"].as_u64())
            .collect()
    };
    let at_root = attached_at(&host_root);
    for id in &ours {
        assert!(
            at_root.contains(id),
            "program {id} not at the host's root {}: {tree:#}",
            host_root.display()
        );
    }
    assert!(
        attached_at(container.path())
            .iter()
            .all(|id| !ours.contains(id)),
        "nothing of ours in the container's cgroup"
    );
}

/// Runs `sh -c cmd` as a container would: in `cgroup`, then in new cgroup
/// and mount namespaces whose mounts keep their propagation (so the shared
/// volumes reach the host).
fn in_container(cgroup: &Cgroup, cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec unshare --cgroup --mount --propagation unchanged sh -c '{cmd}'",
            cgroup.path().display()
        ))
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool must be installed (make setup)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}
