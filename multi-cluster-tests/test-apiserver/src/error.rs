//! The crate's error type: what can stop the server from starting.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of starting or configuring the test API server. Request-level
/// failures are not errors of the server: they are answered as Kubernetes
/// `Status` objects (see [`crate::status::ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Creating the serving CA or certificate failed.
    #[error("cannot create the serving certificate ({what}): {source}")]
    Certificate {
        /// Which step failed.
        what: &'static str,
        /// The certificate library's error.
        #[source]
        source: mesh_certs::Error,
    },
    /// The rustls server configuration was refused.
    #[error("cannot build the TLS server configuration: {source}")]
    Tls {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A file (kubeconfig, ready file) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service CIDR is not usable for allocation.
    #[error(
        "service CIDR {cidr} is not usable: {reason}; give an IPv4 CIDR with a prefix of /28 or shorter"
    )]
    ServiceCidr {
        /// The CIDR given.
        cidr: ipnet::IpNet,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
