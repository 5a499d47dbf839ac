//! Each refusal has its own reason, recorded and logged. In a binary of its
//! own: it captures this thread's logs, which tracing's per-callsite caching
//! makes unreliable when other tests log concurrently.

mod common;
mod harness;

use common::*;
use harness::*;
use mesh_certs::tls;
use mesh_certs::{PeerKind, Refusal, TrustBundle, Validity};

/// Every refusal case: (name, client config, expected refusal).
#[tokio::test]
async fn refusals_have_distinct_logged_reasons() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let ca = new_ca();
    let other_ca = new_ca();
    let bundle = TrustBundle::single(ca.cert().clone());
    let day = Validity::days(1).unwrap();
    let no_cert = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(bundle.root_store().unwrap())
        .with_no_client_auth();
    let cases: Vec<(&str, rustls::ClientConfig, Refusal)> = vec![
        (
            "wrong CA",
            client(&other_ca, &cluster_id("c2"), day, &bundle),
            Refusal::WrongCa,
        ),
        (
            "expired",
            client(&ca, &cluster_id("c2"), window(-10, -1), &bundle),
            Refusal::Expired,
        ),
        (
            "not yet valid",
            client(&ca, &cluster_id("c2"), window(1, 10), &bundle),
            Refusal::NotYetValid,
        ),
        (
            "cluster not in allow-list",
            client(&ca, &cluster_id("c3"), day, &bundle),
            Refusal::ClusterNotAllowed {
                cluster: "c3".into(),
            },
        ),
        (
            "node cert as cluster cert",
            client(&ca, &node_id("c2", "n1"), day, &bundle),
            Refusal::WrongKind {
                presented: PeerKind::Node,
                expected: PeerKind::Cluster,
            },
        ),
        ("no client cert", no_cert, Refusal::NoClientCertificate),
    ];
    let mut seen = Vec::new();
    for (name, client, expected) in cases {
        let s = server(&ca, &bundle, allow(&["c2"]));
        let verdict = handshake(s.config, &s.authorizer, client).await;
        assert_eq!(verdict, Err(expected.clone()), "case {name}");
        assert_eq!(
            s.authorizer.recent_refusals(),
            vec![expected.clone()],
            "case {name}: recorded exactly once"
        );
        let text = logs.text();
        assert!(
            text.contains(&format!("reason=\"{}\"", expected.label())),
            "case {name}: reason not logged:\n{text}"
        );
        seen.push(expected.label());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "each case has its own reason");
}
