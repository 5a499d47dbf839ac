//! Why a peer's certificate was refused.

use std::fmt;

use serde::Serialize;

use crate::spiffe::PeerKind;

/// The reason a certificate (or a handshake) was refused. Each is distinct so
/// logs, metrics and `meshctl status` can say exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Refusal {
    /// Not signed by any CA in the trust bundle.
    WrongCa,
    /// Past its not-after date.
    Expired,
    /// Before its not-before date.
    NotYetValid,
    /// The peer presented no certificate.
    NoClientCertificate,
    /// The certificate carries no Meshwork SPIFFE id.
    NoSpiffeId,
    /// The SPIFFE id belongs to another trust domain.
    WrongTrustDomain {
        /// The domain presented.
        presented: String,
    },
    /// A cluster certificate for a cluster that is not configured here.
    ClusterNotAllowed {
        /// The cluster presented.
        cluster: String,
    },
    /// A node certificate where a cluster certificate is required, or the reverse.
    WrongKind {
        /// What was presented.
        presented: PeerKind,
        /// What this endpoint accepts.
        expected: PeerKind,
    },
    /// A node certificate of another cluster.
    NodeOfOtherCluster {
        /// The cluster named by the node certificate.
        cluster: String,
    },
    /// A server whose certificate names another cluster (or none) than the
    /// one this connection was dialled for.
    UnexpectedServer {
        /// The SPIFFE id the server presented, or `<none>`.
        presented: String,
        /// The id expected.
        expected: String,
    },
    /// Anything else the TLS stack rejected.
    Other {
        /// The TLS stack's description.
        detail: String,
    },
}

impl Refusal {
    /// A short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::WrongCa => "wrong-ca",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not-yet-valid",
            Refusal::NoClientCertificate => "no-client-certificate",
            Refusal::NoSpiffeId => "no-spiffe-id",
            Refusal::WrongTrustDomain { .. } => "wrong-trust-domain",
            Refusal::ClusterNotAllowed { .. } => "cluster-not-allowed",
            Refusal::WrongKind { .. } => "wrong-kind",
            Refusal::NodeOfOtherCluster { .. } => "node-of-other-cluster",
            Refusal::UnexpectedServer { .. } => "unexpected-server",
            Refusal::Other { .. } => "other",
        }
    }

    /// Maps a rustls error (from a verifier or a failed handshake) to a refusal.
    pub fn from_tls_error(err: &rustls::Error) -> Refusal {
        use rustls::CertificateError as C;
        match err {
            rustls::Error::NoCertificatesPresented => Refusal::NoClientCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => Refusal::WrongCa,
                C::Expired | C::ExpiredContext { .. } => Refusal::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Refusal::NotYetValid,
                C::Other(other) => match other.0.downcast_ref::<Refusal>() {
                    Some(r) => r.clone(),
                    None => Refusal::Other {
                        detail: other.to_string(),
                    },
                },
                other => Refusal::Other {
                    detail: format!("{other:?}"),
                },
            },
            other => Refusal::Other {
                detail: other.to_string(),
            },
        }
    }

    /// The rustls error that carries this refusal through a handshake.
    pub fn into_tls_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WrongCa => f.write_str(
                "certificate is not signed by a CA in the trust bundle (wrong CA, or the bundle predates a CA rotation)",
            ),
            Refusal::Expired => f.write_str("certificate has expired; reissue it"),
            Refusal::NotYetValid => {
                f.write_str("certificate is not valid yet (check clocks, or wait for not-before)")
            }
            Refusal::NoClientCertificate => {
                f.write_str("peer presented no client certificate; mutual TLS is required")
            }
            Refusal::NoSpiffeId => f.write_str(
                "certificate carries no spiffe://<trust-domain>/cluster/... URI SAN; issue it with `meshctl ca issue`",
            ),
            Refusal::WrongTrustDomain { presented } => write!(
                f,
                "certificate belongs to trust domain {presented:?}, not this mesh's"
            ),
            Refusal::ClusterNotAllowed { cluster } => write!(
                f,
                "cluster {cluster:?} is not a configured remote cluster here; connect it with `meshctl connect`"
            ),
            Refusal::WrongKind {
                presented,
                expected,
            } => write!(
                f,
                "a {presented} certificate was presented where a {expected} certificate is required"
            ),
            Refusal::NodeOfOtherCluster { cluster } => write!(
                f,
                "node certificate of cluster {cluster:?} presented to another cluster's mesh-apiserver"
            ),
            Refusal::UnexpectedServer { presented, expected } => write!(
                f,
                "the server presented {presented} where {expected} was expected: the address reaches another cluster's mesh-apiserver, or its certificate predates SPIFFE server ids (reissue it with `meshctl ca rotate` or the chart's certgen)"
            ),
            Refusal::Other { detail } => write!(f, "certificate refused: {detail}"),
        }
    }
}

impl std::error::Error for Refusal {}
