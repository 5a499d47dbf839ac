//! rustls configurations for mutual TLS between Meshwork components.
//!
//! The server verifies the client's chain against the trust bundle (webpki),
//! then authorizes its SPIFFE id: cluster certificates only for clusters in
//! the allow-list, node certificates only for this cluster's nodes, and never
//! one kind where the other is expected. Every refusal is logged with its
//! reason and kept for status reporting.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use mesh_api::ClusterName;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::bundle::TrustBundle;
use crate::error::{Error, Result};
use crate::inspect;
use crate::pem;
use crate::refusal::Refusal;
use crate::spiffe::{PeerKind, SpiffeId, TrustDomain};

/// The crypto provider Meshwork uses (ring), passed explicitly so it does
/// not matter which providers other crates compile in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Parses PEM text; `cert_what` and `key_what` name the inputs in errors.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_what: &str,
        key_what: &str,
    ) -> Result<Self> {
        let chain = pem::parse_certs(cert_pem, cert_what)?;
        let key_pair = pem::parse_key_pair(key_pem, key_what)?;
        let leaf = inspect::parse(&chain[0], cert_what)?;
        if leaf.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(Error::KeyMismatch {
                cert: cert_what.to_string(),
                key: key_what.to_string(),
            });
        }
        let key = pem::parse_private_key(key_pem, key_what)?;
        Ok(TlsIdentity { chain, key })
    }

    /// Reads a certificate file and its key file (which must be 0600).
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        Self::from_pem(
            &pem::read_text(cert)?,
            &pem::read_key_file(key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// The SPIFFE id of the leaf, if any.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        inspect::spiffe_id(&self.chain[0])
    }

    /// The id of the mesh-apiserver of `cluster` in this certificate's
    /// trust domain: what a client presenting it expects to reach.
    pub fn server_of(&self, cluster: ClusterName) -> Result<SpiffeId> {
        server_of(self.spiffe_id(), cluster)
    }
}

/// Who may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Remote clusters whose cluster certificates are accepted.
    pub clusters: BTreeSet<ClusterName>,
    /// Accept node certificates of this cluster (a mesh-apiserver serving its
    /// own node-agents); `None` refuses node certificates.
    pub nodes_of: Option<ClusterName>,
    /// Whether cluster certificates are served at all (a cluster certificate
    /// at an endpoint for nodes only is the wrong kind of peer; at one that
    /// serves clusters, an unlisted one is not configured yet).
    pub serves_clusters: bool,
}

impl AccessPolicy {
    /// A mesh-apiserver's: its own node-agents and the configured remote
    /// clusters (possibly none yet: an unlisted cluster is then told to
    /// connect, not that it is the wrong kind of peer).
    pub fn mesh_apiserver(
        local: ClusterName,
        remotes: impl IntoIterator<Item = ClusterName>,
    ) -> Self {
        AccessPolicy {
            clusters: remotes.into_iter().collect(),
            nodes_of: Some(local),
            serves_clusters: true,
        }
    }
}

impl AccessPolicy {
    /// Accept cluster certificates of these clusters only.
    pub fn clusters(clusters: impl IntoIterator<Item = ClusterName>) -> Self {
        AccessPolicy {
            clusters: clusters.into_iter().collect(),
            nodes_of: None,
            serves_clusters: true,
        }
    }

    /// Accept node certificates of `cluster` only.
    pub fn nodes_of(cluster: ClusterName) -> Self {
        AccessPolicy {
            clusters: BTreeSet::new(),
            nodes_of: Some(cluster),
            serves_clusters: false,
        }
    }
}

const RECENT_REFUSALS: usize = 64;

/// Decides which authenticated peers are allowed, and remembers refusals.
/// Cheap to clone; the policy can be replaced at run time (a remote cluster
/// added to the config needs no restart).
#[derive(Debug, Clone)]
pub struct Authorizer {
    trust_domain: TrustDomain,
    policy: Arc<RwLock<AccessPolicy>>,
    refusals: Arc<Mutex<VecDeque<Refusal>>>,
    /// Bumped by every policy change, so open streams know to re-check.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Authorizer {
    /// An authorizer for `trust_domain` with an initial policy.
    pub fn new(trust_domain: TrustDomain, policy: AccessPolicy) -> Self {
        Authorizer {
            trust_domain,
            policy: Arc::new(RwLock::new(policy)),
            refusals: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Replaces the policy; takes effect for the next handshake, and for
    /// open streams at their next [`crate::revocation`] check.
    pub fn set_policy(&self, policy: AccessPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Counts policy changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current policy.
    pub fn policy(&self) -> AccessPolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Decides on an already chain-verified certificate's SPIFFE id.
    pub fn authorize(&self, id: Option<SpiffeId>) -> std::result::Result<SpiffeId, Refusal> {
        let id = id.ok_or(Refusal::NoSpiffeId)?;
        if id.trust_domain != self.trust_domain {
            return Err(Refusal::WrongTrustDomain {
                presented: id.trust_domain.to_string(),
            });
        }
        let policy = self.policy();
        match id.kind() {
            PeerKind::Cluster if policy.clusters.contains(&id.cluster) => Ok(id),
            PeerKind::Cluster if !policy.serves_clusters => Err(Refusal::WrongKind {
                presented: PeerKind::Cluster,
                expected: PeerKind::Node,
            }),
            PeerKind::Cluster => Err(Refusal::ClusterNotAllowed {
                cluster: id.cluster.to_string(),
            }),
            PeerKind::Node => match &policy.nodes_of {
                Some(c) if *c == id.cluster => Ok(id),
                Some(_) => Err(Refusal::NodeOfOtherCluster {
                    cluster: id.cluster.to_string(),
                }),
                None => Err(Refusal::WrongKind {
                    presented: PeerKind::Node,
                    expected: PeerKind::Cluster,
                }),
            },
        }
    }

    /// Logs a refusal and keeps it among the recent ones. Servers call this
    /// for handshake failures the verifier never sees (no certificate).
    pub fn record(&self, refusal: &Refusal, peer: &str) {
        tracing::warn!(
            reason = refusal.label(),
            peer,
            "refused TLS peer: {refusal}"
        );
        let mut recent = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(refusal.clone());
    }

    /// Records the refusal behind a failed server handshake and returns it.
    pub fn record_handshake_error(&self, err: &std::io::Error, peer: &str) -> Refusal {
        let refusal = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .map(Refusal::from_tls_error)
            .unwrap_or_else(|| Refusal::Other {
                detail: err.to_string(),
            });
        // The verifier already recorded certificate refusals.
        if matches!(
            refusal,
            Refusal::NoClientCertificate | Refusal::Other { .. }
        ) {
            self.record(&refusal, peer);
        }
        refusal
    }

    /// The most recent refusals, oldest first.
    pub fn recent_refusals(&self) -> Vec<Refusal> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    pub(crate) chain: Arc<dyn ClientCertVerifier>,
    pub(crate) authorizer: Authorizer,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let id = inspect::spiffe_id(end_entity);
        let peer = id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "<no spiffe id>".to_string());
        if let Err(e) = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)
        {
            self.authorizer.record(&Refusal::from_tls_error(&e), &peer);
            return Err(e);
        }
        match self.authorizer.authorize(id) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(refusal) => {
                self.authorizer.record(&refusal, &peer);
                Err(refusal.into_tls_error())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A server configuration that requires client certificates chaining to
/// `bundle` and authorizes them with `authorizer`.
pub fn server_config(
    identity: TlsIdentity,
    bundle: &TrustBundle,
    authorizer: Authorizer,
) -> Result<ServerConfig> {
    let provider = provider();
    let chain = WebPkiClientVerifier::builder_with_provider(
        Arc::new(bundle.root_store()?),
        provider.clone(),
    )
    .build()
    .map_err(|source| Error::Verifier { source })?;
    let verifier = Arc::new(SpiffeClientVerifier { chain, authorizer });
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { source })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(|source| Error::Tls { source })
}

/// A client configuration presenting `identity` and trusting servers whose
/// certificates chain to `bundle` and name `expected` (the cluster whose
/// mesh-apiserver this client dials).
pub fn client_config(
    identity: TlsIdentity,
    bundle: &TrustBundle,
    expected: &SpiffeId,
) -> Result<ClientConfig> {
    let provider = provider();
    let chain = WebPkiServerVerifier::builder_with_provider(
        Arc::new(bundle.root_store()?),
        provider.clone(),
    )
    .build()
    .map_err(|source| Error::Verifier { source })?;
    let verifier = SpiffeServerVerifier {
        chain,
        expected: expected.clone(),
    };
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { source })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(|source| Error::Tls { source })
}

/// Checks the server's chain and name (webpki), then that its certificate
/// carries the SPIFFE id the client expects: with one CA per trust domain,
/// a valid chain only says "some cluster of this mesh".
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    pub(crate) chain: Arc<WebPkiServerVerifier>,
    pub(crate) expected: SpiffeId,
}

/// Whether a server's leaf names `expected`.
pub fn check_server_id(
    end_entity: &CertificateDer<'_>,
    expected: &SpiffeId,
) -> std::result::Result<(), Refusal> {
    match inspect::spiffe_id(end_entity) {
        Some(id) if id == *expected => Ok(()),
        presented => Err(Refusal::UnexpectedServer {
            presented: presented
                .map(|id| id.to_string())
                .unwrap_or_else(|| "<none>".to_string()),
            expected: expected.to_string(),
        }),
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_server_id(end_entity, &self.expected).map_err(Refusal::into_tls_error)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

pub(crate) fn server_of(own: Option<SpiffeId>, cluster: ClusterName) -> Result<SpiffeId> {
    let own = own.ok_or(Error::InvalidSpiffeId {
        id: "<none>".into(),
        reason: "the client certificate carries no spiffe:// URI SAN to take the trust domain from; reissue it",
    })?;
    Ok(SpiffeId::cluster(own.trust_domain, cluster))
}

/// Parses a TLS server name (DNS name or IP address).
pub fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|_| Error::InvalidServerName {
        name: name.to_string(),
    })
}

/// The SPIFFE id of an authenticated peer (from `peer_certificates()`).
pub fn peer_spiffe_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    certs.and_then(|c| c.first()).and_then(inspect::spiffe_id)
}
