//! An importer renewing the client certificate a remote's CA issued it.

use std::sync::Arc;
use std::time::SystemTime;

use mesh_api::ClusterName;
use mesh_certs::{LiveTls, TlsIdentity};
use mesh_export_client::ExportClient;

use super::{Certificates, EntrySink, next_look, retry_after};
use crate::error::{Error, Result};

/// Renews `tls`'s certificate through `client` (connected to `remote`,
/// whose CA issued it) whenever it is due, until dropped: the new one is
/// written into the remote's clustermesh entry first (a restart must not
/// fall back to the old one), then swapped in live. Failures are logged,
/// shown in `/status` and retried.
pub async fn renew_client(
    mut client: ExportClient,
    tls: LiveTls,
    remote: ClusterName,
    sink: Option<Arc<dyn EntrySink>>,
    certs: Certificates,
) {
    let name = format!("client/{remote}");
    loop {
        let (Some(der), Ok(life)) = (tls.certificate(), tls.lifetime()) else {
            return;
        };
        certs.observe(&name, &der, true);
        if !life.renewal_due(time::OffsetDateTime::from(SystemTime::now())) {
            tokio::time::sleep(next_look(&life)).await;
            continue;
        }
        match renew_once(&mut client, &tls, &remote, sink.as_deref()).await {
            Ok(()) => {
                certs.renewed(&name);
                if let Some(der) = tls.certificate() {
                    certs.observe(&name, &der, true);
                }
                tracing::info!(%remote, "client certificate renewed by the remote's CA");
            }
            Err(e) => {
                tracing::warn!(%remote, error = %e, "client certificate renewal failed; retrying");
                certs.failed(&name, &e.to_string());
                tokio::time::sleep(retry_after(&life)).await;
            }
        }
    }
}

async fn renew_once(
    client: &mut ExportClient,
    tls: &LiveTls,
    remote: &ClusterName,
    sink: Option<&dyn EntrySink>,
) -> Result<()> {
    let (csr, key) =
        mesh_certs::renewal::signing_request().map_err(|e| Error::certs("renewal request", e))?;
    let cert = client.renew(&csr).await?;
    let identity = TlsIdentity::from_pem(&cert, &key, "renewed certificate", "renewal key")
        .map_err(|e| Error::certs(format!("the certificate {remote} signed"), e))?;
    if identity.spiffe_id() != tls.spiffe_id() {
        return Err(Error::RemoteConfig {
            entry: remote.to_string(),
            reason: format!(
                "the renewed certificate names {:?}, not {:?}: refused",
                identity.spiffe_id().map(|i| i.to_string()),
                tls.spiffe_id().map(|i| i.to_string())
            ),
        });
    }
    if let Some(sink) = sink {
        sink.store_client_cert(remote, &cert, &key).await?;
    }
    tls.update_identity(identity)
        .map_err(|e| Error::certs("renewed certificate", e))
}
