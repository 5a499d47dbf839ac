use super::*;

#[test]
fn targets_parse_with_and_without_port() {
    assert_eq!(
        parse_target("shop/web:80"),
        Ok(("shop".into(), "web".into(), Some(80)))
    );
    assert_eq!(
        parse_target("shop/web"),
        Ok(("shop".into(), "web".into(), None))
    );
    for bad in [
        "web",
        "shop/",
        "/web",
        "a/b/c",
        "shop/web:0",
        "shop/web:http",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}
