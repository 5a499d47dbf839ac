//! The crate's error type.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the mesh-apiserver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The etcd client failed.
    #[error("etcd at {endpoints}: {operation}: {source}{hint}")]
    Etcd {
        /// The endpoints configured.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The client error.
        #[source]
        source: etcd_client::Error,
        /// What to check, when the TLS connection failed (else empty).
        hint: &'static str,
    },
    /// A watch asked for history the store no longer keeps.
    #[error(
        "revision {requested} of the store has been compacted (oldest kept: {compacted}, 0 if unknown); re-list and watch again"
    )]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The compaction revision.
        compacted: u64,
    },
    /// A client resumes from a revision the store has not reached (the store
    /// was reset or replaced).
    #[error("revision {requested} is beyond the store's current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's revision.
        current: u64,
    },
    /// A watch stream ended or fell behind.
    #[error("store watch on {prefix:?} ended: {reason}")]
    WatchEnded {
        /// The watched prefix.
        prefix: String,
        /// Why.
        reason: String,
    },
    /// A lease is unknown or expired.
    #[error("lease {lease} is unknown or expired")]
    LeaseExpired {
        /// The lease id.
        lease: i64,
    },
    /// A stored value did not decode.
    #[error("store key {key}: value does not decode as {what}: {detail}")]
    Decode {
        /// The key.
        key: String,
        /// The expected message.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// A key is not under the Meshwork layout.
    #[error("store key {key:?} is not of the form meshwork/v1/<cluster>/<kind>/<key>")]
    BadKey {
        /// The key.
        key: String,
    },
    /// A domain value was invalid.
    #[error("{context}: {source}")]
    Domain {
        /// Where.
        context: String,
        /// The domain error.
        #[source]
        source: mesh_api::Error,
    },
    /// Certificates or TLS configuration.
    #[error("{context}: {source}")]
    Certs {
        /// Where.
        context: String,
        /// The certificate error.
        #[source]
        source: mesh_certs::Error,
    },
    /// A socket could not be bound or used.
    #[error("{what} {addr}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The address or path.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Watching a remote cluster's `Export` failed (connect, RPC, an
    /// invalid event).
    #[error(transparent)]
    Export(#[from] mesh_export_client::Error),
    /// The `Export` server could not be served.
    #[error("export server {endpoint}: connection failed: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// An entry of the `meshwork-clustermesh` config is unusable.
    #[error("clustermesh entry {entry:?}: {reason}")]
    RemoteConfig {
        /// The entry (Secret key or file name).
        entry: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A DNS name in a remote's endpoints did not resolve.
    #[error("clustermesh entry {entry:?}: endpoint {host}: DNS resolution failed: {detail}")]
    Resolve {
        /// The entry.
        entry: String,
        /// The host name.
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// A configuration value is invalid.
    #[error("config {key}={value:?}: {reason}")]
    Config {
        /// The flag / ConfigMap key.
        key: String,
        /// The value.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A directory of config files could not be read.
    #[error("reading {path}: {source}")]
    ReadDir {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes client failed.
    #[error("kubernetes {what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// This replica is not the leader and may not write.
    #[error("not the leader: writes are refused on this replica")]
    NotLeader,
    /// Identity numbers of a cluster are exhausted.
    #[error("cluster {cluster}: no free identity number left (65280 in use)")]
    IdentitiesExhausted {
        /// The cluster.
        cluster: String,
    },
}

impl Error {
    #[allow(dead_code)]
    pub(crate) fn domain(context: impl Into<String>, source: mesh_api::Error) -> Self {
        Error::Domain {
            context: context.into(),
            source,
        }
    }
    #[allow(dead_code)]
    pub(crate) fn certs(context: impl Into<String>, source: mesh_certs::Error) -> Self {
        Error::Certs {
            context: context.into(),
            source,
        }
    }
}
