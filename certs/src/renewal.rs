//! When a certificate is due for renewal, and the requester's half of a
//! renewal (a fresh key and a signing request for it).
//!
//! A certificate is due once two thirds of its lifetime have passed, so a
//! renewal has a third of the lifetime to succeed (a 90-day certificate
//! starts renewing 30 days before expiry; a 2-minute one 40 s before), and
//! the rule needs no configuration beyond the lifetime itself.

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::validity::Validity;

/// The validity period a certificate states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Lifetime {
    /// Reads the validity of a DER certificate.
    pub fn of(der: &CertificateDer<'_>, what: &str) -> Result<Lifetime> {
        let cert = crate::inspect::parse(der, what)?;
        Ok(Lifetime {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// The instant renewal is due: two thirds of the way through.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    /// Whether renewal is due at `now`.
    pub fn renewal_due(&self, now: OffsetDateTime) -> bool {
        now >= self.renew_at()
    }

    /// Seconds until expiry now (negative once expired).
    pub fn seconds_left_now(&self) -> f64 {
        self.seconds_left(OffsetDateTime::now_utc())
    }

    /// Seconds until expiry at `now` (negative once expired).
    pub fn seconds_left(&self, now: OffsetDateTime) -> f64 {
        (self.not_after - now).as_seconds_f64()
    }
}

impl Validity {
    /// Valid from a minute ago (tolerates small clock skew) for `lifetime`,
    /// which must be between one minute and [`Validity::MAX_DAYS`].
    pub fn lasting(lifetime: std::time::Duration) -> Result<Self> {
        let secs = lifetime.as_secs();
        if !(60..=Self::MAX_DAYS as u64 * 86_400).contains(&secs) {
            return Err(Error::InvalidDuration {
                seconds: secs,
                min: 60,
            });
        }
        let now = OffsetDateTime::now_utc();
        Ok(Validity {
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::seconds(secs as i64),
        })
    }
}

impl crate::CertificateAuthority {
    /// A new certificate and key that say what `current` says: a server
    /// certificate keeps its DNS and IP names and its cluster's SPIFFE id
    /// (`cluster` for one issued before server ids existed); a client
    /// certificate keeps its SPIFFE id.
    pub fn reissue(
        &self,
        current: &CertificateDer<'_>,
        what: &str,
        cluster: Option<&mesh_api::ClusterName>,
        validity: Validity,
    ) -> Result<crate::IssuedCert> {
        let info = crate::inspect::inspect(current, what)?;
        let id = crate::inspect::spiffe_id(current);
        let names: Vec<String> = info
            .dns_names
            .iter()
            .cloned()
            .chain(info.ip_addresses.iter().map(ToString::to_string))
            .collect();
        let no_id = || Error::InvalidSpiffeId {
            id: what.to_string(),
            reason: "the certificate carries no Meshwork SPIFFE id to reissue it with",
        };
        if names.is_empty() {
            return self.issue_client(&id.ok_or_else(no_id)?, validity);
        }
        let server = match (id, cluster) {
            (Some(id), _) if id.kind() == crate::PeerKind::Cluster => {
                crate::SpiffeId::cluster(self.trust_domain().clone(), id.cluster)
            }
            (_, Some(c)) => crate::SpiffeId::cluster(self.trust_domain().clone(), c.clone()),
            _ => return Err(no_id()),
        };
        self.issue_cluster_server(&server, &names, validity)
    }
}

/// A fresh private key and a signing request for it (both PEM). The key
/// never leaves the requester; the signer learns only the public key.
pub fn signing_request() -> Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
        Error::Generate {
            what: "renewal key".into(),
            source,
        }
    })?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|source| Error::Generate {
            what: "certificate signing request".into(),
            source,
        })?;
    Ok((csr, key.serialize_pem()))
}

#[cfg(test)]
mod tests;
