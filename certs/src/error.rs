//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong with a certificate, key, bundle or TLS configuration.
/// Every variant names the file or certificate a person must look at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (nothing was left half-written).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file others can read or write.
    #[error(
        "private key {path} has mode {mode:o}: others must not be able to read or write it; run `chmod 600 {path}` (or 640 for a group the service runs as)"
    )]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Text that holds no PEM block of the expected kind.
    #[error("{what}: no PEM {expected} found; expected a '-----BEGIN {expected}-----' block")]
    NoPem {
        /// The file or input.
        what: String,
        /// The PEM label that was expected.
        expected: &'static str,
    },
    /// Text that is not well-formed PEM.
    #[error("{what}: malformed PEM: {source}")]
    MalformedPem {
        /// The file or input.
        what: String,
        /// The parser's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// DER that is not an X.509 certificate.
    #[error("{what}: not a valid X.509 certificate ({detail})")]
    BadCertificate {
        /// The file or input.
        what: String,
        /// The parser's explanation.
        detail: String,
    },
    /// A private key that cannot be used.
    #[error("{what}: invalid private key: {source}")]
    BadKey {
        /// The file or input.
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A private key that does not belong to the certificate.
    #[error(
        "private key {key} does not match certificate {cert}: the key's public half differs from the certificate's; use the key the certificate was issued for"
    )]
    KeyMismatch {
        /// The certificate file or input.
        cert: String,
        /// The key file or input.
        key: String,
    },
    /// A certificate that should be a CA and is not.
    #[error("{what}: certificate {subject} is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa {
        /// The file or input.
        what: String,
        /// Its subject.
        subject: String,
    },
    /// A name that cannot be a cluster or node name.
    #[error(transparent)]
    InvalidName(#[from] mesh_api::Error),
    /// A trust domain that is not a lowercase DNS name.
    #[error(
        "trust domain {domain:?} is invalid: use lowercase letters, digits, '-', '.' (e.g. meshwork.local)"
    )]
    InvalidTrustDomain {
        /// The rejected domain.
        domain: String,
    },
    /// A URI that is not a Meshwork SPIFFE id.
    #[error(
        "SPIFFE id {id:?} is invalid: {reason}; expected spiffe://<trust-domain>/cluster/<name>[/node/<node>]"
    )]
    InvalidSpiffeId {
        /// The rejected URI.
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A validity period that is empty or absurd.
    #[error("validity of {days} days is not allowed: use 1-36500 days")]
    InvalidLifetime {
        /// The requested number of days.
        days: i64,
    },
    /// A lifetime given as a duration that is too short or too long.
    #[error(
        "a certificate lifetime of {seconds} s is not allowed: use at least {min} s and at most 100 years"
    )]
    InvalidDuration {
        /// The requested lifetime.
        seconds: u64,
        /// The shortest allowed.
        min: u64,
    },
    /// A validity period whose start is not before its end.
    #[error(
        "validity period is empty: not-before {not_before} is not before not-after {not_after}"
    )]
    EmptyValidity {
        /// Start (RFC 3339).
        not_before: String,
        /// End (RFC 3339).
        not_after: String,
    },
    /// A subject alternative name that cannot be encoded.
    #[error("subject alternative name {value:?} is invalid: {source}")]
    InvalidSan {
        /// The rejected SAN.
        value: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A server certificate requested with no name at all.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// rcgen could not generate a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate chain did not verify against the trust bundle.
    #[error("{what}: {reason}")]
    Untrusted {
        /// The certificate that failed.
        what: String,
        /// Why.
        reason: crate::Refusal,
    },
    /// An empty trust bundle.
    #[error("trust bundle {what} holds no CA certificate")]
    EmptyBundle {
        /// The file or input.
        what: String,
    },
    /// A CA directory in a state the requested operation cannot start from.
    #[error("CA directory {dir}: {problem}")]
    CaDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        problem: &'static str,
    },
    /// rustls refused to build a configuration.
    #[error("TLS configuration: {source}")]
    Tls {
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// rustls's verifier builder refused the bundle.
    #[error("TLS client verifier: {source}")]
    Verifier {
        /// rustls's error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// An invalid TLS server name.
    #[error("{name:?} is not a valid TLS server name (DNS name or IP address)")]
    InvalidServerName {
        /// The rejected name.
        name: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
