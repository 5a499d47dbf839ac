//! `meshctl ca certgen`: what the chart's certgen Job runs. It creates, in
//! the install namespace and only where missing, the mesh CA Secret
//! (`meshwork-ca`), the mesh-apiserver's server certificate
//! (`meshwork-apiserver-tls`) and the node-agents' client certificate
//! (`meshwork-node-agent-tls`). Existing Secrets are never replaced, so an
//! upgrade keeps the CA; rotate with `meshctl ca rotate`.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use mesh_api::{ClusterName, NodeName};
use mesh_certs::{CertificateAuthority, SpiffeId, TrustBundle, TrustDomain, Validity};
use serde::Serialize;

use crate::kube::CA_SECRET;
use crate::output::{self, OutputFormat};

/// The mesh-apiserver's server certificate Secret.
pub const APISERVER_TLS: &str = "meshwork-apiserver-tls";
/// The node-agents' client certificate Secret.
pub const NODE_AGENT_TLS: &str = "meshwork-node-agent-tls";
/// The node name in the node-agents' shared client certificate.
pub const NODE_AGENT_IDENTITY: &str = "node-agents";

/// `meshctl ca certgen`.
#[derive(Debug, clap::Args)]
pub struct CertgenArgs {
    /// Namespace Meshwork is installed in.
    #[arg(long, default_value = "meshwork-system")]
    pub namespace: String,
    /// This cluster's name.
    #[arg(long)]
    pub cluster_name: String,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, default_value = TrustDomain::DEFAULT)]
    pub trust_domain: String,
    /// Extra names of the mesh-apiserver's server certificate (repeat), e.g.
    /// a load-balancer DNS name or IP other clusters dial.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Lifetime of the CA in days.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: i64,
    /// Lifetime of the mesh-apiserver's and node-agents' certificates,
    /// seconds (default 90 days; the mesh-apiserver renews them when it has
    /// the CA: clustermesh.apiserver.tls.autoRenew).
    #[arg(long, default_value_t = 90 * 86_400)]
    pub cert_lifetime_seconds: u64,
}

/// What certgen did, per Secret.
#[derive(Debug, Serialize)]
pub struct CertgenReport {
    /// Secret name → "created" or "kept".
    pub secrets: Vec<(String, &'static str)>,
}

fn pem_secret(name: &str, ns: &str, data: &[(&str, &str)]) -> anyhow::Result<Secret> {
    let string_data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                serde_json::Value::String((*v).to_string()),
            )
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "meshwork"}},
        "type": "Opaque", "stringData": string_data,
    }))?)
}

fn text(secret: &Secret, key: &str) -> anyhow::Result<String> {
    let v = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {CA_SECRET} has no {key}"))?;
    String::from_utf8(v.0.clone()).with_context(|| format!("Secret {CA_SECRET} {key} is not text"))
}

/// Creates Secret `name` (`tls.crt`, `tls.key`, `ca.crt`) with a certificate
/// from `issue` unless it exists; `true` when it was created.
async fn ensure_cert_secret(
    api: &Api<Secret>,
    name: &str,
    bundle: &str,
    issue: impl FnOnce() -> mesh_certs::Result<mesh_certs::IssuedCert>,
) -> anyhow::Result<bool> {
    let ns = api.namespace().unwrap_or_default().to_string();
    if api
        .get_opt(name)
        .await
        .with_context(|| format!("read Secret {ns}/{name}"))?
        .is_some()
    {
        return Ok(false);
    }
    let cert = issue()?;
    let s = pem_secret(
        name,
        &ns,
        &[
            ("tls.crt", &cert.cert_pem),
            ("tls.key", &cert.key_pem),
            ("ca.crt", bundle),
        ],
    )?;
    api.create(&PostParams::default(), &s)
        .await
        .with_context(|| format!("create Secret {ns}/{name}"))?;
    Ok(true)
}

/// Runs certgen with the in-cluster (or KUBECONFIG current-context) client.
pub async fn certgen(args: CertgenArgs, format: OutputFormat) -> anyhow::Result<()> {
    let cluster = ClusterName::new(args.cluster_name.clone())?;
    let td = TrustDomain::new(args.trust_domain.clone())?;
    let client = kube::Client::try_default()
        .await
        .context("Kubernetes client (in-cluster, or KUBECONFIG)")?;
    let api: Api<Secret> = Api::namespaced(client, &args.namespace);
    let ns = args.namespace.as_str();
    let mut report = CertgenReport { secrets: vec![] };
    let created = |r: &mut CertgenReport, name: &str, made: bool| {
        r.secrets
            .push((name.to_string(), if made { "created" } else { "kept" }))
    };

    let (ca, bundle) = match api
        .get_opt(CA_SECRET)
        .await
        .with_context(|| format!("read Secret {ns}/{CA_SECRET}"))?
    {
        Some(s) => {
            let (cert, key) = (text(&s, "ca.crt")?, text(&s, "ca.key")?);
            let bundle = text(&s, "bundle.crt").unwrap_or_else(|_| cert.clone());
            created(&mut report, CA_SECRET, false);
            (
                CertificateAuthority::from_pem(&cert, &key, "ca.crt", "ca.key")?,
                bundle,
            )
        }
        None => {
            let ca = CertificateAuthority::create(td, Validity::days(args.ca_days)?)?;
            let bundle = TrustBundle::single(ca.cert().clone()).to_pem();
            let s = pem_secret(
                CA_SECRET,
                ns,
                &[
                    ("ca.crt", ca.cert_pem()),
                    ("ca.key", &ca.key_pem()),
                    ("bundle.crt", &bundle),
                ],
            )?;
            api.create(&PostParams::default(), &s)
                .await
                .with_context(|| format!("create Secret {ns}/{CA_SECRET}"))?;
            created(&mut report, CA_SECRET, true);
            (ca, bundle)
        }
    };
    let year = Validity::lasting(std::time::Duration::from_secs(args.cert_lifetime_seconds))?;
    let mut names = vec![
        "mesh-apiserver".to_string(),
        format!("mesh-apiserver.{ns}"),
        format!("mesh-apiserver.{ns}.svc"),
    ];
    names.extend(args.sans.iter().cloned());
    let server = SpiffeId::cluster(ca.trust_domain().clone(), cluster.clone());
    let node = SpiffeId::node(
        ca.trust_domain().clone(),
        cluster,
        NodeName::new(NODE_AGENT_IDENTITY)?,
    );
    let made = ensure_cert_secret(&api, APISERVER_TLS, &bundle, || {
        ca.issue_cluster_server(&server, &names, year)
    })
    .await?;
    created(&mut report, APISERVER_TLS, made);
    let made = ensure_cert_secret(&api, NODE_AGENT_TLS, &bundle, || {
        ca.issue_client(&node, year)
    })
    .await?;
    created(&mut report, NODE_AGENT_TLS, made);
    output::emit(format, &report, |r| {
        for (name, what) in &r.secrets {
            println!("{what:<8} Secret {ns}/{name}");
        }
    })
}
