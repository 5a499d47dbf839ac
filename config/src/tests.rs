use super::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn a_mounted_configmap_becomes_flags_before_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // What the kubelet mounts: keys are symlinks into a ..data directory.
    std::fs::create_dir(d.join("..2026_11_24")).unwrap();
    std::fs::write(d.join("..2026_11_24/cluster-name"), "c1\n").unwrap();
    std::fs::write(d.join("..2026_11_24/cluster-id"), "7").unwrap();
    std::os::unix::fs::symlink("..2026_11_24", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cluster-name", d.join("cluster-name")).unwrap();
    std::os::unix::fs::symlink("..data/cluster-id", d.join("cluster-id")).unwrap();
    let dir = d.display().to_string();
    let args = args_with_config_dir(os(&[
        "agent",
        &format!("--config-dir={dir}"),
        "--cluster-id=9",
    ]))
    .unwrap();
    assert_eq!(
        args,
        os(&[
            "agent",
            "--cluster-id=7",
            "--cluster-name=c1",
            &format!("--config-dir={dir}"),
            "--cluster-id=9"
        ])
    );
    let args = args_with_config_dir(os(&["agent", "--config-dir", &dir])).unwrap();
    assert_eq!(args.len(), 5);
    assert_eq!(
        args_with_config_dir(os(&["agent", "--x=1"])).unwrap(),
        os(&["agent", "--x=1"])
    );
}

#[test]
fn bad_directories_name_the_problem() {
    let err = args_with_config_dir(os(&["a", "--config-dir=/nonexistent/meshwork"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/meshwork") && err.contains("is the ConfigMap mounted"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config-dir"), "/etc").unwrap();
    let err = args_with_config_dir(os(&[
        "a",
        &format!("--config-dir={}", tmp.path().display()),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot be set from the config directory"),
        "{err}"
    );
}
