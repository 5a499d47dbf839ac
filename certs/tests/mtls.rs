//! Real mutual-TLS handshakes over loopback: who is accepted, who is refused
//! and why.

mod common;
mod harness;

use std::sync::Arc;

use common::*;
use harness::*;
use mesh_api::ClusterName;
use mesh_certs::tls::{self, AccessPolicy, Authorizer};
use mesh_certs::{CaDirectory, PeerKind, Refusal, TrustBundle, Validity};

#[tokio::test]
async fn valid_cluster_certificate_is_accepted() {
    let ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let s = server(&ca, &bundle, allow(&["c2"]));
    let c = client(&ca, &cluster_id("c2"), Validity::days(1).unwrap(), &bundle);
    let id = handshake(s.config, &s.authorizer, c).await.unwrap();
    assert_eq!(id, cluster_id("c2"));
    assert!(s.authorizer.recent_refusals().is_empty());
}

#[tokio::test]
async fn cluster_certificate_is_refused_where_node_certificates_are_expected() {
    let ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let policy = AccessPolicy::nodes_of(ClusterName::new("c1").unwrap());
    let day = Validity::days(1).unwrap();
    let s = server(&ca, &bundle, policy.clone());
    let ok = handshake(
        s.config,
        &s.authorizer,
        client(&ca, &node_id("c1", "n1"), day, &bundle),
    )
    .await;
    assert_eq!(ok.unwrap(), node_id("c1", "n1"));
    let s = server(&ca, &bundle, policy.clone());
    let refused = handshake(
        s.config,
        &s.authorizer,
        client(&ca, &cluster_id("c1"), day, &bundle),
    )
    .await;
    assert_eq!(
        refused,
        Err(Refusal::WrongKind {
            presented: PeerKind::Cluster,
            expected: PeerKind::Node
        })
    );
    let s = server(&ca, &bundle, policy);
    let other = handshake(
        s.config,
        &s.authorizer,
        client(&ca, &node_id("c2", "n1"), day, &bundle),
    )
    .await;
    assert_eq!(
        other,
        Err(Refusal::NodeOfOtherCluster {
            cluster: "c2".into()
        })
    );
}

#[tokio::test]
async fn allow_list_changes_take_effect_without_restart() {
    let ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let day = Validity::days(1).unwrap();
    let cert = ca
        .issue_server(&["localhost".into()], Validity::days(5).unwrap())
        .unwrap();
    let authorizer = Authorizer::new(td(), allow(&["c2"]));
    let config =
        Arc::new(tls::server_config(identity(&cert), &bundle, authorizer.clone()).unwrap());
    let c3 = || client(&ca, &cluster_id("c3"), day, &bundle);
    assert!(
        handshake((*config).clone(), &authorizer, c3())
            .await
            .is_err()
    );
    authorizer.set_policy(allow(&["c2", "c3"]));
    assert!(
        handshake((*config).clone(), &authorizer, c3())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn ca_rotation_trusts_both_then_only_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cadir = CaDirectory::new(dir.path());
    let old_ca = cadir.create(td(), Validity::days(30).unwrap()).unwrap();
    let day = Validity::days(1).unwrap();
    // A client issued before the rotation, trusting only the old CA... and
    // later given the overlap bundle, as meshctl ca rotate distributes it.
    let old_client_cert = old_ca.issue_client(&cluster_id("c2"), day).unwrap();

    let new_ca = cadir.rotate_start(Validity::days(30).unwrap()).unwrap();
    let overlap = cadir.bundle().unwrap();
    assert!(overlap.is_overlap());
    let new_client_cert = new_ca.issue_client(&cluster_id("c2"), day).unwrap();

    // During the overlap the server (new certificate) accepts both.
    for (name, cert) in [("old", &old_client_cert), ("new", &new_client_cert)] {
        let s = server(&new_ca, &overlap, allow(&["c2"]));
        let c = tls::client_config(identity(cert), &overlap).unwrap();
        let verdict = handshake(s.config, &s.authorizer, c).await;
        assert!(
            verdict.is_ok(),
            "{name}-CA client during overlap: {verdict:?}"
        );
    }

    cadir.rotate_finish().unwrap();
    let finished = cadir.bundle().unwrap();
    assert!(!finished.is_overlap());
    let s = server(&new_ca, &finished, allow(&["c2"]));
    let c = tls::client_config(identity(&old_client_cert), &overlap).unwrap();
    assert_eq!(
        handshake(s.config, &s.authorizer, c).await,
        Err(Refusal::WrongCa)
    );
    let s = server(&new_ca, &finished, allow(&["c2"]));
    let c = tls::client_config(identity(&new_client_cert), &finished).unwrap();
    assert!(handshake(s.config, &s.authorizer, c).await.is_ok());
}
