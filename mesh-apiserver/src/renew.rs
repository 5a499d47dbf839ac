//! Certificate renewal, in process: nothing this mesh issues expires
//! because a person forgot it.
//!
//! With this cluster's CA (`--signing-ca-cert`, `--signing-ca-key`: the
//! `meshwork-ca` Secret's files) a mesh-apiserver
//! - renews its own server certificate and the node-agents' certificate
//!   (the `meshwork-apiserver-tls` and `meshwork-node-agent-tls` Secrets,
//!   or the `--tls-*` files without Kubernetes); their readers follow the
//!   files live ([`mesh_certs::LiveTls`]);
//! - answers `Renew` from authenticated peers: a remote's importer renews
//!   the client certificate this cluster's CA issued it (`meshctl connect`)
//!   and gets one for exactly the id it authenticated with.
//!
//! Every importer renews its own client certificate from the remote that
//! issued it and writes it back into its clustermesh entry. A certificate
//! is due once two thirds of its lifetime have passed
//! ([`mesh_certs::Lifetime`]); [`Certificates`] keeps each one's expiry
//! and renewal state for `/status` and `/metrics`.

mod client;
mod own;
mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_api::clustermesh::{CertificateStatus, unix_seconds};
use mesh_certs::{CertificateAuthority, Lifetime, PeerKind, SpiffeId, Validity};

pub use client::renew_client;
pub use own::{OwnCerts, renew_own};
pub use sink::{DirectoryEntries, EntrySink, SecretEntries};

use crate::error::{Error, Result};

/// What a mesh-apiserver renews: with a signer, its own certificates
/// (`own`) and its peers' (the `Renew` call).
#[derive(Debug, Clone, Default)]
pub struct Renewal {
    /// This cluster's CA; `None`: nothing is signed here.
    pub signer: Option<Signer>,
    /// This cluster's own certificates, watched (and renewed with a signer).
    pub own: Option<OwnCerts>,
}

/// How importers renew their client certificates: where they report, and
/// where the renewed certificate is written back (`None`: kept in memory
/// only, for tests).
#[derive(Debug, Clone, Default)]
pub struct ClientRenewal {
    /// Every certificate's state, shared with `/status`.
    pub certs: Certificates,
    /// The clustermesh config source.
    pub sink: Option<Arc<dyn EntrySink>>,
}

/// An importer's [`renew_client`] task for one connection; dropping it
/// (the session ended) stops it.
#[derive(Debug)]
pub struct ClientRenewalTask(tokio::task::JoinHandle<()>);

impl ClientRenewalTask {
    /// Starts renewing `tls`'s certificate through `client`.
    pub fn spawn(
        client: mesh_export_client::ExportClient,
        tls: mesh_certs::LiveTls,
        remote: mesh_api::ClusterName,
        renewal: &ClientRenewal,
    ) -> Self {
        ClientRenewalTask(tokio::spawn(renew_client(
            client,
            tls,
            remote,
            renewal.sink.clone(),
            renewal.certs.clone(),
        )))
    }
}

impl Drop for ClientRenewalTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This cluster's CA, read from its files at every use (a CA rotation
/// swaps them), and the lifetime of what it signs.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// The CA key (PEM, 0600).
    pub key: PathBuf,
    /// Lifetime of the certificates it issues.
    pub lifetime: Duration,
}

impl Signer {
    /// The CA as its files say now.
    pub fn ca(&self) -> Result<CertificateAuthority> {
        let read = |p: &PathBuf| {
            mesh_certs::pem::read_text(p)
                .map_err(|e| Error::certs(format!("signing CA {}", p.display()), e))
        };
        let (cert, key) = (read(&self.cert)?, read(&self.key)?);
        CertificateAuthority::from_pem(
            &cert,
            &key,
            &self.cert.display().to_string(),
            &self.key.display().to_string(),
        )
        .map_err(|e| Error::certs("signing CA", e))
    }

    /// The validity of a certificate issued now.
    pub fn validity(&self) -> Result<Validity> {
        Validity::lasting(self.lifetime).map_err(|e| Error::certs("--cert-lifetime-seconds", e))
    }

    /// Signs a renewal request for `id`, the identity its sender
    /// authenticated with (a node of this cluster or an allowed remote).
    pub fn sign_for(&self, id: &SpiffeId, csr_pem: &str) -> Result<String> {
        self.ca()?
            .sign_client_request(csr_pem, id, self.validity()?)
            .map_err(|e| Error::certs(format!("renewal for {id}"), e))
    }
}

/// The answer to a `Renew` call from `peer` (its authorized id).
pub fn answer(
    signer: Option<&Signer>,
    peer: Option<&SpiffeId>,
    csr_pem: &str,
) -> std::result::Result<String, tonic::Status> {
    let Some(signer) = signer else {
        return Err(tonic::Status::failed_precondition(
            "this mesh-apiserver does not renew certificates: it runs without --signing-ca-cert/--signing-ca-key (chart: clustermesh.apiserver.tls.autoRenew); reissue the certificate with `meshctl connect` or `meshctl ca issue`",
        ));
    };
    let Some(id) = peer else {
        return Err(tonic::Status::unauthenticated(
            "no authenticated SPIFFE id on this connection",
        ));
    };
    let signed = signer.sign_for(id, csr_pem).map_err(|e| {
        tracing::warn!(peer = %id, error = %e, "renewal refused");
        tonic::Status::invalid_argument(e.to_string())
    })?;
    let kind = match id.kind() {
        PeerKind::Cluster => "cluster",
        PeerKind::Node => "node",
    };
    tracing::info!(peer = %id, kind, "renewed a peer's client certificate");
    Ok(signed)
}

/// The certificates this process uses or renews, by name: `server`,
/// `node-agents`, `client/<remote>`. Cheap to clone; shared.
#[derive(Debug, Clone, Default)]
pub struct Certificates(Arc<Mutex<BTreeMap<String, CertificateStatus>>>);

impl Certificates {
    /// Records the certificate `name` now in use.
    pub fn observe(
        &self,
        name: &str,
        der: &rustls::pki_types::CertificateDer<'_>,
        renewed_here: bool,
    ) {
        let Ok(life) = Lifetime::of(der, name) else {
            return;
        };
        let id = mesh_certs::inspect::spiffe_id(der).map(|i| i.to_string());
        let secs = |t: time::OffsetDateTime| t.unix_timestamp().max(0) as u64;
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = all
            .entry(name.to_string())
            .or_insert_with(|| CertificateStatus {
                name: name.to_string(),
                spiffe_id: None,
                not_after: 0,
                renew_at: 0,
                renewed_here,
                renewals: 0,
                last_error: None,
            });
        entry.spiffe_id = id;
        entry.not_after = secs(life.not_after);
        entry.renew_at = secs(life.renew_at());
        entry.renewed_here = renewed_here;
    }

    /// A renewal of `name` succeeded.
    pub fn renewed(&self, name: &str) {
        if let Some(e) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
        {
            e.renewals += 1;
            e.last_error = None;
        }
    }

    /// A renewal of `name` failed; it is retried.
    pub fn failed(&self, name: &str, error: &str) {
        if let Some(e) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
        {
            e.last_error = Some(error.to_string());
        }
    }

    /// Forgets `name` (a remote removed from the config).
    pub fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Every certificate's state.
    pub fn report(&self) -> Vec<CertificateStatus> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// How long to sleep before looking at a certificate again: until its
/// renewal time, but at least every tenth of its lifetime and at most
/// every minute (so a failed renewal is retried soon, and a swapped file
/// is noticed), never less than a second.
pub(crate) fn next_look(life: &Lifetime) -> Duration {
    let now = unix_seconds(SystemTime::now()) as i64;
    let until_due = life.renew_at().unix_timestamp() - now;
    let tenth = (life.not_after - life.not_before).whole_seconds() / 10;
    let secs = until_due.clamp(1, tenth.clamp(1, 60));
    Duration::from_secs(secs as u64)
}

/// How long to wait after a failed renewal: a tenth of the lifetime,
/// between a second and a minute (a refusing signer is not hammered).
pub(crate) fn retry_after(life: &Lifetime) -> Duration {
    let tenth = (life.not_after - life.not_before).whole_seconds() / 10;
    Duration::from_secs(tenth.clamp(1, 60) as u64)
}

#[cfg(test)]
mod tests;
