//! Health-check node ports: a LoadBalancer Service with
//! `externalTrafficPolicy: Local` has a `spec.healthCheckNodePort`; every
//! node answers HTTP on it with how many of the Service's ready endpoints
//! run there (200 when at least one, 503 when none), as kube-proxy does, so
//! an external load balancer sends traffic only to nodes that serve it.
//!
//! [`health_checks`] and [`response`] are pure; [`HealthCheckServer`]
//! keeps one listener per port (0.0.0.0 in the agent's network namespace),
//! opened and closed as Services come and go, answering from the latest
//! counts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One health check: the Service and its ready endpoints on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Ready endpoints (distinct addresses) on this node.
    pub local_endpoints: usize,
}

/// The health checks this node serves, by port.
pub fn health_checks(
    services: &[Service],
    slices: &[EndpointSlice],
    node_name: &str,
) -> BTreeMap<u16, HealthCheck> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        if spec.type_.as_deref() != Some("LoadBalancer") || !local {
            continue;
        }
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut addresses = BTreeSet::new();
        for slice in slices {
            let of_service = slice.metadata.namespace.as_deref() == Some(namespace.as_str())
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(&name);
            if !of_service {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if ready && ep.node_name.as_deref() == Some(node_name) {
                    addresses.extend(ep.addresses.iter().cloned());
                }
            }
        }
        out.insert(
            port,
            HealthCheck {
                namespace,
                name,
                local_endpoints: addresses.len(),
            },
        );
    }
    out
}

/// The HTTP status and JSON body for a request on a port (None: the port
/// no longer has a check).
pub fn response(check: Option<&HealthCheck>) -> (u16, String) {
    match check {
        Some(c) => (
            if c.local_endpoints > 0 { 200 } else { 503 },
            serde_json::json!({
                "service": {"namespace": c.namespace, "name": c.name},
                "localEndpoints": c.local_endpoints,
                "serviceProxyHealthy": true,
            })
            .to_string(),
        ),
        None => (
            503,
            serde_json::json!({"error": "no health check on this port"}).to_string(),
        ),
    }
}

/// The listeners, one per health-check port.
#[derive(Debug, Default)]
pub struct HealthCheckServer {
    checks: Arc<RwLock<BTreeMap<u16, HealthCheck>>>,
    listeners: Mutex<BTreeMap<u16, JoinHandle<()>>>,
}

impl HealthCheckServer {
    /// A server with no ports yet.
    pub fn new() -> HealthCheckServer {
        HealthCheckServer::default()
    }

    /// Serves exactly `checks` from now on (needs a Tokio runtime): new
    /// ports are opened, gone ones closed. A port that cannot be bound is
    /// logged and tried again on the next call.
    pub fn set(&self, checks: BTreeMap<u16, HealthCheck>) {
        let ports: BTreeSet<u16> = checks.keys().copied().collect();
        *self.checks.write().expect("checks lock") = checks;
        let mut listeners = self.listeners.lock().expect("listeners lock");
        listeners.retain(|port, task| {
            let keep = ports.contains(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for port in ports {
            if listeners.contains_key(&port) {
                continue;
            }
            let std_listener = match std::net::TcpListener::bind(("0.0.0.0", port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot open the health-check node port; retrying on the next change");
                    continue;
                }
            };
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                continue;
            };
            tracing::info!(port, "health-check node port open");
            let checks = self.checks.clone();
            listeners.insert(port, tokio::spawn(serve(listener, port, checks)));
        }
    }

    /// The ports open now.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners
            .lock()
            .expect("listeners lock")
            .keys()
            .copied()
            .collect()
    }
}

impl Drop for HealthCheckServer {
    fn drop(&mut self) {
        for task in self.listeners.lock().expect("listeners lock").values() {
            task.abort();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    port: u16,
    checks: Arc<RwLock<BTreeMap<u16, HealthCheck>>>,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let checks = checks.clone();
        tokio::spawn(async move {
            // The request itself does not matter (any path, as kube-proxy):
            // read what arrives first, then answer.
            let mut buf = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), conn.read(&mut buf)).await;
            let (status, body) = response(checks.read().expect("checks lock").get(&port));
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let reply = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests;
