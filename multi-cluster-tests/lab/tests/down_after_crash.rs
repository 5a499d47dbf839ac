//! `mesh-lab down` after a killed `mesh-lab up` leaves no namespaces,
//! processes, pinned bpffs directories, cgroups or WireGuard sockets.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_testbed::{require_root, run_ok};

const LAB: &str = "crash";
const PREFIX: &str = "mwcrash";

fn lab(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mesh-lab"))
        .arg(format!("--state-dir={}", state.display()))
        .arg(format!("--name={LAB}"))
        .args(args)
        .output()
        .expect("run mesh-lab")
}

fn lab_namespaces() -> Vec<String> {
    run_ok("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
        .map(str::to_string)
        .collect()
}

fn lab_processes() -> Vec<String> {
    let marker = format!("--lab={PREFIX}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            c.split(|b| *b == 0).any(|a| a == marker.as_bytes())
                || String::from_utf8_lossy(c).contains("mwcrash-sleeper")
        })
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

#[test]
fn down_after_a_killed_up_leaves_nothing_behind() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("lab");
    // Start `up` and kill it as soon as it has created some namespaces and a
    // forwarder process, so it stops half-way.
    let mut up = Command::new(env!("CARGO_BIN_EXE_mesh-lab"))
        .args([
            format!("--state-dir={}", state.display()),
            format!("--name={LAB}"),
        ])
        .args(["up", "--clusters", "3", "--nodes", "2"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab_namespaces().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    let created = lab_namespaces();
    assert!(
        !created.is_empty(),
        "up created nothing before it was killed"
    );

    // What components would leave: a process inside a node namespace, a
    // pinned bpffs directory, a cgroup, a WireGuard UAPI socket.
    let ns = &created[created.len() - 1];
    let sleeper = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "bash",
            "-c",
            "exec -a mwcrash-sleeper sleep 600",
        ])
        .spawn()
        .unwrap();
    // The lab's own bpffs, as `up` mounts it before starting the agents.
    mesh_lab::bpffs::mount(&state).unwrap();
    let bpf = mesh_lab::bpffs::pin_root(&state, "c1-n1");
    std::fs::create_dir_all(bpf.join("maps")).unwrap();
    let cg = mesh_testbed::cgroup2_root().join(format!("{PREFIX}-c1-n1"));
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let sock = Path::new("/var/run/wireguard").join(format!("mwg-{PREFIX}11.sock"));
    std::fs::write(&sock, b"").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !lab_processes().is_empty(),
        "the test's own leftovers should be visible before down"
    );

    let out = lab(&state, &["down"]);
    assert!(
        out.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sleeper);

    assert_eq!(
        lab_namespaces(),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert_eq!(
        lab_processes(),
        Vec::<String>::new(),
        "processes left behind"
    );
    assert!(!bpf.exists(), "bpffs directory left behind");
    assert_eq!(
        mesh_testbed::mount_at(&mesh_lab::bpffs::dir(&state)),
        None,
        "the lab's bpffs is still mounted"
    );
    assert!(!cg.exists(), "cgroup left behind");
    assert!(!sock.exists(), "WireGuard socket left behind");
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left in the state dir: {left:?}");
    // A second down is harmless.
    assert!(lab(&state, &["down"]).status.success());
}

#[test]
fn a_second_up_refuses_until_down() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("lab");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), br#"{"plan":{"prefix":"mwcrash2","underlay_ns":"mwcrash2-ul","clusters":[],"encryption":false},"procs":[],"kube_api_ports":{},"ready":false}"#).unwrap();
    let out = lab(&state, &["up", "--clusters", "1", "--nodes", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mesh-lab down"), "{err}");
    let out = lab(&state, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("incomplete"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(lab(&state, &["down"]).status.success());
}
