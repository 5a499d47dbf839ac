use mesh_api::{ClusterName, NodeName};
use time::Duration;

use super::*;
use crate::{CertificateAuthority, SpiffeId, TlsIdentity, TrustDomain};

fn ca() -> CertificateAuthority {
    CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap()
}

#[test]
fn renewal_is_due_after_two_thirds_of_the_lifetime() {
    let start = OffsetDateTime::now_utc();
    let life = Lifetime {
        not_before: start,
        not_after: start + Duration::seconds(120),
    };
    assert_eq!(life.renew_at(), start + Duration::seconds(80));
    for (at, due) in [
        (0, false),
        (79, false),
        (80, true),
        (119, true),
        (200, true),
    ] {
        assert_eq!(
            life.renewal_due(start + Duration::seconds(at)),
            due,
            "{at} s in"
        );
    }
    assert_eq!(life.seconds_left(start + Duration::seconds(100)), 20.0);
    assert!(life.seconds_left(start + Duration::seconds(130)) < 0.0);
}

#[test]
fn lifetimes_shorter_than_a_minute_are_refused() {
    assert!(Validity::lasting(std::time::Duration::from_secs(59)).is_err());
    let v = Validity::lasting(std::time::Duration::from_secs(120)).unwrap();
    assert_eq!((v.not_after - v.not_before).whole_seconds(), 180);
}

/// The signer takes only the public key from the request: whatever the
/// request asks for, the certificate names the id the signer chose.
#[test]
fn a_signed_request_names_the_authenticated_id_and_matches_the_requesters_key() {
    let ca = ca();
    let (csr, key) = signing_request().unwrap();
    let id = SpiffeId::node(
        TrustDomain::default(),
        ClusterName::new("c1").unwrap(),
        NodeName::new("n1").unwrap(),
    );
    let cert = ca
        .sign_client_request(
            &csr,
            &id,
            Validity::lasting(std::time::Duration::from_secs(120)).unwrap(),
        )
        .unwrap();
    let identity = TlsIdentity::from_pem(&cert, &key, "renewed", "renewal key")
        .expect("the certificate is for the requester's key");
    assert_eq!(identity.spiffe_id(), Some(id));
    let life = Lifetime::of(&identity.chain[0], "renewed").unwrap();
    assert_eq!((life.not_after - life.not_before).whole_seconds(), 180);
}

#[test]
fn a_request_that_is_not_one_is_refused() {
    let ca = ca();
    let id = SpiffeId::cluster(TrustDomain::default(), ClusterName::new("c1").unwrap());
    let err = ca
        .sign_client_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &id,
            Validity::days(1).unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("signing request"), "{err}");
}
