//! The crate's error type: what can go wrong asking an agent.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request to a node-agent's local API that failed. Each variant names
/// the socket or request, and what a person can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node-agent's local API socket cannot be reached.
    #[error(
        "node-agent is not reachable on {}: {source}; is the node-agent running on this node? try again later",
        socket.display()
    )]
    AgentUnreachable {
        /// The socket path.
        socket: PathBuf,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
    /// The node-agent answered with an error status.
    #[error("node-agent refused {method} {path}: HTTP {status}: {body}")]
    AgentRefused {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The response body (the agent's error message).
        body: String,
    },
    /// The node-agent's answer could not be understood.
    #[error("node-agent on {}: malformed response to {path}: {reason}", socket.display())]
    AgentProtocol {
        /// The socket path.
        socket: PathBuf,
        /// Request path.
        path: String,
        /// What was wrong.
        reason: String,
    },
}
