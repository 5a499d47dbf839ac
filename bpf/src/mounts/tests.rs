use std::path::{Path, PathBuf};

use super::*;

#[test]
fn bpffs_plans() {
    use Found::*;
    let under = Path::new("/sys/fs/bpf/meshwork");
    let elsewhere = Path::new("/var/lib/lab/bpffs");
    let default = || Plan::Mount(PathBuf::from(BPFFS_DEFAULT));
    // (pin root, at root, at /sys/fs/bpf, expected plan or error text)
    let cases: [(&Path, Found, Found, Result<Plan, &str>); 7] = [
        (under, Wanted, Wanted, Ok(Plan::Present)),
        (under, OtherEmpty, OtherEmpty, Ok(default())),
        // A tmpfs hiding /sys/fs/bpf (as the suite's fresh-machine run does)
        // is covered by bpffs, as Cilium's agent does.
        (under, OtherNotEmpty, OtherNotEmpty, Ok(default())),
        (under, OtherEmpty, Wanted, Err("is not on a bpf filesystem")),
        (elsewhere, Wanted, OtherEmpty, Ok(Plan::Present)),
        (
            elsewhere,
            OtherEmpty,
            Wanted,
            Ok(Plan::Mount(elsewhere.into())),
        ),
        (
            elsewhere,
            OtherNotEmpty,
            Wanted,
            Err("would hide what it holds"),
        ),
    ];
    for (root, at_root, at_default, want) in cases {
        let got = plan_bpffs(root, at_root, at_default);
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{root:?} {at_root:?} {at_default:?}"),
            (Err(w), Err(g)) => assert!(g.to_string().contains(w), "{g}"),
            (w, g) => panic!("{root:?} {at_root:?} {at_default:?}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn cgroup2_plans() {
    use Found::*;
    let root = Path::new("/run/meshwork/cgroupv2");
    assert_eq!(plan_cgroup2(root, Wanted, false).unwrap(), Plan::Present);
    assert_eq!(plan_cgroup2(root, Wanted, true).unwrap(), Plan::Present);
    assert_eq!(
        plan_cgroup2(root, OtherEmpty, true).unwrap(),
        Plan::Mount(root.into())
    );
    let private = plan_cgroup2(root, OtherEmpty, false).unwrap_err();
    assert!(
        private.to_string().contains("private cgroup namespace")
            && private.to_string().contains("nsenter --cgroup="),
        "{private}"
    );
    // A hybrid host's /sys/fs/cgroup (a tmpfs holding the v1 hierarchies) is
    // never covered.
    let hybrid = plan_cgroup2(Path::new("/sys/fs/cgroup"), OtherNotEmpty, true).unwrap_err();
    assert!(hybrid.to_string().contains("would hide"), "{hybrid}");
}
