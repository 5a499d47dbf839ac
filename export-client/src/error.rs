//! The crate's error type.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to an `Export` server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server name cannot be used to verify the server certificate.
    #[error("{context}: {source}")]
    Certs {
        /// Where.
        context: String,
        /// The certificate error.
        #[source]
        source: mesh_certs::Error,
    },
    /// A gRPC channel could not be built or connected.
    #[error("export server {endpoint}: connection failed: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A gRPC call failed.
    #[error("export server {endpoint}: {source}")]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The status.
        #[source]
        source: Box<tonic::Status>,
    },
    /// The server sent a watch event that is not valid.
    #[error("{context}: {source}")]
    Domain {
        /// Which event.
        context: String,
        /// The domain error.
        #[source]
        source: mesh_api::Error,
    },
}
