//! The mesh CA: creating it, issuing certificates, and rotating it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::pem;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::validity::Validity;

/// A certificate with its freshly generated private key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes `<name>.crt` (0644) and `<name>.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        pem::write_atomic(&key, self.key_pem.as_bytes(), pem::KEY_MODE)?;
        pem::write_atomic(&cert, self.cert_pem.as_bytes(), pem::CERT_MODE)?;
        Ok((cert, key))
    }

    /// The certificate as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>> {
        Ok(pem::parse_certs(&self.cert_pem, "issued certificate")?.remove(0))
    }
}

/// The mesh CA: an ECDSA P-256 key and its self-signed certificate. Its URI
/// SAN `spiffe://<trust-domain>` records the trust domain it issues for.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    trust_domain: TrustDomain,
}

impl CertificateAuthority {
    /// Creates a new CA for `trust_domain`.
    pub fn create(trust_domain: TrustDomain, validity: Validity) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::Generate {
                what: "CA key".into(),
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Meshwork");
        // A distinct name per CA generation keeps chain building unambiguous
        // while an old and a new CA are both trusted.
        let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
        dn.push(
            DnType::CommonName,
            format!("Meshwork CA {trust_domain} {stamp:x}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: "CA certificate".into(),
            source,
        })?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            key,
            trust_domain,
        })
    }

    /// Loads a CA from PEM text; checks that the certificate is a CA and
    /// that the key belongs to it.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_what: &str,
        key_what: &str,
    ) -> Result<Self> {
        let cert = pem::parse_certs(cert_pem, cert_what)?.remove(0);
        let key = pem::parse_key_pair(key_pem, key_what)?;
        let parsed = crate::inspect::parse(&cert, cert_what)?;
        if !parsed.is_ca() {
            return Err(Error::NotCa {
                what: cert_what.to_string(),
                subject: parsed.subject().to_string(),
            });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch {
                cert: cert_what.to_string(),
                key: key_what.to_string(),
            });
        }
        let info = crate::inspect::inspect(&cert, cert_what)?;
        let trust_domain = info
            .uris
            .iter()
            .find_map(|u| u.strip_prefix("spiffe://"))
            .map(TrustDomain::new)
            .transpose()?
            .unwrap_or_default();
        Ok(CertificateAuthority {
            cert_pem: pem::certs_to_pem(std::slice::from_ref(&cert)),
            cert,
            key,
            trust_domain,
        })
    }

    /// The CA certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Issues a server certificate for DNS names and IP addresses (`names`
    /// entries that parse as IPs become IP SANs). For servers that are not
    /// a cluster's mesh-apiserver (a test Kubernetes API server); a
    /// mesh-apiserver's certificate comes from
    /// [`issue_cluster_server`](Self::issue_cluster_server).
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<IssuedCert> {
        self.issue(
            names.first().ok_or(Error::NoServerNames)?,
            server_sans(names)?,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// Issues a mesh-apiserver's server certificate: the DNS and IP `names`
    /// clients dial, plus the cluster's SPIFFE id as a URI SAN, so a client
    /// can check that the server it reached is the cluster it meant (the
    /// same CA signs every cluster's certificates in a shared trust domain).
    pub fn issue_cluster_server(
        &self,
        id: &SpiffeId,
        names: &[String],
        validity: Validity,
    ) -> Result<IssuedCert> {
        if id.kind() != crate::spiffe::PeerKind::Cluster {
            return Err(Error::InvalidSpiffeId {
                id: id.to_string(),
                reason: "a server certificate names a cluster, not a node",
            });
        }
        let mut sans = server_sans(names)?;
        sans.push(uri_san(&id.to_string())?);
        self.issue(
            names.first().ok_or(Error::NoServerNames)?,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// Issues a client certificate whose identity is `id`.
    pub fn issue_client(&self, id: &SpiffeId, validity: Validity) -> Result<IssuedCert> {
        let sans = vec![uri_san(&id.to_string())?];
        self.issue(
            &common_name_of(id),
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::Generate {
                what: format!("key for {common_name}"),
                source,
            }
        })?;
        Ok(IssuedCert {
            cert_pem: self.sign(common_name, sans, usage, validity, &key)?,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a client certificate for `id` over the public key of a
    /// certificate signing request (PEM). The request proves its sender
    /// holds the private key (its signature is checked); what it asks for
    /// (subject, names) is ignored: the certificate says `id`, which the
    /// caller took from the requester's authenticated certificate, so a
    /// renewal can never widen who the requester is.
    pub fn sign_client_request(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        validity: Validity,
    ) -> Result<String> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|source| {
            Error::Generate {
                what: format!("certificate signing request of {id}"),
                source,
            }
        })?;
        self.sign(
            &common_name_of(id),
            vec![uri_san(&id.to_string())?],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
            &csr.public_key,
        )
    }

    fn sign(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String> {
        let what = format!("certificate for {common_name}");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Meshwork");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let issuer =
            Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(|source| Error::Generate {
                what: what.clone(),
                source,
            })?;
        let cert = params
            .signed_by(public_key, &issuer)
            .map_err(|source| Error::Generate { what, source })?;
        Ok(cert.pem())
    }
}

fn common_name_of(id: &SpiffeId) -> String {
    match &id.node {
        Some(node) => format!("{}/{}", id.cluster, node),
        None => id.cluster.to_string(),
    }
}

fn server_sans(names: &[String]) -> Result<Vec<SanType>> {
    if names.is_empty() {
        return Err(Error::NoServerNames);
    }
    names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into().map_err(
                |source| Error::InvalidSan {
                    value: name.clone(),
                    source,
                },
            )?)),
        })
        .collect()
}

fn uri_san(uri: &str) -> Result<SanType> {
    Ok(SanType::URI(uri.try_into().map_err(|source| {
        Error::InvalidSan {
            value: uri.to_string(),
            source,
        }
    })?))
}

/// Where a CA directory stands in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotationState {
    /// One CA signs and is trusted.
    Stable,
    /// A new CA signs; the bundle trusts the old and the new one.
    Overlap,
}

/// A directory holding the mesh CA: `ca.crt`, `ca.key` (the signing CA) and
/// `bundle.crt` (the CAs peers must trust).
///
/// Rotation: [`rotate_start`](Self::rotate_start) creates a new signing CA
/// and writes a bundle that trusts both; once every certificate has been
/// reissued, [`rotate_finish`](Self::rotate_finish) drops the old CA. An
/// interrupted `rotate_start` is completed by the next [`load`](Self::load).
#[derive(Debug, Clone)]
pub struct CaDirectory {
    dir: PathBuf,
}

impl CaDirectory {
    /// The CA certificate file name.
    pub const CERT: &'static str = "ca.crt";
    /// The CA key file name.
    pub const KEY: &'static str = "ca.key";
    /// The trust bundle file name.
    pub const BUNDLE: &'static str = "bundle.crt";
    const NEXT_CERT: &'static str = "next-ca.crt";
    const NEXT_KEY: &'static str = "next-ca.key";

    /// A CA directory at `dir` (not touched until an operation runs).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaDirectory { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates a new CA in an empty (or missing) directory.
    pub fn create(
        &self,
        trust_domain: TrustDomain,
        validity: Validity,
    ) -> Result<CertificateAuthority> {
        if self.file(Self::CERT).exists() || self.file(Self::KEY).exists() {
            return Err(Error::CaDirectory {
                dir: self.dir.clone(),
                problem: "a CA already exists here; use `meshctl ca rotate` to replace it, or choose another directory",
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Write {
            path: self.dir.clone(),
            source,
        })?;
        let ca = CertificateAuthority::create(trust_domain, validity)?;
        self.write_ca(&ca, Self::CERT, Self::KEY)?;
        TrustBundle::single(ca.cert().clone()).save(&self.file(Self::BUNDLE))?;
        Ok(ca)
    }

    fn write_ca(&self, ca: &CertificateAuthority, cert: &str, key: &str) -> Result<()> {
        pem::write_atomic(&self.file(key), ca.key_pem().as_bytes(), pem::KEY_MODE)?;
        pem::write_atomic(&self.file(cert), ca.cert_pem().as_bytes(), pem::CERT_MODE)
    }

    /// Loads the signing CA, completing an interrupted rotation first.
    pub fn load(&self) -> Result<CertificateAuthority> {
        self.complete_interrupted_rotation()?;
        let (cert, key) = (self.file(Self::CERT), self.file(Self::KEY));
        if !cert.exists() {
            return Err(Error::CaDirectory {
                dir: self.dir.clone(),
                problem: "no ca.crt here; create a CA with `meshctl ca create --out-dir <dir>`",
            });
        }
        CertificateAuthority::from_pem(
            &pem::read_text(&cert)?,
            &pem::read_key_file(&key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// The trust bundle.
    pub fn bundle(&self) -> Result<TrustBundle> {
        TrustBundle::load(&self.file(Self::BUNDLE))
    }

    /// Where the directory stands in a rotation.
    pub fn rotation_state(&self) -> Result<RotationState> {
        Ok(if self.bundle()?.is_overlap() {
            RotationState::Overlap
        } else {
            RotationState::Stable
        })
    }

    /// Starts a rotation: a new CA signs from now on; the bundle trusts both.
    pub fn rotate_start(&self, validity: Validity) -> Result<CertificateAuthority> {
        let old = self.load()?;
        if self.rotation_state()? == RotationState::Overlap {
            return Err(Error::CaDirectory {
                dir: self.dir.clone(),
                problem: "a rotation is already under way; reissue certificates, then finish it with `meshctl ca rotate --finish`",
            });
        }
        let new = CertificateAuthority::create(old.trust_domain().clone(), validity)?;
        // Order matters for crash safety: the new CA is fully on disk before
        // the bundle names it, and becomes the signer only after that.
        self.write_ca(&new, Self::NEXT_CERT, Self::NEXT_KEY)?;
        TrustBundle::with_overlap(old.cert().clone(), new.cert().clone())
            .save(&self.file(Self::BUNDLE))?;
        self.promote_next()?;
        Ok(new)
    }

    /// Finishes a rotation: the bundle trusts only the signing CA.
    pub fn rotate_finish(&self) -> Result<()> {
        let ca = self.load()?;
        if self.rotation_state()? != RotationState::Overlap {
            return Err(Error::CaDirectory {
                dir: self.dir.clone(),
                problem: "no rotation is under way; start one with `meshctl ca rotate`",
            });
        }
        TrustBundle::single(ca.cert().clone()).save(&self.file(Self::BUNDLE))
    }

    fn promote_next(&self) -> Result<()> {
        for (from, to) in [(Self::NEXT_KEY, Self::KEY), (Self::NEXT_CERT, Self::CERT)] {
            std::fs::rename(self.file(from), self.file(to)).map_err(|source| Error::Write {
                path: self.file(to),
                source,
            })?;
        }
        Ok(())
    }

    fn complete_interrupted_rotation(&self) -> Result<()> {
        let next_cert = self.file(Self::NEXT_CERT);
        if !next_cert.exists() {
            return Ok(());
        }
        let next = pem::parse_certs(
            &pem::read_text(&next_cert)?,
            &next_cert.display().to_string(),
        )?
        .remove(0);
        let bundle = self.bundle()?;
        if bundle.contains(&next) {
            if self.file(Self::NEXT_KEY).exists() {
                self.promote_next()?;
            } else {
                // The key was already promoted; only the certificate remains.
                std::fs::rename(&next_cert, self.file(Self::CERT)).map_err(|source| {
                    Error::Write {
                        path: self.file(Self::CERT),
                        source,
                    }
                })?;
            }
        } else {
            // The bundle never named the new CA: the rotation did not start.
            for f in [Self::NEXT_CERT, Self::NEXT_KEY] {
                let _ = std::fs::remove_file(self.file(f));
            }
        }
        Ok(())
    }
}
