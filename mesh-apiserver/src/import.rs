//! Import (the KVStoreMesh design): for every remote cluster in the
//! `meshwork-clustermesh` config, connect over mutual TLS, watch its export
//! and cache it in our store under its prefix, so node-agents need one
//! stream to their own mesh-apiserver whatever the number of clusters.
//!
//! A remote that becomes unreachable keeps its last known state, marked
//! stale, until `stale_timeout` or its removal from the config; reconnection
//! resumes (or resyncs) and removes only what disappeared meanwhile.
//!
//! This module runs one task per remote and follows the config; the parts:
//! [`config`] (entries, their source, settings), `resolve` (endpoints),
//! `session` (one remote's connection and watch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mesh_api::ClusterName;
use mesh_api::clustermesh::{RefusedEntry, RemoteClusterConfig, RemoteStatus, unix_seconds};
use mesh_certs::LiveTls;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::export::LocalCluster;
use crate::leader::Leadership;
use crate::state::Writer;
use crate::store::Store;

mod admit;
pub mod config;
mod resolve;
mod session;
mod sweep;

use config::remote_tls;
pub use config::{
    ClusterMeshConfig, ConfigFeed, ImportSettings, directory_feed, parse_clustermesh,
};
pub use resolve::EndpointResolver;

struct Running {
    config: RemoteClusterConfig,
    status: Arc<Mutex<RemoteStatus>>,
    task: JoinHandle<()>,
    /// Its CA bundle and our client certificate, swapped in place when only
    /// they change (CA rotation): the open stream keeps going.
    tls: LiveTls,
}

/// Whether two configs of a remote differ at most in their TLS material.
fn same_peer(a: &RemoteClusterConfig, b: &RemoteClusterConfig) -> bool {
    a.name == b.name
        && a.id == b.id
        && a.endpoints == b.endpoints
        && a.server_name == b.server_name
        && a.pod_cidrs == b.pod_cidrs
}

/// Runs one import task per configured remote, following config changes.
#[derive(Clone)]
pub struct Importer {
    store: Arc<dyn Store>,
    local: LocalCluster,
    leadership: Leadership,
    settings: ImportSettings,
    resolver: EndpointResolver,
    running: Arc<Mutex<BTreeMap<ClusterName, Running>>>,
    refused: Arc<Mutex<Vec<RefusedEntry>>>,
    declared: session::DeclaredCidrs,
    swept: Arc<std::sync::atomic::AtomicU64>,
    sweep_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("local", &self.local.name)
            .finish()
    }
}

impl Importer {
    /// An importer writing into `store`.
    pub fn new(
        store: Arc<dyn Store>,
        local: LocalCluster,
        leadership: Leadership,
        settings: ImportSettings,
    ) -> Self {
        let resolver = EndpointResolver::new(&settings.nameservers);
        Importer {
            store,
            local,
            leadership,
            settings,
            resolver,
            running: Arc::default(),
            refused: Arc::default(),
            declared: Arc::default(),
            swept: Arc::default(),
            sweep_failed: Arc::default(),
        }
    }

    /// Follows `feed` until it closes: remotes added start, removed ones
    /// stop and their cached state is withdrawn, changed ones restart.
    pub async fn run(self, mut feed: ConfigFeed) {
        loop {
            let data = feed.borrow_and_update().clone();
            self.apply(&data).await;
            if feed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies one version of the config.
    pub async fn apply(&self, data: &BTreeMap<String, String>) {
        let parsed = parse_clustermesh(data, &self.local);
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = parsed.refused.clone();
        let parsed_names: Vec<String> = parsed.remotes.iter().map(|r| r.name.to_string()).collect();
        let wanted: BTreeMap<ClusterName, RemoteClusterConfig> = parsed
            .remotes
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        // Each remote's declared CIDRs, before any task judges a record:
        // every remote's addresses must be disjoint from the others'.
        {
            let mut declared = self.declared.lock().unwrap_or_else(|e| e.into_inner());
            declared.retain(|name, _| wanted.contains_key(name));
            for (name, config) in &wanted {
                if !config.pod_cidrs.is_empty() {
                    declared.insert(name.clone(), config.pod_cidrs.clone());
                }
            }
        }
        let mut removed = Vec::new();
        let mut refused = Vec::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<ClusterName> = running.keys().cloned().collect();
            for name in names {
                let (Some(want), Some(run)) = (wanted.get(&name), running.get_mut(&name)) else {
                    if let Some(r) = running.remove(&name) {
                        r.task.abort();
                        removed.push(name);
                    }
                    continue;
                };
                if *want == run.config {
                    continue;
                }
                if same_peer(want, &run.config) {
                    match remote_tls(want).and_then(|(id, bundle)| {
                        run.tls.update(id, &bundle).map_err(|e| {
                            Error::certs(format!("clustermesh entry {:?}", want.name.as_str()), e)
                        })
                    }) {
                        Ok(()) => {
                            tracing::info!(remote = %name, "remote's CA bundle or client certificate changed: used from the next connection, the open stream keeps going");
                            run.config = want.clone();
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(remote = %name, error = %e, "new TLS material unusable; restarting the import")
                        }
                    }
                }
                if let Some(r) = running.remove(&name) {
                    r.task.abort();
                }
            }
            for (name, config) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                let tls = match remote_tls(&config).and_then(|(id, bundle)| {
                    LiveTls::new(id, &bundle).map_err(|e| {
                        Error::certs(format!("clustermesh entry {:?}", config.name.as_str()), e)
                    })
                }) {
                    Ok(tls) => tls,
                    Err(e) => {
                        refused.push(RefusedEntry {
                            entry: config.name.to_string(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                };
                let status = Arc::new(Mutex::new(RemoteStatus {
                    name: name.to_string(),
                    id: Some(config.id.get()),
                    endpoints: config.endpoints.clone(),
                    ..Default::default()
                }));
                tracing::info!(remote = %name, endpoints = ?config.endpoints, "importing remote cluster");
                let task = tokio::spawn(session::remote_task(session::RemoteTask {
                    store: self.store.clone(),
                    local: self.local.clone(),
                    leadership: self.leadership.clone(),
                    settings: self.settings.clone(),
                    reach: (self.resolver.clone(), tls.clone()),
                    config: config.clone(),
                    status: status.clone(),
                    declared: self.declared.clone(),
                }));
                running.insert(
                    name,
                    Running {
                        config,
                        status,
                        task,
                        tls,
                    },
                );
            }
        }
        if !refused.is_empty() {
            self.refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(refused);
        }
        for name in removed {
            self.settings
                .renewal
                .certs
                .forget(&format!("client/{name}"));
            let writer = Writer::new(self.store.clone(), name.clone(), self.leadership.clone());
            match writer.delete_all().await {
                Ok(n) => {
                    tracing::info!(remote = %name, records = n, "remote removed from the config: its state is withdrawn")
                }
                Err(e) => {
                    tracing::warn!(remote = %name, error = %e, "withdrawing a removed remote failed; the sweep retries")
                }
            }
        }
        // What the store still holds of clusters not configured (removed
        // while this replica was down or not leading). A refused entry
        // keeps its state: a typo must not wipe a remote.
        let keep: std::collections::BTreeSet<String> = parsed_names
            .into_iter()
            .chain(self.refused().into_iter().map(|r| r.entry))
            .collect();
        let result = sweep::sweep(&self.store, &self.local.name, &keep, &self.leadership).await;
        self.sweep_failed
            .store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(swept) => {
                let n: usize = swept.iter().map(|(_, n)| n).sum();
                self.swept
                    .fetch_add(swept.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(
                        clusters = swept.len(),
                        records = n,
                        "stray cluster state swept"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweeping unconfigured clusters failed; retried at the next pass")
            }
        }
    }

    /// Whether the last sweep failed (the caller applies the config again
    /// to retry it).
    pub fn sweep_failed(&self) -> bool {
        self.sweep_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Clusters whose leftover state the sweep has withdrawn since start.
    pub fn swept(&self) -> u64 {
        self.swept.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Status of every configured remote.
    pub fn status(&self) -> Vec<RemoteStatus> {
        let now = unix_seconds(std::time::SystemTime::now());
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values()
            .map(|r| {
                let mut s = r.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                s.last_event_age_secs = s.last_event.map(|t| now.saturating_sub(t));
                s
            })
            .collect()
    }

    /// Entries refused by the last config.
    pub fn refused(&self) -> Vec<RefusedEntry> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests;
