//! Renewing this cluster's own certificates: the mesh-apiserver's server
//! certificate and the node-agents' client certificate.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use mesh_api::ClusterName;
use rustls::pki_types::CertificateDer;

use super::{Certificates, Signer, next_look, retry_after};
use crate::error::{Error, Result};
use crate::leader::Leadership;

/// Where this cluster's own certificates live.
#[derive(Clone)]
pub enum OwnCerts {
    /// Kubernetes Secrets (`tls.crt`, `tls.key`; `ca.crt` is left alone),
    /// as (status name, Secret name); pods read them as mounted files.
    Secrets {
        /// The Secrets of the install namespace.
        api: Box<Api<Secret>>,
        /// (status name, Secret name).
        names: Vec<(String, String)>,
    },
    /// Files this process serves from (`--tls-cert`, `--tls-key`), as
    /// (status name, cert, key).
    Files(Vec<(String, PathBuf, PathBuf)>),
}

impl std::fmt::Debug for OwnCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnCerts::Secrets { names, .. } => f.debug_tuple("Secrets").field(names).finish(),
            OwnCerts::Files(files) => f.debug_tuple("Files").field(files).finish(),
        }
    }
}

struct Current {
    name: String,
    der: CertificateDer<'static>,
    what: String,
}

impl OwnCerts {
    async fn read(&self) -> Result<Vec<Current>> {
        let parse = |name: &str, pem: &str, what: String| -> Result<Current> {
            let der = mesh_certs::pem::parse_certs(pem, &what)
                .map_err(|e| Error::certs(what.clone(), e))?
                .remove(0);
            Ok(Current {
                name: name.to_string(),
                der,
                what,
            })
        };
        let mut out = Vec::new();
        match self {
            OwnCerts::Secrets { api, names } => {
                for (name, secret) in names {
                    let what = format!("Secret {secret} tls.crt");
                    // A Secret not there (certificates managed elsewhere)
                    // is not ours to renew.
                    let Some(s) = api.get_opt(secret).await.map_err(|e| Error::Kube {
                        what: format!("read Secret {secret}"),
                        source: Box::new(e),
                    })?
                    else {
                        continue;
                    };
                    if let Some(pem) = s.data.as_ref().and_then(|d| d.get("tls.crt")) {
                        out.push(parse(name, &String::from_utf8_lossy(&pem.0), what)?);
                    }
                }
            }
            OwnCerts::Files(files) => {
                for (name, cert, _) in files {
                    let pem = mesh_certs::pem::read_text(cert)
                        .map_err(|e| Error::certs(cert.display().to_string(), e))?;
                    out.push(parse(name, &pem, cert.display().to_string())?);
                }
            }
        }
        Ok(out)
    }

    async fn write(&self, name: &str, issued: &mesh_certs::IssuedCert) -> Result<()> {
        match self {
            OwnCerts::Secrets { api, names } => {
                let Some((_, secret)) = names.iter().find(|(n, _)| n == name) else {
                    return Ok(());
                };
                let kube = |e| Error::Kube {
                    what: format!("write the renewed certificate into Secret {secret}"),
                    source: Box::new(e),
                };
                let mut s = api.get(secret).await.map_err(kube)?;
                let data = s.data.get_or_insert_default();
                data.insert(
                    "tls.crt".into(),
                    ByteString(issued.cert_pem.clone().into_bytes()),
                );
                data.insert(
                    "tls.key".into(),
                    ByteString(issued.key_pem.clone().into_bytes()),
                );
                api.replace(secret, &PostParams::default(), &s)
                    .await
                    .map_err(kube)?;
            }
            OwnCerts::Files(files) => {
                let Some((_, cert, key)) = files.iter().find(|(n, _, _)| n == name) else {
                    return Ok(());
                };
                // Key first: a reader that sees the new certificate with
                // the old key retries at its next poll, never the reverse
                // for long.
                mesh_certs::pem::write_atomic(key, issued.key_pem.as_bytes(), 0o600)
                    .and_then(|()| {
                        mesh_certs::pem::write_atomic(cert, issued.cert_pem.as_bytes(), 0o644)
                    })
                    .map_err(|e| Error::certs(format!("writing {}", cert.display()), e))?;
            }
        }
        Ok(())
    }
}

/// Watches this cluster's own certificates until aborted: each one's expiry
/// goes to `certs`; with a `signer`, the leader reissues each one (same
/// names, same id) when it is due. Failures are logged, shown in
/// `/status` and retried.
pub async fn renew_own(
    signer: Option<Signer>,
    own: OwnCerts,
    certs: Certificates,
    leadership: Leadership,
    local: ClusterName,
) {
    loop {
        let mut wait = Duration::from_secs(60);
        match own.read().await {
            Ok(current) => {
                for c in current {
                    certs.observe(&c.name, &c.der, signer.is_some());
                    let Ok(life) = mesh_certs::Lifetime::of(&c.der, &c.what) else {
                        continue;
                    };
                    let due = life.renewal_due(time::OffsetDateTime::from(SystemTime::now()));
                    let (Some(signer), true, true) = (&signer, due, leadership.is_leader()) else {
                        wait = wait.min(next_look(&life));
                        continue;
                    };
                    match renew_one(signer, &own, &c, &local).await {
                        Ok(()) => {
                            certs.renewed(&c.name);
                            tracing::info!(certificate = %c.name, "certificate renewed");
                            wait = Duration::from_secs(1);
                        }
                        Err(e) => {
                            tracing::warn!(certificate = %c.name, error = %e, "certificate renewal failed; retrying");
                            certs.failed(&c.name, &e.to_string());
                            wait = wait.min(retry_after(&life));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading this cluster's certificates");
                wait = Duration::from_secs(10);
            }
        }
        tokio::time::sleep(wait).await;
    }
}

async fn renew_one(
    signer: &Signer,
    own: &OwnCerts,
    c: &Current,
    local: &ClusterName,
) -> Result<()> {
    let issued = signer
        .ca()?
        .reissue(&c.der, &c.what, Some(local), signer.validity()?)
        .map_err(|e| Error::certs(format!("reissuing {}", c.what), e))?;
    own.write(&c.name, &issued).await
}
