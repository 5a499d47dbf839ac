//! One remote's import: connect (resolve, TLS), check its Info against the
//! config, then watch its export into the store, batch by batch; reconnect
//! with backoff and keep its last known state, stale, while it is away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use mesh_api::clustermesh::{RecordCounts, RemoteClusterConfig, RemoteStatus, unix_seconds};
use mesh_api::{ClusterName, Kind};
use mesh_certs::LiveTls;
use mesh_export_client::{Change, ExportClient, Mirror};

use super::config::ImportSettings;
use super::resolve::EndpointResolver;
use crate::error::{Error, Result};
use crate::export::LocalCluster;
use crate::leader::Leadership;
use crate::state::{BatchOp, Writer};
use crate::store::Store;

/// How a remote is reached: the shared resolver and its live TLS material.
pub(super) type Reach = (EndpointResolver, LiveTls);

async fn connect(config: &RemoteClusterConfig, (resolver, tls): &Reach) -> Result<ExportClient> {
    let addrs = resolver
        .resolve(config.name.as_str(), &config.endpoints)
        .await?;
    let tls = tls.client_config().map_err(|e| {
        Error::certs(
            format!("clustermesh entry {:?}: TLS", config.name.as_str()),
            e,
        )
    })?;
    Ok(ExportClient::connect(addrs, config.tls_server_name(), tls).await?)
}

fn check_info(
    config: &RemoteClusterConfig,
    local: &LocalCluster,
    info: &mesh_proto::pb::ClusterInfo,
) -> std::result::Result<(), String> {
    if info.name != config.name.as_str() {
        return Err(format!(
            "the server at {:?} is cluster {:?}, not {:?} as configured",
            config.endpoints, info.name, config.name
        ));
    }
    if info.id != u32::from(config.id.get()) {
        return Err(format!(
            "cluster {} reports id {}, configured {}",
            info.name,
            info.id,
            config.id.get()
        ));
    }
    let cidrs: Vec<IpNet> = info
        .pod_cidrs
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    mesh_api::cidr::check_pod_cidrs_disjoint(&local.name, &local.pod_cidrs, &config.name, &cidrs)
        .map_err(|e| format!("{e}; pod CIDRs of connected clusters must not overlap"))
}

async fn load_cache(writer: &Writer) -> Mirror {
    let mut records = Vec::new();
    for kind in Kind::ALL {
        match writer.list(kind).await {
            Ok(items) => records.extend(items.into_iter().map(|(_, r)| r)),
            Err(e) => {
                tracing::warn!(remote = %writer.cluster(), error = %e, "reading the cached state")
            }
        }
    }
    Mirror::with_records(records)
}

fn counts(mirror: &Mirror) -> RecordCounts {
    let mut c = RecordCounts::default();
    for (kind, _) in mirror.records().keys() {
        c.add(*kind);
    }
    c
}

/// Updates the status a remote's task shares with the importer.
pub(super) fn update(status: &Mutex<RemoteStatus>, f: impl FnOnce(&mut RemoteStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

async fn write_changes(writer: &Writer, remote: &ClusterName, changes: Vec<Change>) -> Result<()> {
    let mut batch = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::Upsert(record) => {
                if record.cluster() != remote {
                    tracing::warn!(remote = %remote, record_cluster = %record.cluster(), key = %record.key(), "remote sent a record of another cluster: ignored");
                    continue;
                }
                batch.push(BatchOp::Upsert(record));
            }
            Change::Delete((kind, wire)) => {
                let Some(key) = wire.strip_prefix(&format!("{remote}/")) else {
                    continue;
                };
                batch.push(BatchOp::Delete(kind, key.to_string()));
            }
        }
    }
    writer.write_batch(batch).await
}

pub(super) async fn remote_task(
    store: Arc<dyn Store>,
    local: LocalCluster,
    mut leadership: Leadership,
    settings: ImportSettings,
    reach: Reach,
    config: RemoteClusterConfig,
    status: Arc<Mutex<RemoteStatus>>,
) {
    let remote = config.name.clone();
    let writer = Writer::new(store, remote.clone(), leadership.clone());
    leadership.wait_leader().await;
    let mut mirror = load_cache(&writer).await;
    let mut disconnected_at: Option<(std::time::Instant, u64)> = if mirror.records().is_empty() {
        None
    } else {
        Some((std::time::Instant::now(), unix_seconds(SystemTime::now())))
    };
    update(&status, |s| {
        s.counts = counts(&mirror);
        s.stale_since = disconnected_at.as_ref().map(|d| d.1);
    });
    let mut backoff = Duration::from_millis(200);
    loop {
        if !leadership.is_leader() {
            update(&status, |s| {
                s.connected = false;
                s.last_error = Some("this replica is not the leader; the leader imports".into());
            });
            leadership.wait_leader().await;
            // The previous leader may have written meanwhile: start from the store.
            mirror = load_cache(&writer).await;
            update(&status, |s| s.counts = counts(&mirror));
        }
        if let Some((since, _)) = &disconnected_at
            && since.elapsed() >= settings.stale_timeout
            && !mirror.records().is_empty()
        {
            match writer.delete_all().await {
                Ok(n) => {
                    tracing::warn!(%remote, records = n, "remote unreachable past the stale timeout: its state is withdrawn")
                }
                Err(e) => tracing::warn!(%remote, error = %e, "withdrawing stale state failed"),
            }
            mirror = Mirror::new();
            update(&status, |s| {
                s.counts = counts(&mirror);
                s.synced = false;
            });
        }
        let result = session(
            &config,
            &reach,
            &local,
            &writer,
            &mut mirror,
            &status,
            &mut disconnected_at,
        )
        .await;
        let err = match result {
            Ok(()) => "the export stream ended".to_string(),
            Err(e) => {
                if !matches!(
                    e,
                    Error::Export(_)
                        | Error::Resolve { .. }
                        | Error::RemoteConfig { .. }
                        | Error::Certs { .. }
                        | Error::Domain { .. }
                ) {
                    // A write failed: what the mirror holds may not be in the
                    // store, so the next session starts from the store.
                    mirror = load_cache(&writer).await;
                }
                e.to_string()
            }
        };
        let (refused, was_up) = {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            (s.refused.is_some(), s.connected)
        };
        if disconnected_at.is_none() {
            disconnected_at = Some((std::time::Instant::now(), unix_seconds(SystemTime::now())));
        }
        tracing::warn!(%remote, error = %err, "remote cluster unreachable; keeping its last known state (stale)");
        update(&status, |s| {
            s.connected = false;
            s.last_error = Some(err);
            s.stale_since = disconnected_at.as_ref().map(|d| d.1);
        });
        if was_up {
            backoff = Duration::from_millis(200);
        }
        let wait = if refused {
            settings.max_backoff
        } else {
            backoff
        };
        let until_timeout = disconnected_at
            .as_ref()
            .map(|(since, _)| settings.stale_timeout.saturating_sub(since.elapsed()))
            .unwrap_or(wait);
        tokio::time::sleep(wait.min(until_timeout).max(Duration::from_millis(50))).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// One connection: Info checks, then the watch until it fails. Runs in a
/// `remote_session` span naming the remote, this cluster and the revision
/// it resumed from, the fields people filter a remote's story by.
#[tracing::instrument(
    name = "remote_session",
    skip_all,
    fields(remote = %config.name, cluster = %local.name, resume = tracing::field::Empty)
)]
async fn session(
    config: &RemoteClusterConfig,
    reach: &Reach,
    local: &LocalCluster,
    writer: &Writer,
    mirror: &mut Mirror,
    status: &Mutex<RemoteStatus>,
    disconnected_at: &mut Option<(std::time::Instant, u64)>,
) -> Result<()> {
    let remote = &config.name;
    let mut client = connect(config, reach).await?;
    let info = client.info().await?;
    if let Err(reason) = check_info(config, local, &info) {
        tracing::warn!(%remote, %reason, "remote cluster refused");
        update(status, |s| s.refused = Some(reason.clone()));
        return Err(Error::RemoteConfig {
            entry: config.name.to_string(),
            reason,
        });
    }
    let resume = mirror.resume_revision();
    tracing::Span::current().record("resume", resume);
    mirror.begin_watch(resume);
    let mut stream = client
        .watch(&[], resume, &format!("mesh-apiserver of {}", local.name))
        .await?;
    update(status, |s| {
        s.connected = true;
        s.refused = None;
        s.connections += 1;
    });
    tracing::info!(%remote, resume, "watching remote cluster");
    let mut leadership = writer.leadership().clone();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = leadership.wait_lost() => return Err(Error::NotLeader),
        };
        let Some(item) = item else { break };
        // Take whatever else is already here, and write it as one batch.
        let mut items = vec![item];
        while items.len() < 1024 {
            match stream.next().now_or_never() {
                Some(Some(item)) => items.push(item),
                _ => break,
            }
        }
        let mut changes = Vec::new();
        let mut synced_now = false;
        let mut failed = None;
        for item in items {
            match item {
                Ok(event) => {
                    synced_now |= matches!(event, mesh_proto::WatchEvent::SyncComplete { .. });
                    changes.extend(mirror.apply(&event));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        write_changes(writer, remote, changes).await?;
        if synced_now {
            for kind in Kind::ALL {
                writer.mark_synced(kind).await?;
            }
        }
        update(status, |s| {
            s.last_event = Some(unix_seconds(SystemTime::now()));
            s.revision = mirror.revision();
            s.counts = counts(mirror);
            if synced_now {
                s.synced = true;
                s.stale_since = None;
                s.last_error = None;
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        if synced_now {
            *disconnected_at = None;
            tracing::info!(%remote, revision = mirror.revision(), records = mirror.records().len(), "remote cluster synced");
        }
    }
    Ok(())
}
