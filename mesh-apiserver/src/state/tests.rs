use super::*;

#[test]
fn keys_round_trip_through_the_layout() {
    let k = record_key("b", Kind::Endpoint, "default/web-1");
    assert_eq!(k, "meshwork/v1/b/endpoints/default/web-1");
    assert_eq!(
        parse_key(&k).unwrap(),
        ParsedKey::Record {
            cluster: "b".into(),
            kind: Kind::Endpoint,
            key: "default/web-1".into()
        }
    );
    assert_eq!(
        parse_key(&synced_key("b", Kind::Service)).unwrap(),
        ParsedKey::Synced {
            cluster: "b".into(),
            kind: Kind::Service
        }
    );
    for bad in [
        "other/x",
        "meshwork/v1/b",
        "meshwork/v1/b/pods/x",
        "meshwork/v1//nodes/x",
    ] {
        assert!(parse_key(bad).is_err(), "{bad} should not parse");
    }
}
