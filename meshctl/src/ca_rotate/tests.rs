use super::*;

#[test]
fn phases_round_trip_through_the_annotation_in_order() {
    for p in [Phase::Idle, Phase::NewCa, Phase::TrustBoth, Phase::Reissued] {
        assert_eq!(Phase::parse(p.annotation()).unwrap(), p);
    }
    assert!(Phase::Idle < Phase::NewCa && Phase::NewCa < Phase::TrustBoth);
    assert!(Phase::TrustBoth < Phase::Reissued);
}

#[test]
fn an_unknown_phase_is_refused_with_what_to_do() {
    let e = Phase::parse(Some("halfway")).unwrap_err().to_string();
    assert!(e.contains("halfway") && e.contains("trust-both"), "{e}");
}
