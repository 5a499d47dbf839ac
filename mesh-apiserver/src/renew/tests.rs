use std::time::Duration;

use mesh_api::ClusterName;
use mesh_certs::{CaDirectory, SpiffeId, TrustDomain, Validity};
use time::OffsetDateTime;

use super::*;

fn life(secs_ago: i64, total: i64) -> Lifetime {
    let start = OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago);
    Lifetime {
        not_before: start,
        not_after: start + time::Duration::seconds(total),
    }
}

#[test]
fn a_certificate_is_looked_at_when_due_and_at_least_every_tenth_of_its_life() {
    // 120 s lifetime, 10 s old: due in 70 s, but looked at every 12 s.
    assert_eq!(next_look(&life(10, 120)), Duration::from_secs(12));
    // 90 days: at most every minute.
    assert_eq!(next_look(&life(0, 90 * 86_400)), Duration::from_secs(60));
    // Past due: at once (a second).
    assert_eq!(next_look(&life(100, 120)), Duration::from_secs(1));
    assert_eq!(retry_after(&life(100, 120)), Duration::from_secs(12));
}

#[test]
fn without_a_signer_a_renewal_is_refused_saying_how_to_enable_it() {
    let err = answer(None, None, "csr").unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("--signing-ca-cert"),
        "{}",
        err.message()
    );
}

#[test]
fn a_signer_signs_for_the_authenticated_id_only() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path());
    cadir
        .create(TrustDomain::default(), Validity::days(30).unwrap())
        .unwrap();
    let signer = Signer {
        cert: dir.path().join(CaDirectory::CERT),
        key: dir.path().join(CaDirectory::KEY),
        lifetime: Duration::from_secs(120),
    };
    let id = SpiffeId::cluster(TrustDomain::default(), ClusterName::new("c2").unwrap());
    let (csr, key) = mesh_certs::renewal::signing_request().unwrap();
    let cert = answer(Some(&signer), Some(&id), &csr).unwrap();
    let identity = mesh_certs::TlsIdentity::from_pem(&cert, &key, "c", "k").unwrap();
    assert_eq!(identity.spiffe_id(), Some(id));
    assert_eq!(
        answer(Some(&signer), None, &csr).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let certs = Certificates::default();
    certs.observe("client/c2", &identity.chain[0], true);
    let [status] = certs.report().try_into().unwrap();
    assert_eq!(status.not_after - status.renew_at, 60, "{status:?}");
    assert!(status.warning(status.renew_at).is_none());
    let late = status.warning(status.not_after + 1).unwrap();
    assert!(late.contains("expired"), "{late}");
}
