//! The kind scripts cannot run here (no Docker), so what can be checked is:
//! they pass shellcheck, and --dry-run prints the exact commands, in order,
//! without touching anything.

use std::process::Command;

use mesh_chart::repo;

#[test]
fn scripts_pass_shellcheck() {
    let scripts = [
        "multi-cluster-tests/kind/kind-mesh.sh",
        "helm/images/install-cni.sh",
        "helm/images/mount-bpffs-cgroup.sh",
        "scripts/setup.sh",
        "scripts/test.sh",
        "scripts/demo.sh",
        "scripts/bench.sh",
    ];
    let out = Command::new("shellcheck")
        .args(scripts.iter().map(|s| repo().join(s)))
        .output()
        .expect("shellcheck must be installed (make setup)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn dry_run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("multi-cluster-tests/kind/kind-mesh.sh"))
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dry_run_prints_the_commands_in_order_and_changes_nothing() {
    let kind_dir = repo().join(".kind");
    let existed = kind_dir.exists();
    let up = dry_run(&["up", "--clusters", "3", "--encryption"]);
    let commands: Vec<&str> = up.lines().filter(|l| l.starts_with("+ ")).collect();
    let creates = commands
        .iter()
        .filter(|l| l.starts_with("+ kind create cluster"))
        .count();
    let installs: Vec<&&str> = commands
        .iter()
        .filter(|l| l.starts_with("+ helm install"))
        .collect();
    let connects = commands
        .iter()
        .filter(|l| l.contains(" connect --context "))
        .count();
    assert_eq!((creates, installs.len(), connects), (3, 3, 3), "{up}");
    assert!(
        commands[0].starts_with("+ make -C") && commands[0].contains("images"),
        "images are built first: {up}"
    );
    for (i, line) in installs.iter().enumerate() {
        let c = i + 1;
        assert!(
            line.contains(&format!("cluster.id={c}"))
                && line.contains(&format!("ipam.podCIDR=10.{c}.0.0/16")),
            "{line}"
        );
        assert!(line.contains("encryption.enabled=true"), "{line}");
    }
    assert!(
        up.contains("disableDefaultCNI: true") && up.contains("kubeProxyMode: none"),
        "{up}"
    );
    let first_connect = up.find(" connect --context ").unwrap();
    assert!(
        up.rfind("+ helm install").unwrap() < first_connect,
        "connect only after every install"
    );
    assert_eq!(
        kind_dir.exists(),
        existed,
        "--dry-run must not write kind configs"
    );

    // Lines are shell-quoted (printf %q), so they can be pasted back as they are.
    let test = dry_run(&["test", "--clusters", "2"]).replace("\\,", ",");
    assert!(
        test.contains("MESHWORK_E2E_CONTEXTS=kind-meshwork-c1,kind-meshwork-c2")
            && test.contains("--test contexts"),
        "{test}"
    );
    let down = dry_run(&["down", "--clusters", "2"]);
    assert_eq!(
        down.lines()
            .filter(|l| l.starts_with("+ kind delete cluster"))
            .count(),
        2,
        "{down}"
    );
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let out = Command::new("bash")
        .arg(repo().join("multi-cluster-tests/kind/kind-mesh.sh"))
        .args(["up", "--clusters", "12", "--dry-run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clusters must be 1-8"));
}
