use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn atomic_write_sets_mode_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.key");
    write_atomic(&p, b"one", KEY_MODE).unwrap();
    write_atomic(&p, b"two", KEY_MODE).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: rename must fail, and neither a
    // partial target nor the temporary file may remain.
    let p = dir.path().join("target");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("inside"), b"x").unwrap();
    let err = write_atomic(&p, b"data", CERT_MODE).unwrap_err();
    assert!(err.to_string().contains("target"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("target")]);
}

#[test]
fn key_file_with_open_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("open.key");
    std::fs::write(&p, b"x").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_key_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("open.key") && err.contains("chmod 600"),
        "{err}"
    );
    // Group-readable is fine (a Secret volume with the pod's fsGroup).
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(read_key_file(&p).unwrap(), "x");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o602)).unwrap();
    assert!(read_key_file(&p).is_err(), "writable by others");
}

#[test]
fn malformed_and_missing_pem() {
    let err = parse_certs("hello", "input.pem").unwrap_err().to_string();
    assert!(
        err.contains("input.pem") && err.contains("CERTIFICATE"),
        "{err}"
    );
    let broken = "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n";
    let err = parse_certs(broken, "broken.pem").unwrap_err().to_string();
    assert!(
        err.contains("broken.pem") && err.contains("malformed"),
        "{err}"
    );
    let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let err = parse_certs(not_x509, "junk.pem").unwrap_err().to_string();
    assert!(err.contains("junk.pem") && err.contains("X.509"), "{err}");
    let err = parse_key_pair("nothing", "k.pem").unwrap_err().to_string();
    assert!(
        err.contains("k.pem") && err.contains("PRIVATE KEY"),
        "{err}"
    );
}
