//! One remote's import: connect (resolve, TLS), check its Info against the
//! config, then watch its export into the store, batch by batch; reconnect
//! with backoff and keep its last known state, stale, while it is away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use mesh_api::clustermesh::{RemoteClusterConfig, RemoteStatus, unix_seconds};
use mesh_api::trust::RemoteScope;
use mesh_api::{ClusterName, Kind};
use mesh_certs::LiveTls;
use mesh_export_client::{Change, ExportClient, Mirror};

use super::admit::{Admission, Verdict};
use super::config::ImportSettings;
use super::resolve::EndpointResolver;
use crate::error::{Error, Result};
use crate::export::LocalCluster;
use crate::leader::Leadership;
use crate::state::{BatchOp, Writer};
use crate::store::Store;

/// How a remote is reached: the shared resolver and its live TLS material.
pub(super) type Reach = (EndpointResolver, LiveTls);

/// The pod CIDRs every configured remote declared (config, else its Info),
/// shared between the remotes' tasks: each remote's addresses must be
/// disjoint from the others'.
pub(super) type DeclaredCidrs = Arc<Mutex<BTreeMap<ClusterName, Vec<IpNet>>>>;

/// What `config`'s remote may speak for: its own declared CIDRs (`own`),
/// with this cluster's and every other remote's as foreign.
fn scope(
    config: &RemoteClusterConfig,
    local: &LocalCluster,
    own: &[IpNet],
    declared: &DeclaredCidrs,
) -> RemoteScope {
    let mut foreign = vec![(local.name.clone(), local.pod_cidrs.clone())];
    foreign.extend(
        declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(name, _)| **name != config.name)
            .map(|(name, cidrs)| (name.clone(), cidrs.clone())),
    );
    RemoteScope {
        cluster: config.name.clone(),
        id: config.id,
        pod_cidrs: own.to_vec(),
        foreign,
    }
}

/// The remote's declared pod CIDRs: the config's, else what its Info says.
fn own_cidrs(config: &RemoteClusterConfig, info: Option<&[IpNet]>) -> Vec<IpNet> {
    if config.pod_cidrs.is_empty() {
        info.map(<[IpNet]>::to_vec).unwrap_or_default()
    } else {
        config.pod_cidrs.clone()
    }
}

async fn connect(config: &RemoteClusterConfig, (resolver, tls): &Reach) -> Result<ExportClient> {
    let addrs = resolver
        .resolve(config.name.as_str(), &config.endpoints)
        .await?;
    // The server must be the cluster this entry names, not merely signed by
    // the mesh's CA (which signs every cluster of the trust domain).
    let tls = tls
        .server_of(config.name.clone())
        .and_then(|expected| tls.client_config(&expected))
        .map_err(|e| {
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
    declared: &DeclaredCidrs,
    info: &mesh_proto::pb::ClusterInfo,
) -> std::result::Result<Vec<IpNet>, String> {
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
    let overlap =
        |e: mesh_api::Error| format!("{e}; pod CIDRs of connected clusters must not overlap");
    mesh_api::cidr::check_pod_cidrs_disjoint(&local.name, &local.pod_cidrs, &config.name, &cidrs)
        .map_err(overlap)?;
    for (other, theirs) in declared.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if *other != config.name {
            mesh_api::cidr::check_pod_cidrs_disjoint(other, theirs, &config.name, &cidrs)
                .map_err(overlap)?;
        }
    }
    Ok(cidrs)
}

/// The cached state. With the remote's scope known (its config declares
/// its pod CIDRs), it is judged again at once: what the store holds and is
/// refused now (cached by an older version, or before the scope changed) is
/// withdrawn. Otherwise it is kept as is until the remote's Info is seen.
async fn load_cache(writer: &Writer, admission: &mut Admission, judge: bool) -> Mirror {
    let mut records = Vec::new();
    for kind in Kind::ALL {
        match writer.list(kind).await {
            Ok(items) => records.extend(items.into_iter().map(|(_, r)| r)),
            Err(e) => {
                tracing::warn!(remote = %writer.cluster(), error = %e, "reading the cached state")
            }
        }
    }
    admission.clear();
    for r in &records {
        admission.assume_kept(r);
    }
    if judge {
        let ops = admission.rejudge(records.clone());
        let withdrawn: std::collections::BTreeSet<(Kind, String)> = ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Delete(kind, key) => Some((*kind, key.clone())),
                BatchOp::Upsert(_) => None,
            })
            .collect();
        if !ops.is_empty() {
            tracing::warn!(remote = %writer.cluster(), records = withdrawn.len(), "cached records refused now: withdrawn");
            if let Err(e) = writer.write_batch(ops).await {
                tracing::warn!(remote = %writer.cluster(), error = %e, "withdrawing cached records refused now");
            }
        }
        records.retain(|r| !withdrawn.contains(&(r.kind(), r.key())));
    }
    Mirror::with_records(records)
}

/// Updates the status a remote's task shares with the importer.
pub(super) fn update(status: &Mutex<RemoteStatus>, f: impl FnOnce(&mut RemoteStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Writes what `admission` lets through of a batch of changes.
async fn write_changes(
    writer: &Writer,
    admission: &mut Admission,
    remote: &ClusterName,
    changes: Vec<Change>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(changes.len());
    for change in changes {
        let verdict = match change {
            Change::Upsert(record) => admission.upsert(record),
            Change::Delete((kind, wire)) => match wire.strip_prefix(&format!("{remote}/")) {
                Some(key) => admission.delete(kind, key.to_string()),
                None => Verdict::Nothing,
            },
        };
        match verdict {
            Verdict::Write(op) | Verdict::Withdraw(op) => batch.push(op),
            Verdict::Nothing => {}
        }
    }
    writer.write_batch(batch).await
}

/// Copies the admission's figures into the remote's status.
fn report(status: &Mutex<RemoteStatus>, admission: &Admission) {
    update(status, |s| {
        s.refused_records = admission.refused_now();
        s.refusals = admission.totals();
        s.recent_refusals = admission.recent().to_vec();
        s.degraded = admission.degraded();
    });
}

/// What a failure says about the remote refusing us, for people: it
/// closed our open stream (revocation), or its handshake refuses our
/// client certificate. TLS alerts carry no reason, so the text names what
/// to check on the remote's side.
pub(super) fn refused_by_remote(
    remote: &ClusterName,
    local: &ClusterName,
    err: &str,
) -> Option<String> {
    const REVOKED: &str = "access revoked on the open stream: ";
    if let Some(i) = err.find(REVOKED) {
        let why = err[i + REVOKED.len()..]
            .split(['"', '\''])
            .next()
            .unwrap_or_default();
        return Some(format!(
            "{remote} revoked our access ({why}): it no longer lists {local} in its clustermesh config, or our client certificate is no longer valid there"
        ));
    }
    const ALERTS: [&str; 5] = [
        "CertificateUnknown",
        "AccessDenied",
        "BadCertificate",
        "CertificateExpired",
        "UnknownCA",
    ];
    let alert = ALERTS
        .iter()
        .find(|a| err.contains(&format!("fatal alert: {a}")))?;
    Some(format!(
        "{remote} refuses our client certificate at the handshake (TLS alert {alert}): check that {remote} lists {local} in its clustermesh config and that our certificate is from its current CA and not expired (`meshctl connect` writes both)"
    ))
}

/// Everything one remote's task is given.
pub(super) struct RemoteTask {
    /// The store it caches into.
    pub(super) store: Arc<dyn Store>,
    /// This cluster.
    pub(super) local: LocalCluster,
    /// Only the leader imports.
    pub(super) leadership: Leadership,
    /// Timeouts and quotas.
    pub(super) settings: ImportSettings,
    /// How the remote is reached.
    pub(super) reach: Reach,
    /// Its config entry.
    pub(super) config: RemoteClusterConfig,
    /// Its status, shared with the importer.
    pub(super) status: Arc<Mutex<RemoteStatus>>,
    /// Every remote's declared pod CIDRs.
    pub(super) declared: DeclaredCidrs,
}

/// Imports one remote until aborted: connect, watch, reconnect with
/// backoff, keep its state stale while it is away.
pub(super) async fn remote_task(task: RemoteTask) {
    let RemoteTask {
        store,
        local,
        leadership,
        settings,
        config,
        status,
        declared,
        ..
    } = &task;
    let mut leadership = leadership.clone();
    let remote = config.name.clone();
    let writer = Writer::new(store.clone(), remote.clone(), leadership.clone());
    // Before its Info is seen, the remote may speak for the CIDRs its config
    // declares; the cache is judged at once only when there are some.
    let judge_cache = !config.pod_cidrs.is_empty();
    let mut admission = Admission::new(
        scope(config, local, &own_cidrs(config, None), declared),
        settings.quotas,
    );
    leadership.wait_leader().await;
    let mut mirror = load_cache(&writer, &mut admission, judge_cache).await;
    let mut disconnected_at: Option<(std::time::Instant, u64)> = if mirror.records().is_empty() {
        None
    } else {
        Some((std::time::Instant::now(), unix_seconds(SystemTime::now())))
    };
    update(status, |s| {
        s.counts = admission.kept_counts();
        s.stale_since = disconnected_at.as_ref().map(|d| d.1);
    });
    report(status, &admission);
    let mut backoff = Duration::from_millis(200);
    loop {
        if !leadership.is_leader() {
            update(status, |s| {
                s.connected = false;
                s.last_error = Some("this replica is not the leader; the leader imports".into());
            });
            leadership.wait_leader().await;
            // The previous leader may have written meanwhile: start from the store.
            mirror = load_cache(&writer, &mut admission, judge_cache).await;
            update(status, |s| s.counts = admission.kept_counts());
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
            admission.clear();
            update(status, |s| {
                s.counts = admission.kept_counts();
                s.synced = false;
            });
        }
        let result = session(
            &task,
            &writer,
            &mut mirror,
            &mut admission,
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
                    mirror = load_cache(&writer, &mut admission, judge_cache).await;
                }
                e.to_string()
            }
        };
        if let Some(reason) = refused_by_remote(&remote, &local.name, &err) {
            update(status, |s| s.refused = Some(reason));
        }
        let (refused, was_up) = {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            (s.refused.is_some(), s.connected)
        };
        if disconnected_at.is_none() {
            disconnected_at = Some((std::time::Instant::now(), unix_seconds(SystemTime::now())));
        }
        tracing::warn!(%remote, error = %err, "remote cluster unreachable; keeping its last known state (stale)");
        update(status, |s| {
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
    fields(remote = %task.config.name, cluster = %task.local.name, resume = tracing::field::Empty)
)]
async fn session(
    task: &RemoteTask,
    writer: &Writer,
    mirror: &mut Mirror,
    admission: &mut Admission,
    disconnected_at: &mut Option<(std::time::Instant, u64)>,
) -> Result<()> {
    let RemoteTask {
        config,
        reach,
        local,
        declared,
        status,
        ..
    } = task;
    let remote = &config.name;
    let mut client = connect(config, reach).await?;
    let info = client.info().await?;
    // Renews our client certificate from the remote's CA while connected.
    let _renewal = crate::renew::ClientRenewalTask::spawn(
        client.clone(),
        reach.1.clone(),
        remote.clone(),
        &task.settings.renewal,
    );
    let info_cidrs = match check_info(config, local, declared, &info) {
        Ok(cidrs) => cidrs,
        Err(reason) => {
            tracing::warn!(%remote, %reason, "remote cluster refused");
            update(status, |s| s.refused = Some(reason.clone()));
            return Err(Error::RemoteConfig {
                entry: config.name.to_string(),
                reason,
            });
        }
    };
    // What it may speak for from now on; what is cached is judged again
    // under it (the scope may have changed while it was away).
    let own = own_cidrs(config, Some(&info_cidrs));
    declared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(config.name.clone(), own.clone());
    admission.set_scope(scope(config, local, &own, declared));
    let ops = admission.rejudge(mirror.records().values().cloned().collect());
    if !ops.is_empty() {
        writer.write_batch(ops).await?;
    }
    report(status, admission);
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
        write_changes(writer, admission, remote, changes).await?;
        report(status, admission);
        if synced_now {
            for kind in Kind::ALL {
                writer.mark_synced(kind).await?;
            }
        }
        update(status, |s| {
            s.last_event = Some(unix_seconds(SystemTime::now()));
            s.revision = mirror.revision();
            s.counts = admission.kept_counts();
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
