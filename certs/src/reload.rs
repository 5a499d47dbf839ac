//! TLS material that changes while a process runs (CA rotation, certificate
//! renewal): one [`LiveTls`] holds the current certificate, key and trust
//! bundle; the rustls configurations built from it look the material up at
//! every handshake, so a swap takes effect for the next handshake while
//! established connections keep going. [`LiveTls::watch_files`] re-reads
//! mounted Secret files (polling: Kubernetes swaps a `..data` symlink,
//! which file events do not follow reliably) and swaps only material that
//! parses and whose key matches its certificate; a half-written update is
//! retried at the next poll and the previous material keeps being served.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::pem;
use crate::spiffe::SpiffeId;
use crate::tls::{Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, TlsIdentity, provider};

/// The certificate, key and CA bundle files of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Private key (PEM, mode 0600).
    pub key: PathBuf,
    /// Trusted CAs (PEM bundle; two CAs while a rotation overlaps).
    pub ca: PathBuf,
}

/// A short digest of the three texts (to tell which files a process loaded).
fn digest(texts: &[String; 3]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in texts {
        h.update(t.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TlsFiles {
    /// A digest of the files' current contents; equal to
    /// [`LiveTls::fingerprint`] once they are loaded.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(digest(&self.read()?))
    }

    fn read(&self) -> Result<[String; 3]> {
        Ok([
            pem::read_text(&self.cert)?,
            pem::read_key_file(&self.key)?,
            pem::read_text(&self.ca)?,
        ])
    }
}

struct Material {
    key: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// The PEM texts it was built from (to skip unchanged reloads).
    source: Option<[String; 3]>,
}

impl Material {
    fn build(identity: TlsIdentity, bundle: &TrustBundle) -> Result<Material> {
        let p = provider();
        let roots = Arc::new(bundle.root_store()?);
        let key = CertifiedKey::from_der(identity.chain, identity.key, &p)
            .map_err(|source| Error::Tls { source })?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), p.clone())
            .build()
            .map_err(|source| Error::Verifier { source })?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, p)
            .build()
            .map_err(|source| Error::Verifier { source })?;
        Ok(Material {
            key: Arc::new(key),
            server_verifier,
            client_verifier,
            source: None,
        })
    }
}

/// The current TLS material of a component, shared by every configuration
/// built from it. Cloning shares it.
#[derive(Clone)]
pub struct LiveTls {
    inner: Arc<RwLock<Material>>,
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls")
            .field("generation", &self.generation())
            .finish()
    }
}

impl LiveTls {
    /// Material from an identity and a bundle.
    pub fn new(identity: TlsIdentity, bundle: &TrustBundle) -> Result<LiveTls> {
        Ok(LiveTls {
            inner: Arc::new(RwLock::new(Material::build(identity, bundle)?)),
            generation: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Material read from files.
    pub fn from_files(files: &TlsFiles) -> Result<LiveTls> {
        let live = LiveTls::new(
            TlsIdentity::load(&files.cert, &files.key)?,
            &TrustBundle::load(&files.ca)?,
        )?;
        let texts = files.read()?;
        live.write().source = Some(texts);
        Ok(live)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Material> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Material> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The digest of the files the material was loaded from (empty when it
    /// was not loaded from files); logged at each reload.
    pub fn fingerprint(&self) -> String {
        self.read().source.as_ref().map(digest).unwrap_or_default()
    }

    /// How many times the material was set (1 at start).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Replaces the material; the next handshake uses it.
    pub fn update(&self, identity: TlsIdentity, bundle: &TrustBundle) -> Result<()> {
        let material = Material::build(identity, bundle)?;
        *self.write() = material;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the certificate and key only (a renewal), keeping the trust
    /// bundle; the next handshake presents the new certificate.
    pub fn update_identity(&self, identity: TlsIdentity) -> Result<()> {
        let key = CertifiedKey::from_der(identity.chain, identity.key, &provider())
            .map_err(|source| Error::Tls { source })?;
        let mut material = self.write();
        material.key = Arc::new(key);
        material.source = None;
        drop(material);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The current certificate (the leaf).
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.read().key.cert.first().cloned()
    }

    /// The validity of the current certificate.
    pub fn lifetime(&self) -> Result<crate::Lifetime> {
        let leaf = self.certificate().ok_or(Error::InvalidSpiffeId {
            id: "<none>".into(),
            reason: "no certificate is loaded",
        })?;
        crate::Lifetime::of(&leaf, "current certificate")
    }

    /// Re-reads `files`; swaps the material when the files changed and
    /// form a valid identity and bundle. Returns whether it swapped.
    pub fn reload(&self, files: &TlsFiles) -> Result<bool> {
        let texts = files.read()?;
        if self.read().source.as_ref() == Some(&texts) {
            return Ok(false);
        }
        let [cert, key, ca] = &texts;
        let identity = TlsIdentity::from_pem(
            cert,
            key,
            &files.cert.display().to_string(),
            &files.key.display().to_string(),
        )?;
        let bundle = TrustBundle::from_pem(ca, &files.ca.display().to_string())?;
        let mut material = Material::build(identity, &bundle)?;
        material.source = Some(texts);
        *self.write() = material;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Polls `files` every `every` on a background thread until the
    /// returned guard is dropped. Each swap is logged; an unusable state of
    /// the files (half-written, key of another certificate) is logged once
    /// per distinct error and the previous material stays in use.
    pub fn watch_files(&self, files: TlsFiles, every: Duration) -> FileWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let live = self.clone();
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("tls-reload".into())
            .spawn(move || {
                let mut last_error = String::new();
                while !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(every);
                    match live.reload(&files) {
                        Ok(true) => {
                            last_error.clear();
                            tracing::info!(cert = %files.cert.display(), ca = %files.ca.display(),
                                generation = live.generation(), fingerprint = %live.fingerprint(),
                                "TLS certificate and trust bundle reloaded");
                        }
                        Ok(false) => last_error.clear(),
                        Err(e) => {
                            let e = e.to_string();
                            if e != last_error {
                                tracing::warn!(error = %e, "TLS files not reloaded; the previous certificate and bundle stay in use");
                                last_error = e;
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the TLS reload thread: certificates will not be reloaded");
        }
        FileWatch { stop }
    }

    /// A server configuration requiring client certificates that chain to
    /// the current bundle, authorized by `authorizer`, presenting the
    /// current certificate. Session resumption is off, so every connection
    /// is verified against the material and allow-list of its time.
    pub fn server_config(&self, authorizer: Authorizer) -> Result<ServerConfig> {
        let verifier = Arc::new(LiveClientVerifier {
            live: self.clone(),
            authorizer,
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Tls { source })?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(LiveCert(self.clone())));
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// Checks an already connected client's chain again, as a handshake now
    /// would: against the current bundle and clock, then `authorizer`'s
    /// current policy. A refusal is recorded like a handshake's.
    pub fn recheck_client(
        &self,
        authorizer: &Authorizer,
        chain: &[CertificateDer<'static>],
    ) -> std::result::Result<crate::SpiffeId, crate::Refusal> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(crate::Refusal::NoClientCertificate)?;
        let id = crate::inspect::spiffe_id(leaf);
        let peer = id
            .as_ref()
            .map_or_else(|| "<no spiffe id>".to_string(), ToString::to_string);
        let verifier = self.read().client_verifier.clone();
        let result = verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| crate::Refusal::from_tls_error(&e))
            .and_then(|_| authorizer.authorize(id));
        if let Err(refusal) = &result {
            authorizer.record(refusal, &format!("{peer} (open stream)"));
        }
        result
    }

    /// The SPIFFE id of the current certificate, if it has one.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        crate::inspect::spiffe_id(self.read().key.cert.first()?)
    }

    /// The id of the mesh-apiserver of `cluster` in this certificate's
    /// trust domain: what a client holding this material expects to reach.
    pub fn server_of(&self, cluster: mesh_api::ClusterName) -> Result<SpiffeId> {
        crate::tls::server_of(self.spiffe_id(), cluster)
    }

    /// A client configuration presenting the current certificate and
    /// trusting servers that chain to the current bundle and name `expected`.
    pub fn client_config(&self, expected: &SpiffeId) -> Result<ClientConfig> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Tls { source })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveServerVerifier {
                live: self.clone(),
                expected: expected.clone(),
            }))
            .with_client_cert_resolver(Arc::new(LiveCert(self.clone()))))
    }
}

/// Stops a [`LiveTls::watch_files`] thread when dropped (within one poll).
#[derive(Debug)]
pub struct FileWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct LiveCert(LiveTls);

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().key.clone())
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The current bundle's [`SpiffeServerVerifier`].
#[derive(Debug)]
struct LiveServerVerifier {
    live: LiveTls,
    expected: SpiffeId,
}

impl LiveServerVerifier {
    fn current(&self) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            chain: self.live.read().server_verifier.clone(),
            expected: self.expected.clone(),
        }
    }
}

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// The chain check against the current bundle, then the SPIFFE
/// authorization of [`SpiffeClientVerifier`].
#[derive(Debug)]
struct LiveClientVerifier {
    live: LiveTls,
    authorizer: Authorizer,
}

impl LiveClientVerifier {
    fn current(&self) -> SpiffeClientVerifier {
        SpiffeClientVerifier {
            chain: self.live.read().client_verifier.clone(),
            authorizer: self.authorizer.clone(),
        }
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from material that can be swapped; clients
        // hold one certificate and send it without hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
