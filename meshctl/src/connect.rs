//! `meshctl connect`, `disconnect` and `status`: joining clusters through
//! their kube contexts and watching the mesh-apiservers report the result.
//!
//! Order of work in `connect`: read both clusters, check them, and only when
//! every check passes write anything (so a refusal changes nothing). Then
//! each side gets an entry for the other in `meshwork-clustermesh`, with a
//! client certificate issued by the other side's CA, and meshctl waits until
//! both mesh-apiservers report the other connected and synced.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use mesh_api::clustermesh::{MeshStatus, RemoteClusterConfig};
use mesh_certs::{CertificateAuthority, SpiffeId, Validity};
use serde::Serialize;

use crate::kube::{Cluster, ClusterInfo, KubeArgs};
use crate::output::{self, OutputFormat};

/// Lifetime of client certificates when neither --cert-lifetime nor the
/// issuing cluster says.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// A status older than this means the mesh-apiserver is not running.
pub const STATUS_FRESH: Duration = Duration::from_secs(10);

/// One side of a connection, as read before anything is written.
#[derive(Debug, Clone)]
pub struct Side {
    /// Its kube context.
    pub context: String,
    /// Its identity.
    pub info: ClusterInfo,
    /// Its mesh-apiserver's status, if published.
    pub status: Option<MeshStatus>,
}

/// Why two clusters cannot be connected; each says what to change.
pub fn check_pair(a: &Side, b: &Side, now: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if a.info.id == b.info.id {
        problems.push(format!(
            "clusters {} ({}) and {} ({}) both have cluster id {}: ids must be unique in the mesh; reinstall one with a different cluster.id",
            a.info.name, a.context, b.info.name, b.context, a.info.id
        ));
    }
    if a.info.name == b.info.name {
        problems.push(format!(
            "contexts {} and {} are both cluster {:?}: names must be unique in the mesh; reinstall one with a different cluster.name",
            a.context, b.context, a.info.name.as_str()
        ));
    }
    if let Err(e) = mesh_api::cidr::check_pod_cidrs_disjoint(
        &a.info.name,
        &a.info.pod_cidrs,
        &b.info.name,
        &b.info.pod_cidrs,
    ) {
        problems.push(e.to_string());
    }
    for s in [a, b] {
        match &s.status {
            None => problems.push(format!(
                "cluster {} ({}): the mesh-apiserver has published no status: is it running? (kubectl --context {} -n <namespace> get pods)",
                s.info.name, s.context, s.context
            )),
            Some(st) if now.saturating_sub(st.updated_at) > STATUS_FRESH.as_secs() => problems.push(format!(
                "cluster {} ({}): the mesh-apiserver's status is {} s old: it is not running or cannot write its status",
                s.info.name, s.context, now.saturating_sub(st.updated_at)
            )),
            Some(_) => {}
        }
    }
    if let (Some(x), Some(y)) = (&a.status, &b.status)
        && major_minor(&x.version) != major_minor(&y.version)
    {
        problems.push(format!(
            "mesh-apiserver versions {} ({}) and {} ({}) are incompatible: upgrade both to the same minor version",
            x.version, a.info.name, y.version, b.info.name
        ));
    }
    problems
}

fn major_minor(v: &str) -> (&str, &str) {
    let mut it = v.split('.');
    (it.next().unwrap_or(""), it.next().unwrap_or(""))
}

fn now_secs() -> u64 {
    mesh_api::clustermesh::unix_seconds(SystemTime::now())
}

async fn read_side(cluster: &Cluster) -> anyhow::Result<Side> {
    Ok(Side {
        context: cluster.context.clone(),
        info: cluster.info().await?,
        status: cluster.status().await?,
    })
}

/// The entry `importer` needs to import `exporter`: its endpoints and CA,
/// and a client certificate for `importer` issued by `exporter`'s CA.
async fn entry_for(
    importer: &ClusterInfo,
    exporter: &Cluster,
    exporter_info: &ClusterInfo,
    lifetime: Duration,
) -> anyhow::Result<RemoteClusterConfig> {
    let (ca_cert, ca_key, bundle) = exporter.ca().await?;
    let ca = CertificateAuthority::from_pem(&ca_cert, &ca_key, "ca.crt", "ca.key")
        .with_context(|| format!("context {}: the mesh CA", exporter.context))?;
    let id = SpiffeId::cluster(ca.trust_domain().clone(), importer.name.clone());
    let cert = ca.issue_client(&id, Validity::lasting(lifetime)?)?;
    Ok(RemoteClusterConfig {
        name: exporter_info.name.clone(),
        id: exporter_info.id,
        endpoints: exporter.endpoints().await?,
        server_name: None,
        pod_cidrs: exporter_info.pod_cidrs.clone(),
        ca_cert: bundle,
        client_cert: cert.cert_pem,
        client_key: cert.key_pem,
    })
}

/// What `connect` did.
#[derive(Debug, Serialize)]
pub struct ConnectReport {
    /// Source cluster.
    pub source: String,
    /// Destination cluster.
    pub destination: String,
    /// Entries written (cluster that got the entry → remote it names).
    pub written: Vec<(String, String)>,
    /// Entries already correct and left alone.
    pub unchanged: Vec<(String, String)>,
    /// Both sides reported each other connected and synced.
    pub synced: bool,
}

/// `meshctl connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Context of the first cluster.
    #[arg(long)]
    pub context: String,
    /// Context of the cluster to connect it with.
    #[arg(long)]
    pub destination_context: String,
    /// Only the first cluster imports the destination (the destination still
    /// accepts it, but does not import the first cluster).
    #[arg(long)]
    pub only_one_direction: bool,
    /// How long to wait for both sides to report connected and synced (e.g. 90s, 5m).
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Do not wait: write the configuration and return.
    #[arg(long)]
    pub no_wait: bool,
    /// Lifetime of the client certificates written (e.g. 90d, 12h, 2m);
    /// default: what the issuing cluster's mesh-apiserver renews to
    /// (its cert-lifetime-seconds), else 90d. The importing mesh-apiserver
    /// renews each from the CA that issued it once two thirds have passed
    /// (the issuing side needs clustermesh.apiserver.tls.autoRenew).
    #[arg(long, value_parser = parse_duration)]
    pub cert_lifetime: Option<Duration>,
}

/// Parses `90`, `90s`, `5m`, `1h`, `90d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 90s, 5m, 1h, 90d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// Runs `meshctl connect`.
pub async fn connect(
    kube: &KubeArgs,
    args: ConnectArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let a = Cluster::connect(kube, &args.context).await?;
    let b = Cluster::connect(kube, &args.destination_context).await?;
    progress(&format!(
        "reading clusters from contexts {} and {}",
        a.context, b.context
    ));
    let (sa, sb) = (read_side(&a).await?, read_side(&b).await?);
    let problems = check_pair(&sa, &sb, now_secs());
    if !problems.is_empty() {
        anyhow::bail!(
            "cannot connect {} and {}; nothing was changed:\n  - {}",
            sa.info.name,
            sb.info.name,
            problems.join("\n  - ")
        );
    }
    let mut report = ConnectReport {
        source: sa.info.name.to_string(),
        destination: sb.info.name.to_string(),
        written: vec![],
        unchanged: vec![],
        synced: false,
    };
    // Build every entry first: a failure here still changes nothing.
    let mut plans = vec![(&a, &sa, &b, &sb)];
    if !args.only_one_direction {
        plans.push((&b, &sb, &a, &sa));
    }
    let mut writes = Vec::new();
    for (importer, si, exporter, se) in plans {
        let existing = importer.remotes().await?;
        let endpoints = exporter.endpoints().await?;
        let (_, _, bundle) = exporter.ca().await?;
        let current = existing
            .get(se.info.name.as_str())
            .and_then(|r| r.as_ref().ok());
        if current
            .is_some_and(|c| c.endpoints == endpoints && c.ca_cert == bundle && c.id == se.info.id)
        {
            report
                .unchanged
                .push((si.info.name.to_string(), se.info.name.to_string()));
            continue;
        }
        writes.push((
            importer,
            si,
            entry_for(
                &si.info,
                exporter,
                &se.info,
                args.cert_lifetime
                    .or(se.info.cert_lifetime)
                    .unwrap_or(DEFAULT_CERT_LIFETIME),
            )
            .await?,
        ));
    }
    for (importer, si, entry) in writes {
        progress(&format!(
            "writing {}'s entry for {} (endpoints {})",
            si.info.name,
            entry.name,
            entry.endpoints.join(", ")
        ));
        let name = entry.name.to_string();
        importer
            .patch_remotes(&BTreeMap::from([(name.clone(), Some(entry))]))
            .await?;
        report.written.push((si.info.name.to_string(), name));
    }
    if !args.no_wait {
        let mut pairs = vec![(&a, sb.info.name.to_string())];
        if !args.only_one_direction {
            pairs.push((&b, sa.info.name.to_string()));
        }
        wait_until(args.timeout, &pairs, |st, remote| st.is_synced_with(remote)).await?;
        report.synced = true;
    }
    output::emit(format, &report, |r| {
        if r.written.is_empty() {
            println!(
                "{} and {} were already connected; nothing changed",
                r.source, r.destination
            );
        } else {
            println!("connected {} and {}", r.source, r.destination);
        }
        if r.synced {
            println!("both sides report each other connected and synced");
        }
    })
}

/// Waits until `done(status of cluster, remote)` holds for every pair,
/// printing each change of state.
pub(crate) async fn wait_until(
    timeout: Duration,
    pairs: &[(&Cluster, String)],
    done: impl Fn(&MeshStatus, &str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let mut all = true;
        let mut line = Vec::new();
        for (cluster, remote) in pairs {
            let st = cluster.status().await?;
            let ok = st.as_ref().is_some_and(|s| done(s, remote));
            all &= ok;
            let refused = st.as_ref().and_then(|s| s.refused_entry(remote));
            let detail = match (
                refused,
                st.as_ref().and_then(|s| s.remotes.get(remote.as_str())),
            ) {
                (Some(why), _) => format!("connected=false synced=false ({why})"),
                (None, None) => "not configured yet".to_string(),
                (None, Some(r)) => {
                    let mut d = format!("connected={} synced={}", r.connected, r.synced);
                    if let Some(e) = r.refused.as_ref().or(r.last_error.as_ref()) {
                        d.push_str(&format!(" ({e})"));
                    }
                    d
                }
            };
            line.push(format!("{} → {remote}: {detail}", cluster.context));
        }
        let line = line.join("; ");
        if all {
            return Ok(());
        }
        if line != last {
            progress(&format!("waiting: {line}"));
            last = line.clone();
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {timeout:?}: {line}; see `meshctl status --context <ctx>` and the mesh-apiserver logs"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Progress goes to stderr, so `-o json` stays one document on stdout.
pub(crate) fn progress(msg: &str) {
    eprintln!("meshctl: {msg}");
}

/// `meshctl disconnect`.
#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// Context of the first cluster.
    #[arg(long)]
    pub context: String,
    /// Context of the cluster to disconnect from it.
    #[arg(long)]
    pub destination_context: String,
    /// How long to wait for both sides to withdraw the other.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs `meshctl disconnect`: removes both entries, waits until both sides
/// no longer list the other.
pub async fn disconnect(
    kube: &KubeArgs,
    args: DisconnectArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let a = Cluster::connect(kube, &args.context).await?;
    let b = Cluster::connect(kube, &args.destination_context).await?;
    let (ia, ib) = (a.info().await?, b.info().await?);
    for (c, remote) in [(&a, &ib), (&b, &ia)] {
        progress(&format!(
            "removing {}'s entry for {}",
            c.context, remote.name
        ));
        c.patch_remotes(&BTreeMap::from([(remote.name.to_string(), None)]))
            .await?;
    }
    let pairs = vec![(&a, ib.name.to_string()), (&b, ia.name.to_string())];
    wait_until(args.timeout, &pairs, |st, remote| {
        !st.remotes.contains_key(remote)
    })
    .await?;
    let report = serde_json::json!({"disconnected": [ia.name.as_str(), ib.name.as_str()]});
    output::emit(format, &report, |_| {
        println!(
            "disconnected {} and {}; each side withdrew the other's state",
            ia.name, ib.name
        )
    })
}

/// `meshctl status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Context of the cluster.
    #[arg(long)]
    pub context: String,
    /// Wait until every configured remote is connected and synced.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs `meshctl status`.
pub async fn status(kube: &KubeArgs, args: StatusArgs, format: OutputFormat) -> anyhow::Result<()> {
    let c = Cluster::connect(kube, &args.context).await?;
    if args.wait {
        let remotes: Vec<(&Cluster, String)> =
            c.remotes().await?.into_keys().map(|k| (&c, k)).collect();
        wait_until(args.timeout, &remotes, |st, r| st.is_synced_with(r)).await?;
    }
    let st = c.status().await?.with_context(|| {
        format!(
            "context {}: the mesh-apiserver has published no status: is it running?",
            c.context
        )
    })?;
    let age = now_secs().saturating_sub(st.updated_at);
    let report = meshctl::report::StatusReport {
        agents: agents_summary(&c).await,
        mesh: st,
    };
    output::emit(format, &report, |r| {
        let s = &r.mesh;
        let a = &r.agents;
        output::fields(&[
            ("cluster", format!("{} (id {})", s.cluster, s.cluster_id)),
            (
                "pod CIDRs",
                s.pod_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "mesh-apiserver",
                format!(
                    "{} (replica {}, status {age} s old{})",
                    s.version,
                    s.replica,
                    if age > STATUS_FRESH.as_secs() {
                        ", NOT RUNNING?"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "watch streams",
                format!("{} (node-agents and remote clusters)", s.watch_clients),
            ),
            (
                "node-agents",
                format!(
                    "{}/{} ready{}",
                    a.ready,
                    a.nodes,
                    if a.unreachable.is_empty() {
                        String::new()
                    } else {
                        format!(", {} not reachable from here", a.unreachable.len())
                    }
                ),
            ),
            ("encryption", a.encryption.clone()),
        ]);
        for p in a.unreachable.iter().chain(&a.not_ready) {
            println!("  {}: {}", p.node, p.problem);
        }
        let rows: Vec<Vec<String>> = s
            .remotes
            .values()
            .map(|r| {
                vec![
                    r.name.clone(),
                    yes_no(r.connected),
                    yes_no(r.synced),
                    r.stale_since.map_or("-".into(), |t| {
                        format!("{} s ago", now_secs().saturating_sub(t))
                    }),
                    format!(
                        "{}/{}/{}/{}",
                        r.counts.nodes, r.counts.identities, r.counts.endpoints, r.counts.services
                    ),
                    refused_total(&r.refused_records).to_string(),
                    r.refused
                        .clone()
                        .or(r.degraded.clone())
                        .or(r.last_error.clone())
                        .unwrap_or_default(),
                ]
            })
            .chain(s.refused_entries.iter().map(|r| {
                let no = yes_no(false);
                vec![
                    r.entry.clone(),
                    no.clone(),
                    no,
                    "-".into(),
                    "0/0/0/0".into(),
                    "-".into(),
                    r.reason.clone(),
                ]
            }))
            .collect();
        if rows.is_empty() {
            println!("no remote clusters (connect one with `meshctl connect`)");
        } else {
            output::table(
                &[
                    "REMOTE",
                    "CONNECTED",
                    "SYNCED",
                    "STALE",
                    "NODES/IDS/EPS/SVCS",
                    "REFUSED",
                    "LAST ERROR",
                ],
                &rows,
            );
            for r in s.remotes.values() {
                for line in refusal_lines(r) {
                    println!("{line}");
                }
            }
        }
        if !s.refused_exports.is_empty() {
            println!("not exported (this cluster cannot own them; each has a Warning Event):");
            for r in &s.refused_exports {
                println!("  {}: {}", r.object, r.reason);
            }
        }
        for line in certificate_lines(&s.certificates, now_secs()) {
            println!("{line}");
        }
    })
}

/// One line per certificate: when it expires and how often it was renewed;
/// a warning first for each one that needs a person.
pub(crate) fn certificate_lines(
    certs: &[mesh_api::clustermesh::CertificateStatus],
    now: u64,
) -> Vec<String> {
    let mut lines: Vec<String> = certs
        .iter()
        .filter_map(|c| c.warning(now))
        .map(|w| format!("WARNING: {w}"))
        .collect();
    if !certs.is_empty() {
        let list: Vec<String> = certs
            .iter()
            .map(|c| {
                let left = c.not_after as i64 - now as i64;
                let renewed = if c.renewed_here {
                    format!("renewed {}x", c.renewals)
                } else {
                    "not renewed here".to_string()
                };
                format!("{} ({}, {renewed})", c.name, human_left(left))
            })
            .collect();
        lines.push(format!("certificates: {}", list.join(", ")));
    }
    lines
}

fn human_left(secs: i64) -> String {
    match secs {
        s if s < 0 => format!("expired {} s ago", -s),
        s if s < 120 => format!("expires in {s} s"),
        s if s < 7200 => format!("expires in {} min", s / 60),
        s if s < 2 * 86_400 => format!("expires in {} h", s / 3600),
        s => format!("expires in {} days", s / 86_400),
    }
}

fn refused_total(c: &mesh_api::clustermesh::RecordCounts) -> u64 {
    c.by_kind().iter().map(|(_, n)| n).sum()
}

/// Under the table: what a remote sent that is not cached, and why (the
/// latest few, newest last), so the reason is one command away.
pub(crate) fn refusal_lines(r: &mesh_api::clustermesh::RemoteStatus) -> Vec<String> {
    let now = refused_total(&r.refused_records);
    if now == 0 {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{}: {now} record(s) refused, not cached (meshwork_remote_record_refusals_total counts them by reason):",
        r.name
    )];
    lines.extend(
        r.recent_refusals
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|f| format!("  {} {}: {} ({})", f.kind, f.key, f.reason, f.code)),
    );
    lines
}

/// Asks every node-agent of `c` for its status (in parallel): how many are
/// ready (mesh feed synced) and which encryption they run.
async fn agents_summary(c: &Cluster) -> meshctl::report::AgentsSummary {
    use meshctl::report::{AgentProblem, AgentsSummary};
    let agents = match crate::agents::of_cluster(c).await {
        Ok(a) => a,
        Err(e) => {
            return AgentsSummary {
                encryption: "unknown".into(),
                unreachable: vec![AgentProblem {
                    node: "-".into(),
                    problem: mesh_api::report(e.as_ref()),
                }],
                ..AgentsSummary::default()
            };
        }
    };
    let answers = crate::agents::each(&agents, |a| a.call(|cl| cl.status()));
    let mut summary = AgentsSummary {
        nodes: agents.len(),
        ..AgentsSummary::default()
    };
    let mut modes = std::collections::BTreeSet::new();
    for (agent, answer) in agents.iter().zip(answers) {
        match answer {
            Err(p) => summary.unreachable.push(p),
            Ok(st) => {
                modes.insert(match &st.encryption {
                    Some(e) if e.enabled => "wireguard",
                    _ => "off",
                });
                match &st.mesh_feed {
                    Some(f) if f.synced => summary.ready += 1,
                    Some(f) => summary.not_ready.push(AgentProblem {
                        node: agent.node.clone(),
                        problem: format!(
                            "mesh feed to {} not synced{}",
                            f.address,
                            f.last_error
                                .as_ref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                    }),
                    None => summary.not_ready.push(AgentProblem {
                        node: agent.node.clone(),
                        problem: "runs without a mesh-apiserver (--mesh-apiserver-address unset)"
                            .into(),
                    }),
                }
            }
        }
    }
    summary.encryption = match modes.len() {
        0 => "unknown".into(),
        1 => modes.into_iter().next().expect("one").into(),
        _ => "mixed (agents disagree: see `meshctl encryption status`)".into(),
    };
    summary
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

#[cfg(test)]
mod tests;
