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
        .issue_cluster_server(
            &cluster_id(SERVER_CLUSTER),
            &["localhost".into()],
            Validity::days(5).unwrap(),
        )
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
        let c = tls::client_config(identity(cert), &overlap, &cluster_id(SERVER_CLUSTER)).unwrap();
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
    let c = tls::client_config(
        identity(&old_client_cert),
        &overlap,
        &cluster_id(SERVER_CLUSTER),
    )
    .unwrap();
    assert_eq!(
        handshake(s.config, &s.authorizer, c).await,
        Err(Refusal::WrongCa)
    );
    let s = server(&new_ca, &finished, allow(&["c2"]));
    let c = tls::client_config(
        identity(&new_client_cert),
        &finished,
        &cluster_id(SERVER_CLUSTER),
    )
    .unwrap();
    assert!(handshake(s.config, &s.authorizer, c).await.is_ok());
}

/// The same CA signs every cluster of a trust domain, so a valid chain only
/// says "a cluster of this mesh": the client also checks which one.
#[tokio::test]
async fn a_client_refuses_a_server_that_is_not_the_cluster_it_dialled() {
    let ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let day = Validity::days(1).unwrap();
    let cert = ca.issue_client(&cluster_id("c2"), day).unwrap();
    let expecting =
        |cluster: &str| tls::client_config(identity(&cert), &bundle, &cluster_id(cluster)).unwrap();

    let s = server(&ca, &bundle, allow(&["c2"]));
    assert_eq!(
        client_verdict(s.config, expecting(SERVER_CLUSTER)).await,
        Ok(())
    );

    let s = server(&ca, &bundle, allow(&["c2"]));
    assert_eq!(
        client_verdict(s.config, expecting("c3")).await,
        Err(Refusal::UnexpectedServer {
            presented: cluster_id(SERVER_CLUSTER).to_string(),
            expected: cluster_id("c3").to_string(),
        })
    );

    // A server certificate without a SPIFFE id (issued before they existed,
    // or for something that is not a mesh-apiserver) is refused too.
    let anonymous = ca
        .issue_server(&["localhost".into()], Validity::days(5).unwrap())
        .unwrap();
    let authorizer = Authorizer::new(td(), allow(&["c2"]));
    let config = tls::server_config(identity(&anonymous), &bundle, authorizer).unwrap();
    let verdict = client_verdict(config, expecting(SERVER_CLUSTER)).await;
    assert_eq!(
        verdict,
        Err(Refusal::UnexpectedServer {
            presented: "<none>".into(),
            expected: cluster_id(SERVER_CLUSTER).to_string(),
        })
    );
    assert!(
        verdict.unwrap_err().to_string().contains("reissue"),
        "the refusal says what to do"
    );
}

#[test]
fn a_server_certificate_names_a_cluster_not_a_node() {
    let ca = new_ca();
    let err = ca
        .issue_cluster_server(
            &node_id("c1", "n1"),
            &["localhost".into()],
            Validity::days(1).unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("names a cluster"), "{err}");
}

/// A mesh-apiserver with no remote configured yet tells a cluster that it
/// is not connected, not that it is the wrong kind of peer.
#[tokio::test]
async fn an_unlisted_cluster_is_told_to_connect_even_before_any_remote_is_configured() {
    let ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let s = server(
        &ca,
        &bundle,
        AccessPolicy::mesh_apiserver(ClusterName::new("c1").unwrap(), []),
    );
    let c = client(&ca, &cluster_id("c2"), Validity::days(1).unwrap(), &bundle);
    assert_eq!(
        handshake(s.config, &s.authorizer, c).await,
        Err(Refusal::ClusterNotAllowed {
            cluster: "c2".into()
        })
    );
}
