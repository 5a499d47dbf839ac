//! An independent verifier (the openssl command) agrees with the chains the
//! library issues, and rejects a tampered one.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use mesh_certs::{CaDirectory, Validity, pem};

fn openssl_verify(ca: &Path, leaf: &Path, purpose: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(ca)
        .arg(leaf)
        .output()
        .expect("the openssl command is required for this test (scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_accepts_issued_chains_and_rejects_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path().join("ca"));
    let ca = cadir.create(td(), Validity::days(30).unwrap()).unwrap();
    let ca_file = dir.path().join("ca/ca.crt");

    let server = ca
        .issue_server(
            &["mesh-apiserver.kube-system.svc".into(), "10.0.0.1".into()],
            Validity::days(5).unwrap(),
        )
        .unwrap();
    let (server_crt, _) = server.save(dir.path(), "server").unwrap();
    let (ok, text) = openssl_verify(&ca_file, &server_crt, "sslserver");
    assert!(ok, "server cert: {text}");

    let client = ca
        .issue_client(&node_id("c1", "n1"), Validity::days(5).unwrap())
        .unwrap();
    let (client_crt, _) = client.save(dir.path(), "client").unwrap();
    let (ok, text) = openssl_verify(&ca_file, &client_crt, "sslclient");
    assert!(ok, "client cert: {text}");

    // Flip one bit in the signature (the last bytes of the DER).
    let mut der = client.cert_der().unwrap().as_ref().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let tampered = pem::certs_to_pem(&[der.into()]);
    let tampered_file = dir.path().join("tampered.crt");
    std::fs::write(&tampered_file, tampered).unwrap();
    let (ok, text) = openssl_verify(&ca_file, &tampered_file, "sslclient");
    assert!(!ok, "openssl accepted a tampered certificate: {text}");
    assert!(text.contains("signature"), "{text}");

    // A certificate from another CA is rejected too.
    let stranger = new_ca()
        .issue_client(&cluster_id("c1"), Validity::days(5).unwrap())
        .unwrap();
    let (stranger_crt, _) = stranger.save(dir.path(), "stranger").unwrap();
    assert!(!openssl_verify(&ca_file, &stranger_crt, "sslclient").0);
}

#[test]
fn openssl_accepts_both_cas_of_a_rotation_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path());
    let old = cadir.create(td(), Validity::days(30).unwrap()).unwrap();
    let old_leaf = old
        .issue_client(&cluster_id("c1"), Validity::days(5).unwrap())
        .unwrap();
    let new = cadir.rotate_start(Validity::days(30).unwrap()).unwrap();
    let new_leaf = new
        .issue_client(&cluster_id("c1"), Validity::days(5).unwrap())
        .unwrap();
    let (old_crt, _) = old_leaf.save(dir.path(), "old").unwrap();
    let (new_crt, _) = new_leaf.save(dir.path(), "new").unwrap();
    let bundle = dir.path().join(CaDirectory::BUNDLE);
    assert!(openssl_verify(&bundle, &old_crt, "sslclient").0);
    assert!(openssl_verify(&bundle, &new_crt, "sslclient").0);
    cadir.rotate_finish().unwrap();
    assert!(!openssl_verify(&bundle, &old_crt, "sslclient").0);
    assert!(openssl_verify(&bundle, &new_crt, "sslclient").0);
}
