//! Trust bundles: the CA certificates a peer's certificate may chain to.
//!
//! Normally a bundle holds the mesh CA alone. During a CA rotation it holds
//! the old and the new CA, so peers with certificates from either are
//! accepted while they are reissued; finishing the rotation drops the old one.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};
use crate::pem;

/// An ordered set of trusted CA certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    cas: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Trusts one CA.
    pub fn single(ca: CertificateDer<'static>) -> Self {
        TrustBundle { cas: vec![ca] }
    }

    /// Trusts the old and the new CA during a rotation (new first).
    pub fn with_overlap(old: CertificateDer<'static>, new: CertificateDer<'static>) -> Self {
        TrustBundle {
            cas: vec![new, old],
        }
    }

    /// Parses a PEM bundle; every block must be a CA certificate.
    pub fn from_pem(text: &str, what: &str) -> Result<Self> {
        let cas = pem::parse_certs(text, what)?;
        for der in &cas {
            let cert = crate::inspect::parse(der, what)?;
            if !cert.is_ca() {
                return Err(Error::NotCa {
                    what: what.to_string(),
                    subject: cert.subject().to_string(),
                });
            }
        }
        if cas.is_empty() {
            return Err(Error::EmptyBundle {
                what: what.to_string(),
            });
        }
        Ok(TrustBundle { cas })
    }

    /// Reads a PEM bundle file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_pem(&pem::read_text(path)?, &path.display().to_string())
    }

    /// Writes the bundle atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        pem::write_atomic(path, self.to_pem().as_bytes(), pem::CERT_MODE)
    }

    /// The bundle as PEM text.
    pub fn to_pem(&self) -> String {
        pem::certs_to_pem(&self.cas)
    }

    /// The CA certificates.
    pub fn cas(&self) -> &[CertificateDer<'static>] {
        &self.cas
    }

    /// Whether the bundle trusts more than one CA (a rotation is under way).
    pub fn is_overlap(&self) -> bool {
        self.cas.len() > 1
    }

    /// Whether `ca` is in the bundle.
    pub fn contains(&self, ca: &CertificateDer<'_>) -> bool {
        self.cas.iter().any(|c| c.as_ref() == ca.as_ref())
    }

    /// The bundle as a rustls root store.
    pub fn root_store(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for ca in &self.cas {
            roots
                .add(ca.clone())
                .map_err(|source| Error::Tls { source })?;
        }
        Ok(roots)
    }
}
