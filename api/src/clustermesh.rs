//! The contract between `meshctl connect` and the mesh-apiserver.
//!
//! - [`RemoteClusterConfig`]: one key of the Secret `meshwork-clustermesh`
//!   (key = the remote cluster's name, value = YAML): how to reach and
//!   authenticate to that remote cluster's mesh-apiserver.
//! - [`MeshStatus`]: what a mesh-apiserver reports about itself and its
//!   remotes, published as `status.json` in the ConfigMap `meshwork-status`
//!   of its namespace (and served on its status endpoint), read by
//!   `meshctl status` and `meshctl connect --wait`.
//!
//! Both are parsed and validated here, once, for every reader.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterId, ClusterName};
use crate::error::{Error, Result};
use crate::records::Kind;
use crate::trust::RefusalCode;

/// Name of the Secret holding one entry per remote cluster.
pub const CLUSTERMESH_SECRET: &str = "meshwork-clustermesh";
/// Name of the ConfigMap where a mesh-apiserver publishes its status.
pub const STATUS_CONFIGMAP: &str = "meshwork-status";
/// Key of the status document in [`STATUS_CONFIGMAP`].
pub const STATUS_KEY: &str = "status.json";

/// One remote cluster, as `meshctl connect` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteClusterConfig {
    /// The remote cluster's name (equals the Secret key).
    pub name: ClusterName,
    /// The remote cluster's id.
    pub id: ClusterId,
    /// `host:port` of its mesh-apiserver; hosts may be DNS names.
    pub endpoints: Vec<String>,
    /// TLS name to verify on its server certificate (default: the first
    /// endpoint's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Its pod CIDRs, when known: an overlap with ours refuses the entry
    /// before connecting (and again against what the remote reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<IpNet>,
    /// The remote's CA bundle (PEM): verifies its server certificate.
    pub ca_cert: String,
    /// Our client certificate for it (PEM), issued by its CA.
    pub client_cert: String,
    /// The key of that certificate (PEM).
    pub client_key: String,
}

impl RemoteClusterConfig {
    /// Parses and validates the Secret entry stored under `key`.
    pub fn parse(key: &str, yaml: &str) -> Result<Self> {
        let bad = |problem: String| Error::InvalidClusterMeshEntry {
            key: key.to_string(),
            problem,
        };
        let cfg: RemoteClusterConfig =
            serde_yaml::from_str(yaml).map_err(|e| {
                bad(format!(
                    "malformed YAML ({e}); expected keys: name, id, endpoints, server-name, pod-cidrs, ca-cert, client-cert, client-key"
                ))
            })?;
        if cfg.name.as_str() != key {
            return Err(bad(format!(
                "it names cluster {:?}; the key must equal the cluster name",
                cfg.name.as_str()
            )));
        }
        if cfg.endpoints.is_empty() {
            return Err(bad("endpoints is empty: list at least one host:port".into()));
        }
        for ep in &cfg.endpoints {
            split_endpoint(ep).ok_or_else(|| bad(format!("endpoint {ep:?} is not host:port")))?;
        }
        for (field, pem, marker) in [
            ("ca-cert", &cfg.ca_cert, "CERTIFICATE"),
            ("client-cert", &cfg.client_cert, "CERTIFICATE"),
            ("client-key", &cfg.client_key, "PRIVATE KEY"),
        ] {
            let begins = pem.lines().any(|l| {
                l.trim().starts_with("-----BEGIN ") && l.trim().ends_with(&format!("{marker}-----"))
            });
            if !begins {
                return Err(bad(format!(
                    "{field} is not a PEM {}",
                    marker.to_lowercase()
                )));
            }
        }
        Ok(cfg)
    }

    /// The TLS name to verify: `server-name`, else the first endpoint's host.
    pub fn tls_server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or_else(|| {
            self.endpoints
                .first()
                .and_then(|e| split_endpoint(e))
                .map_or("", |(h, _)| h)
        })
    }

    /// The YAML stored in the Secret.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("plain struct serializes")
    }
}

/// `t` in unix seconds, the unit of every time in [`MeshStatus`] (0 for a
/// time before 1970).
pub fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_endpoint(ep: &str) -> Option<(&str, u16)> {
    let (host, port) = ep.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then_some((host, port))
}

/// Counts of what a remote exported (cached records by kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCounts {
    /// Nodes.
    pub nodes: u64,
    /// Identities.
    pub identities: u64,
    /// Endpoints.
    pub endpoints: u64,
    /// Global services.
    pub services: u64,
}

impl RecordCounts {
    /// Counts one more record of `kind`.
    pub fn add(&mut self, kind: Kind) {
        let n = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Identity => &mut self.identities,
            Kind::Endpoint => &mut self.endpoints,
            Kind::Service => &mut self.services,
        };
        *n += 1;
    }

    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Node => self.nodes,
            Kind::Identity => self.identities,
            Kind::Endpoint => self.endpoints,
            Kind::Service => self.services,
        }
    }

    /// `(kind plural, count)` for every kind, in [`Kind::ALL`] order.
    pub fn by_kind(&self) -> [(&'static str, u64); 4] {
        Kind::ALL.map(|k| (k.plural(), self.get(k)))
    }
}

/// A mesh-apiserver's view of one configured remote cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The remote's name (also its config entry: the Secret key).
    pub name: String,
    /// Its id.
    #[serde(default)]
    pub id: Option<u8>,
    /// Its configured `host:port` endpoints.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// A watch stream is open.
    pub connected: bool,
    /// Its snapshot arrived completely (sync marker seen) since the last connect.
    pub synced: bool,
    /// Unix seconds since which it is unreachable and its state is kept stale.
    #[serde(default)]
    pub stale_since: Option<u64>,
    /// The last error, for people.
    #[serde(default)]
    pub last_error: Option<String>,
    /// What is cached from it.
    #[serde(default)]
    pub counts: RecordCounts,
    /// Unix seconds of its last event.
    #[serde(default)]
    pub last_event: Option<u64>,
    /// Seconds since its last event (when the document was made).
    #[serde(default)]
    pub last_event_age_secs: Option<u64>,
    /// It is refused (its Info does not match the config, or its pod CIDRs
    /// overlap ours): why.
    #[serde(default)]
    pub refused: Option<String>,
    /// Last revision received.
    #[serde(default)]
    pub revision: u64,
    /// Successful connections so far.
    #[serde(default)]
    pub connections: u64,
    /// Records it sends that are refused now (kept out of the store), per kind.
    #[serde(default)]
    pub refused_records: RecordCounts,
    /// Records refused since this mesh-apiserver started, per kind and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusalCount>,
    /// The latest refused records, oldest first (a few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_refusals: Vec<RecordRefusal>,
    /// Over a quota: what is not cached and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// A record a remote sent that was not cached (see [`crate::trust`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRefusal {
    /// Its kind.
    pub kind: Kind,
    /// Its key within the remote and kind.
    pub key: String,
    /// The reason's code.
    pub code: RefusalCode,
    /// What is wrong.
    pub reason: String,
}

/// How many records of a kind were refused for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// The kind.
    pub kind: Kind,
    /// The reason's code.
    pub code: RefusalCode,
    /// Refusals so far.
    pub count: u64,
}

impl RemoteStatus {
    /// Whether the cached state is usable but out of date.
    pub fn is_stale(&self) -> bool {
        self.stale_since.is_some()
    }
}

/// A `meshwork-clustermesh` entry that was refused before connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedEntry {
    /// The entry (Secret key or file name).
    pub entry: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// The store behind a mesh-apiserver, as it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `etcd http://…` or `memory …`.
    pub backend: String,
    /// Reachable now.
    pub reachable: bool,
    /// Current revision.
    pub revision: u64,
    /// Latency of a revision read, seconds.
    pub latency_seconds: f64,
    /// The error, when unreachable.
    #[serde(default)]
    pub error: Option<String>,
}

/// A TLS peer that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRefusal {
    /// Stable label (`wrong-ca`, `expired`, `cluster-not-allowed`, …).
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// What a mesh-apiserver reports about itself: the one status document,
/// served on its `/status` endpoint, published by the leader in the
/// ConfigMap [`STATUS_CONFIGMAP`], and embedded in `meshctl status -o json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// This cluster.
    pub cluster: String,
    /// Its id.
    pub cluster_id: u8,
    /// Its pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The mesh-apiserver's version.
    pub version: String,
    /// The replica that made this document.
    pub replica: String,
    /// Whether that replica is the writing leader.
    #[serde(default)]
    pub leader: bool,
    /// Unix seconds when made; a reader treats an old status as "not running".
    pub updated_at: u64,
    /// The store, as that replica sees it.
    #[serde(default)]
    pub store: StoreStatus,
    /// Open Export watch streams (node-agents and remote clusters).
    #[serde(default)]
    pub watch_clients: u64,
    /// The remote clusters being imported, by name.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteStatus>,
    /// Config entries refused before connecting, with reasons.
    #[serde(default)]
    pub refused_entries: Vec<RefusedEntry>,
    /// Recently refused TLS peers.
    #[serde(default)]
    pub refused_peers: Vec<PeerRefusal>,
    /// Objects of this cluster it does not export because it cannot own
    /// them (a Node whose pod CIDRs lie outside the cluster's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_exports: Vec<RefusedObject>,
    /// The certificates this mesh-apiserver uses or renews, with their
    /// expiry and renewal state.
    #[serde(default)]
    pub certificates: Vec<CertificateStatus>,
    /// Clusters no longer configured whose leftover cached state this
    /// replica withdrew (removed while it was down or not leading).
    #[serde(default)]
    pub swept_clusters: u64,
}

/// One certificate's expiry and renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// What it is: `server`, `node-agents`, `client/<remote>`.
    pub name: String,
    /// The SPIFFE id it carries.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// End of validity (unix seconds).
    pub not_after: u64,
    /// When renewal is due (two thirds of its lifetime, unix seconds).
    pub renew_at: u64,
    /// Whether this process renews it (it has a signer, or its signer
    /// answers renewals); `false`: a person or another tool must.
    pub renewed_here: bool,
    /// Renewals done since start.
    #[serde(default)]
    pub renewals: u64,
    /// The last renewal's failure, until one succeeds.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl CertificateStatus {
    /// Why it needs a person at `now` (unix seconds), if it does: past
    /// its renewal time by more than a tenth of the remaining third, or
    /// expired.
    pub fn warning(&self, now: u64) -> Option<String> {
        let grace = (self.not_after.saturating_sub(self.renew_at) / 10).max(1);
        if now < self.renew_at + grace {
            return None;
        }
        let left = self.not_after as i64 - now as i64;
        let when = if left <= 0 {
            format!("expired {} s ago", -left)
        } else {
            format!("expires in {left} s")
        };
        let why = match (&self.last_error, self.renewed_here) {
            (Some(e), _) => format!("renewal is failing: {e}"),
            (None, true) => "it is due for renewal and has not been renewed yet".to_string(),
            (None, false) => "nothing renews it here: start the mesh-apiserver with --signing-ca-cert/--signing-ca-key (chart: clustermesh.apiserver.tls.autoRenew), or reissue it".to_string(),
        };
        Some(format!("certificate {} {when}; {why}", self.name))
    }
}

/// A local object the exporter refuses (also a Warning Event on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedObject {
    /// `Kind [namespace/]name`.
    pub object: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl MeshStatus {
    /// Parses the status document.
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::InvalidStatus {
            problem: e.to_string(),
        })
    }

    /// Whether `remote` is connected and synced.
    pub fn is_synced_with(&self, remote: &str) -> bool {
        self.remotes
            .get(remote)
            .is_some_and(|r| r.connected && r.synced)
    }

    /// Why the config entry `entry` was refused, if it was.
    pub fn refused_entry(&self, entry: &str) -> Option<&str> {
        self.refused_entries
            .iter()
            .find(|r| r.entry == entry)
            .map(|r| r.reason.as_str())
    }
}

#[cfg(test)]
mod tests;
