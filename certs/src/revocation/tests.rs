use std::time::Duration;

use mesh_api::ClusterName;
use time::OffsetDateTime;

use super::*;
use crate::{AccessPolicy, CertificateAuthority, TlsIdentity, TrustBundle, TrustDomain, Validity};
use crate::{IssuedCert, SpiffeId};

fn live_server(ca: &CertificateAuthority) -> LiveTls {
    let cert = ca
        .issue_server(&["localhost".into()], Validity::days(5).unwrap())
        .unwrap();
    LiveTls::new(
        TlsIdentity::from_pem(&cert.cert_pem, &cert.key_pem, "cert", "key").unwrap(),
        &TrustBundle::single(ca.cert().clone()),
    )
    .unwrap()
}

fn client_of(ca: &CertificateAuthority, cluster: &str, validity: Validity) -> IssuedCert {
    let id = SpiffeId::cluster(TrustDomain::default(), ClusterName::new(cluster).unwrap());
    ca.issue_client(&id, validity).unwrap()
}

fn allow(names: &[&str]) -> AccessPolicy {
    AccessPolicy::clusters(names.iter().map(|n| ClusterName::new(*n).unwrap()))
}

async fn revoked_within(
    live: &LiveTls,
    authorizer: &Authorizer,
    client: &IssuedCert,
    change: impl FnOnce(),
) -> Result<Refusal, tokio::time::error::Elapsed> {
    let chain = vec![client.cert_der().unwrap()];
    let watch = tokio::spawn(until_revoked(
        live.clone(),
        authorizer.clone(),
        chain,
        Duration::from_secs(3600),
    ));
    // Allowed: nothing happens while nothing changes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!watch.is_finished(), "revoked with nothing changed");
    change();
    tokio::time::timeout(Duration::from_secs(3), watch)
        .await
        .map(|r| r.unwrap())
}

#[tokio::test]
async fn a_cluster_removed_from_the_policy_is_revoked_on_its_open_stream() {
    let ca =
        CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap();
    let live = live_server(&ca);
    let authorizer = Authorizer::new(TrustDomain::default(), allow(&["b", "c"]));
    let client = client_of(&ca, "b", Validity::days(1).unwrap());
    let a2 = authorizer.clone();
    let refusal = revoked_within(&live, &authorizer, &client, move || {
        a2.set_policy(allow(&["c"]))
    })
    .await
    .expect("revoked within 3 s");
    assert_eq!(
        refusal,
        Refusal::ClusterNotAllowed {
            cluster: "b".into()
        }
    );
    assert!(
        authorizer
            .recent_refusals()
            .contains(&Refusal::ClusterNotAllowed {
                cluster: "b".into()
            }),
        "recorded like a handshake refusal"
    );
}

#[tokio::test]
async fn a_client_of_the_old_ca_is_revoked_when_the_bundle_drops_it() {
    let old =
        CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap();
    let new =
        CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap();
    let live = live_server(&old);
    let authorizer = Authorizer::new(TrustDomain::default(), allow(&["b"]));
    let client = client_of(&old, "b", Validity::days(1).unwrap());
    // The overlap keeps it; the last step (new CA only) cuts it off.
    let server = new
        .issue_server(&["localhost".into()], Validity::days(5).unwrap())
        .unwrap();
    let identity =
        || TlsIdentity::from_pem(&server.cert_pem, &server.key_pem, "cert", "key").unwrap();
    live.update(
        identity(),
        &TrustBundle::with_overlap(old.cert().clone(), new.cert().clone()),
    )
    .unwrap();
    let l2 = live.clone();
    let new_only = TrustBundle::single(new.cert().clone());
    let refusal = revoked_within(&live, &authorizer, &client, move || {
        l2.update(identity(), &new_only).unwrap()
    })
    .await
    .expect("revoked within 3 s");
    assert_eq!(refusal, Refusal::WrongCa);
}

#[tokio::test]
async fn an_expiring_client_certificate_is_revoked_at_its_not_after() {
    let ca =
        CertificateAuthority::create(TrustDomain::default(), Validity::days(30).unwrap()).unwrap();
    let live = live_server(&ca);
    let authorizer = Authorizer::new(TrustDomain::default(), allow(&["b"]));
    let now = OffsetDateTime::now_utc();
    let client = client_of(
        &ca,
        "b",
        Validity::between(
            now - time::Duration::hours(1),
            now + time::Duration::seconds(3),
        )
        .unwrap(),
    );
    let refusal = revoked_within(&live, &authorizer, &client, || {})
        .await
        .expect("revoked within 3 s of its expiry");
    assert_eq!(refusal, Refusal::Expired);
}
