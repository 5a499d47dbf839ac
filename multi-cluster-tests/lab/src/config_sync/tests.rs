use super::*;

#[test]
fn the_directory_follows_the_config_map() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cfg");
    let mut data: BTreeMap<String, String> =
        [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
    assert_eq!(apply(&d, &data).unwrap(), ["a", "b"]);
    assert!(apply(&d, &data).unwrap().is_empty(), "nothing changed");
    data.insert("a".into(), "3".into());
    data.remove("b");
    assert_eq!(apply(&d, &data).unwrap(), ["a", "b"]);
    assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "3");
    assert!(!d.join("b").exists());
    data.insert("../x".into(), "bad".into());
    assert!(apply(&d, &data).is_err());
}

#[test]
fn secret_keys_are_projected_into_files_and_only_rewritten_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let crt = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let files: Vec<SecretFile> = vec![
        format!("tls/tls.crt={}", crt.display()).parse().unwrap(),
        format!("tls/tls.key={}", key.display()).parse().unwrap(),
        format!("absent/x={}", dir.path().join("x").display())
            .parse()
            .unwrap(),
    ];
    let mut secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    secrets.insert(
        "tls".into(),
        [
            ("tls.crt".to_string(), b"C1".to_vec()),
            ("tls.key".to_string(), b"K1".to_vec()),
        ]
        .into(),
    );
    assert_eq!(
        project(&files, &secrets).unwrap(),
        [crt.clone(), key.clone()]
    );
    assert!(project(&files, &secrets).unwrap().is_empty(), "unchanged");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keys are private");
    secrets
        .get_mut("tls")
        .unwrap()
        .insert("tls.crt".into(), b"C2".to_vec());
    assert_eq!(project(&files, &secrets).unwrap(), vec![crt.clone()]);
    assert_eq!(std::fs::read(&crt).unwrap(), b"C2");
    assert!(
        !dir.path().join("x").exists(),
        "a missing Secret writes nothing"
    );
    assert!("no-equals".parse::<SecretFile>().is_err());
    assert!("noslash=/x".parse::<SecretFile>().is_err());
}
