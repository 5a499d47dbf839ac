//! The import's configuration: the `meshwork-clustermesh` entries (one per
//! remote cluster, parsed and judged against this cluster), where they come
//! from, and the importer's settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_api::ClusterName;
use mesh_api::clustermesh::{RefusedEntry, RemoteClusterConfig};
use mesh_certs::{TlsIdentity, TrustBundle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::export::LocalCluster;

/// The parsed config: usable remotes and refused entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMeshConfig {
    /// Remotes to connect to (each entry's key is its cluster name).
    pub remotes: Vec<RemoteClusterConfig>,
    /// Entries that were refused (the others keep working).
    pub refused: Vec<RefusedEntry>,
}

fn parse_entry(entry: &str, text: &str, local: &LocalCluster) -> Result<RemoteClusterConfig> {
    let bad = |reason: String| Error::RemoteConfig {
        entry: entry.to_string(),
        reason,
    };
    // The schema is shared with meshctl and the chart (mesh-api); what only
    // this cluster can judge is checked here.
    let y = RemoteClusterConfig::parse(entry, text).map_err(|e| bad(e.to_string()))?;
    let (name, id) = (&y.name, y.id);
    if *name == local.name {
        return Err(bad(format!(
            "names this cluster ({name}); a cluster cannot import itself"
        )));
    }
    if id == local.id {
        return Err(bad(format!(
            "cluster id {} is this cluster's own id; every cluster of a mesh needs a distinct id",
            id.get()
        )));
    }
    TrustBundle::from_pem(&y.ca_cert, &format!("{entry}: ca-cert"))
        .map_err(|e| bad(e.to_string()))?;
    TlsIdentity::from_pem(
        &y.client_cert,
        &y.client_key,
        &format!("{entry}: client-cert"),
        &format!("{entry}: client-key"),
    )
    .map_err(|e| bad(e.to_string()))?;
    mesh_api::cidr::check_pod_cidrs_disjoint(&local.name, &local.pod_cidrs, name, &y.pod_cidrs)
        .map_err(|e| {
            bad(format!(
                "{e}; pod CIDRs of connected clusters must not overlap"
            ))
        })?;
    Ok(y)
}

/// Parses the `meshwork-clustermesh` data (entry → YAML). Each bad entry is
/// refused with its reason; a duplicate name or id refuses every entry that
/// shares it after the first (by entry name).
pub fn parse_clustermesh(
    data: &BTreeMap<String, String>,
    local: &LocalCluster,
) -> ClusterMeshConfig {
    let mut out = ClusterMeshConfig::default();
    let mut names: BTreeMap<ClusterName, String> = BTreeMap::new();
    let mut ids: BTreeMap<u8, String> = BTreeMap::new();
    for (entry, text) in data {
        match parse_entry(entry, text, local) {
            Ok(r) => {
                if let Some(first) = names.get(&r.name) {
                    out.refused.push(RefusedEntry {
                        entry: entry.clone(),
                        reason: format!(
                            "cluster name {} is already configured by entry {first:?}",
                            r.name
                        ),
                    });
                } else if let Some(first) = ids.get(&r.id.get()) {
                    out.refused.push(RefusedEntry {
                        entry: entry.clone(),
                        reason: format!(
                            "duplicate cluster id {}: entry {first:?} already uses it; cluster ids must be unique in the mesh",
                            r.id.get()
                        ),
                    });
                } else {
                    names.insert(r.name.clone(), entry.clone());
                    ids.insert(r.id.get(), entry.clone());
                    out.remotes.push(r);
                }
            }
            Err(e) => out.refused.push(RefusedEntry {
                entry: entry.clone(),
                reason: match e {
                    Error::RemoteConfig { reason, .. } => reason,
                    other => other.to_string(),
                },
            }),
        }
    }
    for r in &out.refused {
        tracing::warn!(entry = %r.entry, reason = %r.reason, "clustermesh entry refused");
    }
    out
}

/// Where the `meshwork-clustermesh` data comes from: the Secret (watched
/// with kube-rs) or a directory with one file per remote. Its first value is
/// what the source said when first read, never a placeholder: the importer
/// withdraws the state of clusters it does not list, so "not read yet" must
/// not look like "no remotes".
pub type ConfigFeed = watch::Receiver<BTreeMap<String, String>>;

/// Feeds the config from a directory (one file per remote; hidden files,
/// such as a mounted Secret's `..data`, are ignored), re-read every `poll`.
/// Returns once the directory was read (retrying every `poll`, each failure
/// logged).
pub async fn directory_feed(
    dir: std::path::PathBuf,
    poll: Duration,
) -> (ConfigFeed, JoinHandle<()>) {
    let first = loop {
        match read_dir_entries(&dir) {
            Ok(data) => break data,
            Err(e) => {
                tracing::warn!(error = %e, "clustermesh config directory not readable yet; nothing is imported or withdrawn until it is");
                tokio::time::sleep(poll).await;
            }
        }
    };
    let (tx, rx) = watch::channel(first);
    let handle = tokio::spawn(async move {
        loop {
            match read_dir_entries(&dir) {
                Ok(data) => {
                    tx.send_if_modified(|cur| {
                        if *cur == data {
                            false
                        } else {
                            *cur = data;
                            true
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "clustermesh config directory"),
            }
            tokio::time::sleep(poll).await;
        }
    });
    (rx, handle)
}

fn read_dir_entries(dir: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let err = |source| Error::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        out.insert(name, std::fs::read_to_string(entry.path()).map_err(err)?);
    }
    Ok(out)
}

/// Settings of the importer.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Drop a remote's cached state after it was unreachable this long.
    pub stale_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Nameservers for remote endpoints given as DNS names (`ip:port`);
    /// empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// How much each remote may keep in the store.
    pub quotas: mesh_api::trust::Quotas,
    /// Where each remote's client certificate renewal is reported and
    /// stored.
    pub renewal: crate::renew::ClientRenewal,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            stale_timeout: Duration::from_secs(600),
            max_backoff: Duration::from_secs(10),
            nameservers: Vec::new(),
            quotas: mesh_api::trust::Quotas::default(),
            renewal: Default::default(),
        }
    }
}

/// The remote's TLS material (already validated by [`parse_entry`]).
pub(super) fn remote_tls(config: &RemoteClusterConfig) -> Result<(TlsIdentity, TrustBundle)> {
    let ctx = |what: &str| format!("clustermesh entry {:?}: {what}", config.name.as_str());
    let bundle =
        TrustBundle::from_pem(&config.ca_cert, "ca").map_err(|e| Error::certs(ctx("ca"), e))?;
    let identity = TlsIdentity::from_pem(&config.client_cert, &config.client_key, "cert", "key")
        .map_err(|e| Error::certs(ctx("client certificate"), e))?;
    Ok((identity, bundle))
}
