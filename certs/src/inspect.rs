//! Reading certificates: what they say, and whether a bundle trusts them.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{Error, Result};
use crate::refusal::Refusal;
use crate::spiffe::SpiffeId;
use crate::validity::rfc3339;

/// What a certificate says, in a form people and scripts can read.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whole days until expiry (negative once expired).
    pub expires_in_days: i64,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// DNS names in the SAN extension.
    pub dns_names: Vec<String>,
    /// IP addresses in the SAN extension.
    pub ip_addresses: Vec<IpAddr>,
    /// URIs in the SAN extension.
    pub uris: Vec<String>,
    /// The Meshwork SPIFFE id, when a URI SAN is one.
    pub spiffe_id: Option<String>,
    /// SHA-256 of the DER encoding, colon-separated hex.
    pub sha256_fingerprint: String,
}

impl CertInfo {
    /// "expires in N days" / "expired N days ago", for people.
    pub fn expiry_text(&self) -> String {
        match self.expires_in_days {
            d if d < 0 => format!("expired {} days ago", -d),
            0 => "expires today".to_string(),
            1 => "expires in 1 day".to_string(),
            d => format!("expires in {d} days"),
        }
    }
}

/// Parses a DER certificate, naming `what` in errors.
pub fn parse<'a>(der: &'a CertificateDer<'_>, what: &str) -> Result<X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| Error::BadCertificate {
            what: what.to_string(),
            detail: e.to_string(),
        })
}

/// Describes one certificate.
pub fn inspect(der: &CertificateDer<'_>, what: &str) -> Result<CertInfo> {
    inspect_at(der, what, OffsetDateTime::now_utc())
}

/// Describes one certificate as seen at `now`.
pub fn inspect_at(der: &CertificateDer<'_>, what: &str, now: OffsetDateTime) -> Result<CertInfo> {
    let cert = parse(der, what)?;
    let (mut dns_names, mut ip_addresses, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from_bytes(b) {
                        ip_addresses.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    let spiffe_id = uris
        .iter()
        .find_map(|u| u.parse::<SpiffeId>().ok())
        .map(|id| id.to_string());
    let not_after = cert.validity().not_after.to_datetime();
    let fingerprint = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(not_after),
        expires_in_days: (not_after - now).whole_days(),
        is_ca: cert.is_ca(),
        dns_names,
        ip_addresses,
        uris,
        spiffe_id,
        sha256_fingerprint: fingerprint,
    })
}

/// The Meshwork SPIFFE id of a certificate, if it has one.
pub fn spiffe_id(der: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => u.parse().ok(),
        _ => None,
    })
}

/// Checks that `leaf` was signed by one of `cas` and that both are valid at
/// `now`. Meshwork chains are one level deep: the mesh CA signs every leaf.
pub fn verify_signed_by(
    leaf: &CertificateDer<'_>,
    cas: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> std::result::Result<(), Refusal> {
    let leaf = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| Refusal::Other {
            detail: e.to_string(),
        })?;
    let issuer = cas.iter().find_map(|ca| {
        let (_, ca) = x509_parser::parse_x509_certificate(ca.as_ref()).ok()?;
        (ca.is_ca()
            && ca.subject() == leaf.issuer()
            && leaf.verify_signature(Some(ca.public_key())).is_ok())
        .then_some(ca)
    });
    let issuer = issuer.ok_or(Refusal::WrongCa)?;
    for cert in [&issuer, &leaf] {
        if now < cert.validity().not_before.to_datetime() {
            return Err(Refusal::NotYetValid);
        }
        if now > cert.validity().not_after.to_datetime() {
            return Err(Refusal::Expired);
        }
    }
    Ok(())
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}
