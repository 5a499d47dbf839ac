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
    /// A gRPC channel could not be built or connected. The message carries
    /// the transport error's whole chain: tonic's own text is only
    /// "transport error", and the reason (a refused certificate, a server
    /// that is another cluster) is further down.
    #[error("export server {endpoint}: connection failed: {}", chain(.source))]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
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

/// An error and its sources, joined with ": ", without repeats (some
/// layers repeat their source's text in their own).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        // (io::Error hides its inner error from `source()`.)
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = tls {
            // The layers above it print rustls's Debug form; the refusal's
            // own words replace them.
            parts.truncate(1);
            parts.push(format!("TLS: {}", mesh_certs::Refusal::from_tls_error(tls)));
            break;
        }
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let inner = std::io::Error::other("the server presented spiffe://x/cluster/b");
        assert_eq!(
            chain(&Outer(inner)),
            "outer: the server presented spiffe://x/cluster/b"
        );
    }
}
