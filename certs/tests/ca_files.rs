//! The CA directory on disk: bad input is refused with a clear message and
//! nothing is written half-way.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use mesh_certs::inspect::{self, verify_signed_by};
use mesh_certs::{
    CaDirectory, CertificateAuthority, Refusal, RotationState, TlsIdentity, TrustBundle, Validity,
};

#[test]
fn create_writes_key_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path());
    cadir.create(td(), Validity::days(10).unwrap()).unwrap();
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let err = cadir
        .create(td(), Validity::days(10).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already exists") && err.contains("rotate"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), before);
    assert_eq!(cadir.rotation_state().unwrap(), RotationState::Stable);
    let loaded = cadir.load().unwrap();
    assert_eq!(loaded.trust_domain(), &td());
}

#[test]
fn key_that_does_not_match_its_certificate_is_refused() {
    let a = new_ca();
    let b = new_ca();
    let err = CertificateAuthority::from_pem(a.cert_pem(), &b.key_pem(), "a.crt", "b.key")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b.key") && err.contains("a.crt") && err.contains("does not match"),
        "{err}"
    );

    let leaf1 = a
        .issue_client(&cluster_id("c1"), Validity::days(1).unwrap())
        .unwrap();
    let leaf2 = a
        .issue_client(&cluster_id("c1"), Validity::days(1).unwrap())
        .unwrap();
    let err = TlsIdentity::from_pem(&leaf1.cert_pem, &leaf2.key_pem, "leaf1.crt", "leaf2.key")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("leaf2.key") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn malformed_pem_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.pem");
    std::fs::write(&p, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n").unwrap();
    let err = TrustBundle::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("garbage.pem") && err.contains("malformed"),
        "{err}"
    );
    let err = TrustBundle::load(&dir.path().join("missing.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
}

#[test]
fn leaf_certificates_are_not_accepted_as_a_bundle() {
    let ca = new_ca();
    let leaf = ca
        .issue_client(&cluster_id("c1"), Validity::days(1).unwrap())
        .unwrap();
    let err = TrustBundle::from_pem(&leaf.cert_pem, "leaf.pem")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a CA"), "{err}");
}

#[test]
fn bad_names_and_lifetimes() {
    let err = mesh_api::ClusterName::new("Not_A_Label")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Not_A_Label") && err.contains("lowercase"),
        "{err}"
    );
    for days in [0, -5, 40_000] {
        let err = Validity::days(days).unwrap_err().to_string();
        assert!(
            err.contains(&days.to_string()) && err.contains("1-36500"),
            "{err}"
        );
    }
    let ca = new_ca();
    assert!(ca.issue_server(&[], Validity::days(1).unwrap()).is_err());
}

#[test]
fn inspect_reports_identity_validity_and_fingerprint() {
    let ca = new_ca();
    let leaf = ca
        .issue_client(&node_id("c1", "worker-1"), Validity::days(10).unwrap())
        .unwrap();
    let der = leaf.cert_der().unwrap();
    let info = inspect::inspect(&der, "leaf").unwrap();
    assert_eq!(
        info.spiffe_id.as_deref(),
        Some("spiffe://meshwork.local/cluster/c1/node/worker-1")
    );
    assert!(
        (9..=10).contains(&info.expires_in_days),
        "{}",
        info.expires_in_days
    );
    assert!(info.expiry_text().starts_with("expires in"));
    assert_eq!(info.sha256_fingerprint.split(':').count(), 32);
    assert!(!info.is_ca);
    assert!(info.issuer.contains("Meshwork CA"));

    let server = ca
        .issue_server(
            &["a.example".into(), "10.1.2.3".into()],
            Validity::days(1).unwrap(),
        )
        .unwrap();
    let info = inspect::inspect(&server.cert_der().unwrap(), "server").unwrap();
    assert_eq!(info.dns_names, vec!["a.example"]);
    assert_eq!(
        info.ip_addresses,
        vec!["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]
    );

    let expired = ca.issue_client(&cluster_id("c1"), window(-10, -2)).unwrap();
    let info = inspect::inspect(&expired.cert_der().unwrap(), "old").unwrap();
    assert!(
        info.expiry_text().starts_with("expired"),
        "{}",
        info.expiry_text()
    );
}

#[test]
fn verify_against_bundle() {
    let ca = new_ca();
    let other = new_ca();
    let now = time::OffsetDateTime::now_utc();
    let good = ca
        .issue_client(&cluster_id("c1"), Validity::days(1).unwrap())
        .unwrap();
    let cas = [ca.cert().clone()];
    assert_eq!(
        verify_signed_by(&good.cert_der().unwrap(), &cas, now),
        Ok(())
    );
    let foreign = other
        .issue_client(&cluster_id("c1"), Validity::days(1).unwrap())
        .unwrap();
    assert_eq!(
        verify_signed_by(&foreign.cert_der().unwrap(), &cas, now),
        Err(Refusal::WrongCa)
    );
    let expired = ca.issue_client(&cluster_id("c1"), window(-5, -1)).unwrap();
    assert_eq!(
        verify_signed_by(&expired.cert_der().unwrap(), &cas, now),
        Err(Refusal::Expired)
    );
    let future = ca.issue_client(&cluster_id("c1"), window(1, 5)).unwrap();
    assert_eq!(
        verify_signed_by(&future.cert_der().unwrap(), &cas, now),
        Err(Refusal::NotYetValid)
    );
}

#[test]
fn interrupted_rotation_is_completed_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path());
    cadir.create(td(), Validity::days(10).unwrap()).unwrap();
    let new = cadir.rotate_start(Validity::days(10).unwrap()).unwrap();
    // Simulate a crash after the bundle named the new CA and the key was
    // promoted, but before the certificate was: put the new cert back in
    // next-ca.crt and the old cert in ca.crt.
    let old_cert = cadir.bundle().unwrap().cas()[1].clone();
    std::fs::write(dir.path().join("next-ca.crt"), new.cert_pem()).unwrap();
    std::fs::write(
        dir.path().join("ca.crt"),
        mesh_certs::pem::certs_to_pem(&[old_cert]),
    )
    .unwrap();
    let loaded = cadir.load().unwrap();
    assert_eq!(loaded.cert(), new.cert());
    assert!(!dir.path().join("next-ca.crt").exists());
    assert_eq!(cadir.rotation_state().unwrap(), RotationState::Overlap);
    // Starting a second rotation during the overlap is refused.
    let err = cadir
        .rotate_start(Validity::days(10).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already under way"), "{err}");
}
