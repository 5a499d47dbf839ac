//! `meshctl ca certgen` (the chart's certgen Job) against a real API server
//! double on loopback: it creates the three Secrets with the right
//! identities, and a second run keeps them (an upgrade never replaces the CA).

use std::process::Command;

use mesh_test_apiserver::{Config, TestApiServer};

fn certgen(kubeconfig: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .env("KUBECONFIG", kubeconfig)
        .args([
            "ca",
            "certgen",
            "--namespace",
            "default",
            "--cluster-name",
            "c1",
            "--trust-domain",
            "lab.example",
            "--san",
            "192.0.2.10",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn secret_pem(kubeconfig: &std::path::Path, name: &str, key: &str) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args([
            "get",
            "secret",
            name,
            "-o",
            &format!("jsonpath={{.data.{}}}", key.replace('.', "\\.")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(out.stdout)
            .unwrap(),
    )
    .unwrap()
}

fn info(pem: &str) -> mesh_certs::CertInfo {
    let der = mesh_certs::pem::parse_certs(pem, "test").unwrap().remove(0);
    mesh_certs::inspect::inspect(&der, "test").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certgen_creates_the_secrets_once_with_the_right_identities() {
    let server = TestApiServer::start(Config::local("lab-c1")).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kc = tmp.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let kc2 = kc.clone();
    let first = tokio::task::spawn_blocking(move || certgen(&kc2))
        .await
        .unwrap();
    let created: Vec<&str> = first["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_str().unwrap())
        .collect();
    assert_eq!(created, vec!["created"; 3], "{first}");

    let kc2 = kc.clone();
    let (ca, server_cert, node_cert) = tokio::task::spawn_blocking(move || {
        (
            secret_pem(&kc2, "meshwork-ca", "ca.crt"),
            secret_pem(&kc2, "meshwork-apiserver-tls", "tls.crt"),
            secret_pem(&kc2, "meshwork-node-agent-tls", "tls.crt"),
        )
    })
    .await
    .unwrap();
    let server_info = info(&server_cert);
    assert!(
        server_info
            .dns_names
            .contains(&"mesh-apiserver.default.svc".to_string()),
        "{server_info:?}"
    );
    assert!(
        server_info
            .ip_addresses
            .iter()
            .any(|ip| ip.to_string() == "192.0.2.10"),
        "{server_info:?}"
    );
    assert_eq!(
        info(&node_cert).spiffe_id.as_deref(),
        Some("spiffe://lab.example/cluster/c1/node/node-agents")
    );
    let bundle = mesh_certs::TrustBundle::from_pem(&ca, "ca").unwrap();
    for cert in [&server_cert, &node_cert] {
        let der = mesh_certs::pem::parse_certs(cert, "leaf")
            .unwrap()
            .remove(0);
        mesh_certs::inspect::verify_signed_by(&der, bundle.cas(), time::OffsetDateTime::now_utc())
            .expect("signed by the CA in the Secret");
    }

    let kc2 = kc.clone();
    let second = tokio::task::spawn_blocking(move || certgen(&kc2))
        .await
        .unwrap();
    let kept: Vec<&str> = second["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec!["kept"; 3], "{second}");
    let kc2 = kc.clone();
    let ca_after = tokio::task::spawn_blocking(move || secret_pem(&kc2, "meshwork-ca", "ca.crt"))
        .await
        .unwrap();
    assert_eq!(ca_after, ca, "a second certgen must keep the CA");
}
