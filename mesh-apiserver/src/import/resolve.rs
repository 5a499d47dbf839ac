//! Resolving a remote's `host:port` endpoints (IP literals, or DNS names
//! through one shared hickory resolver).

use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};

/// Resolves remote endpoints: IP literals as they are, DNS names through
/// one hickory resolver built once per importer (so its cache and its
/// connections to the nameservers are shared by every remote and every
/// reconnection).
#[derive(Clone)]
pub struct EndpointResolver {
    /// The resolver, or why it could not be built (reported only when a
    /// remote names a host: IP endpoints need no resolver).
    dns: std::result::Result<hickory_resolver::TokioResolver, String>,
    /// Where it asks, for error messages.
    source: String,
}

impl std::fmt::Debug for EndpointResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointResolver")
            .field("source", &self.source)
            .field("ok", &self.dns.is_ok())
            .finish()
    }
}

impl EndpointResolver {
    /// A resolver asking `nameservers` (UDP, then TCP), or the system's
    /// resolver configuration (`/etc/resolv.conf`) when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Self {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        if nameservers.is_empty() {
            let dns = hickory_resolver::Resolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| {
                    format!(
                        "the system resolver configuration is unusable ({e}); set --dns-nameservers"
                    )
                });
            return EndpointResolver {
                dns,
                source: "the system resolver".into(),
            };
        }
        let servers = nameservers
            .iter()
            .map(|ns| {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
            })
            .collect();
        let dns = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| format!("building a resolver for {nameservers:?}: {e}"));
        EndpointResolver {
            dns,
            source: format!(
                "nameservers {}",
                nameservers
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// Resolves `host:port` endpoints. A name that does not resolve is
    /// skipped when another endpoint gives addresses; when none does, the
    /// error names the first failing host.
    pub async fn resolve(&self, entry: &str, endpoints: &[String]) -> Result<Vec<SocketAddr>> {
        let mut out = Vec::new();
        let mut failed = None;
        for e in endpoints {
            let (host, port) = e.rsplit_once(':').ok_or_else(|| Error::RemoteConfig {
                entry: entry.to_string(),
                reason: format!("endpoint {e:?} is not host:port"),
            })?;
            let port: u16 = port.parse().map_err(|_| Error::RemoteConfig {
                entry: entry.to_string(),
                reason: format!("endpoint {e:?}: bad port"),
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
                continue;
            }
            let looked_up = match &self.dns {
                Ok(dns) => dns
                    .lookup_ip(host)
                    .await
                    .map(|ips| ips.iter().collect::<Vec<_>>())
                    .map_err(|e| format!("{e} (asked {})", self.source)),
                Err(why) => Err(why.clone()),
            };
            match looked_up {
                Ok(ips) if !ips.is_empty() => {
                    out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                }
                Ok(_) => {
                    failed.get_or_insert((
                        host.to_string(),
                        format!("no address (asked {})", self.source),
                    ));
                }
                Err(detail) => {
                    tracing::warn!(%entry, %host, %detail, "endpoint does not resolve");
                    failed.get_or_insert((host.to_string(), detail));
                }
            }
        }
        match failed {
            Some((host, detail)) if out.is_empty() => Err(Error::Resolve {
                entry: entry.to_string(),
                host,
                detail,
            }),
            _ => Ok(out),
        }
    }
}
