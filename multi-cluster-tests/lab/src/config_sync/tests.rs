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
