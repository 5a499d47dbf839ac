//! The Meshwork mesh CA and mutual TLS.
//!
//! What it is for: creating the mesh CA (ECDSA P-256) and rotating it through
//! a dual-trust bundle; issuing server certificates and SPIFFE-identified
//! client certificates for clusters and node-agents; inspecting and verifying
//! certificates; building rustls configurations that authenticate peers
//! against the bundle and authorize them by SPIFFE id; reading and writing
//! PEM files atomically with private keys kept at mode 0600; swapping a
//! running component's certificate and bundle without a restart
//! ([`LiveTls`]).
//!
//! What it is not for: distributing certificates (meshctl and the Helm chart
//! do that) or accepting connections (the servers do; they call
//! [`Authorizer::record_handshake_error`] so refusals are logged).

mod bundle;
mod ca;
mod error;
pub mod inspect;
pub mod pem;
mod refusal;
mod reload;
pub mod renewal;
pub mod revocation;
mod spiffe;
pub mod tls;
mod validity;

pub use bundle::TrustBundle;
pub use ca::{CaDirectory, CertificateAuthority, IssuedCert, RotationState};
pub use error::{Error, Result};
pub use inspect::CertInfo;
pub use refusal::Refusal;
pub use reload::{FileWatch, LiveTls, TlsFiles};
pub use renewal::Lifetime;
pub use spiffe::{PeerKind, SpiffeId, TrustDomain};
pub use tls::{AccessPolicy, Authorizer, TlsIdentity};
pub use validity::{Validity, rfc3339};
