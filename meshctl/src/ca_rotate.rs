//! `meshctl ca rotate --context X`: rotates the mesh CA of a running cluster
//! and of everything that trusts it, without refusing any connection.
//!
//! A cluster X's CA (Secret `meshwork-ca`) signs X's mesh-apiserver server
//! certificate (`meshwork-apiserver-tls`), X's node-agent client certificate
//! (`meshwork-node-agent-tls`), and the client certificate every importer R
//! presents to X (in R's `meshwork-clustermesh` entry for X, whose `ca-cert`
//! is how R verifies X's server). Three steps, each waiting until every
//! party has reloaded before the next:
//!
//! 1. `trust-both`: a new CA; X's bundle and every R's entry trust old+new.
//! 2. `reissued`: every certificate above reissued by the new CA.
//! 3. done: only the new CA is trusted; `ca.crt`/`ca.key` are the new CA.
//!
//! The phase reached is recorded in the annotation [`PHASE_ANNOTATION`] on
//! Secret `meshwork-ca` and the new CA is kept there (`new-ca.crt`,
//! `new-ca.key`) until the end, so an interrupted rotation resumes where it
//! stopped when the same command is run again.
//!
//! What it is not for: a CA kept in a directory (`meshctl ca rotate
//! --ca-dir`, in [`crate::ca`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mesh_certs::{CertificateAuthority, SpiffeId, TrustBundle, Validity, inspect, pem};
use serde::Serialize;

use crate::certgen::{APISERVER_TLS, NODE_AGENT_TLS};
use crate::connect::{progress, wait_until};
use crate::kube::{CA_SECRET, Cluster, KubeArgs};
use crate::output::{self, OutputFormat};

/// Annotation on Secret `meshwork-ca` recording the rotation phase reached.
pub const PHASE_ANNOTATION: &str = "meshwork.io/ca-rotation";
/// Keys of Secret `meshwork-ca` holding the new CA while a rotation runs.
const NEW_CERT: &str = "new-ca.crt";
const NEW_KEY: &str = "new-ca.key";

/// Where a rotation of one cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// No rotation under way.
    Idle,
    /// The new CA exists (kept in `meshwork-ca`); trust of both may be partial.
    NewCa,
    /// Everyone trusts the old and the new CA.
    TrustBoth,
    /// Every certificate is issued by the new CA; the old is still trusted.
    Reissued,
}

impl Phase {
    /// The annotation value, `None` for [`Phase::Idle`].
    pub fn annotation(self) -> Option<&'static str> {
        match self {
            Phase::Idle => None,
            Phase::NewCa => Some("new-ca"),
            Phase::TrustBoth => Some("trust-both"),
            Phase::Reissued => Some("reissued"),
        }
    }

    /// Parses the annotation (absent: idle).
    pub fn parse(value: Option<&str>) -> anyhow::Result<Phase> {
        Ok(match value {
            None => Phase::Idle,
            Some("new-ca") => Phase::NewCa,
            Some("trust-both") => Phase::TrustBoth,
            Some("reissued") => Phase::Reissued,
            Some(other) => anyhow::bail!(
                "annotation {PHASE_ANNOTATION}={other:?} on Secret {CA_SECRET} is not a rotation phase (new-ca, trust-both, reissued); remove it only if no rotation is under way"
            ),
        })
    }
}

/// `meshctl ca rotate --context …` arguments (with `ca rotate`'s own).
#[derive(Debug, Clone)]
pub struct RotateArgs {
    /// Contexts whose cluster CA is rotated, one after the other.
    pub contexts: Vec<String>,
    /// Lifetime of the new CA, days.
    pub days: i64,
    /// How long each step waits for mounted Secrets to reach the processes
    /// and for them to reload.
    pub reload_wait: Duration,
    /// How long each step waits for the mesh to report connected and synced.
    pub timeout: Duration,
}

/// What was done for one cluster.
#[derive(Debug, Serialize)]
pub struct ClusterRotation {
    /// Cluster name.
    pub cluster: String,
    /// Its context.
    pub context: String,
    /// Phase found when starting (not `idle`: a rotation was resumed).
    pub resumed_from: Phase,
    /// SHA-256 fingerprint of the CA before.
    pub old_ca: String,
    /// SHA-256 fingerprint of the CA after.
    pub new_ca: String,
    /// Clusters whose entry for this one was updated (name, context).
    pub importers: Vec<(String, String)>,
    /// Steps run and how long each took, seconds.
    pub steps: Vec<(String, f64)>,
}

/// What `ca rotate --context` did.
#[derive(Debug, Serialize)]
pub struct RotateReport {
    /// Per cluster, in order.
    pub clusters: Vec<ClusterRotation>,
    /// Total duration, seconds.
    pub duration_seconds: f64,
}

/// Runs the rotation for every context.
pub async fn rotate(kube: &KubeArgs, args: RotateArgs, format: OutputFormat) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut report = RotateReport {
        clusters: vec![],
        duration_seconds: 0.0,
    };
    for ctx in &args.contexts {
        let x = Cluster::connect(kube, ctx).await?;
        report.clusters.push(rotate_one(kube, &x, &args).await?);
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    output::emit(format, &report, |r| {
        for c in &r.clusters {
            println!(
                "cluster {} ({}): CA {} → {}",
                c.cluster,
                c.context,
                &c.old_ca[..23.min(c.old_ca.len())],
                &c.new_ca[..23.min(c.new_ca.len())]
            );
            if c.resumed_from != Phase::Idle {
                println!("  resumed a rotation left at {:?}", c.resumed_from);
            }
            let importers: Vec<&str> = c.importers.iter().map(|(n, _)| n.as_str()).collect();
            println!(
                "  remote clusters updated: {}",
                if importers.is_empty() {
                    "(none)".to_string()
                } else {
                    importers.join(", ")
                }
            );
            for (step, secs) in &c.steps {
                println!("  {step}: {secs:.1} s");
            }
        }
        println!(
            "done in {:.1} s; certificates from the old CAs are now refused",
            r.duration_seconds
        );
    })
}

/// The CA Secret's contents.
struct CaSecret {
    data: BTreeMap<String, String>,
    phase: Phase,
}

async fn read_ca(x: &Cluster) -> anyhow::Result<CaSecret> {
    let (data, annotations) = x.secret_texts(CA_SECRET).await?.with_context(|| {
        format!(
            "context {}: no Secret {}/{CA_SECRET}: nothing to rotate (install the chart, or `meshctl ca certgen`)",
            x.context, x.namespace
        )
    })?;
    let phase = Phase::parse(annotations.get(PHASE_ANNOTATION).map(String::as_str))
        .with_context(|| format!("context {}", x.context))?;
    Ok(CaSecret { data, phase })
}

fn key<'a>(x: &Cluster, data: &'a BTreeMap<String, String>, k: &str) -> anyhow::Result<&'a str> {
    data.get(k).map(String::as_str).with_context(|| {
        format!(
            "context {}: Secret {}/{CA_SECRET} has no key {k}",
            x.context, x.namespace
        )
    })
}

fn fingerprint(ca: &CertificateAuthority) -> anyhow::Result<String> {
    Ok(inspect::inspect(ca.cert(), "CA")?.sha256_fingerprint)
}

/// Every other context whose cluster has an entry for `name` (it imports
/// it): (cluster name, cluster). Contexts that do not answer within 5 s
/// are reported and skipped.
async fn importers_of(
    kube: &KubeArgs,
    x: &Cluster,
    name: &str,
) -> anyhow::Result<Vec<(String, Cluster)>> {
    let mut out = Vec::new();
    for ctx in Cluster::contexts(kube)? {
        if ctx == x.context {
            continue;
        }
        let found = async {
            let c = Cluster::connect(kube, &ctx).await?;
            let remotes = c.remotes().await?;
            if !remotes.contains_key(name) {
                return Ok(None);
            }
            let info = c.info().await?;
            anyhow::Ok(Some((info.name.to_string(), c)))
        };
        match tokio::time::timeout(Duration::from_secs(5), found).await {
            Ok(Ok(Some(pair))) => out.push(pair),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => progress(&format!(
                "context {ctx} skipped (cannot read it: {}); if it imports {name}, rerun when it answers",
                mesh_api::report(e.as_ref())
            )),
            Err(_) => progress(&format!(
                "context {ctx} skipped (no answer within 5 s); if it imports {name}, rerun when it answers"
            )),
        }
    }
    Ok(out)
}

/// Rotates the CA of cluster `x`, resuming a rotation under way.
async fn rotate_one(
    kube: &KubeArgs,
    x: &Cluster,
    args: &RotateArgs,
) -> anyhow::Result<ClusterRotation> {
    let info = x.info().await?;
    let name = info.name.to_string();
    let secret = read_ca(x).await?;
    let resumed_from = secret.phase;
    let old = CertificateAuthority::from_pem(
        key(x, &secret.data, "ca.crt")?,
        key(x, &secret.data, "ca.key")?,
        "ca.crt",
        "ca.key",
    )
    .with_context(|| format!("context {}: the mesh CA", x.context))?;
    let importers = importers_of(kube, x, &name).await?;
    progress(&format!(
        "cluster {name} ({}): rotating its CA; clusters that import it: {}",
        x.context,
        if importers.is_empty() {
            "(none)".to_string()
        } else {
            importers
                .iter()
                .map(|(n, c)| format!("{n} ({})", c.context))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let mut steps = Vec::new();
    // The new CA: kept in the Secret before anything trusts it, so an
    // interrupted rotation continues with the same one.
    let new = if secret.phase == Phase::Idle {
        let new =
            CertificateAuthority::create(old.trust_domain().clone(), Validity::days(args.days)?)?;
        x.patch_secret(
            CA_SECRET,
            &BTreeMap::from([
                (NEW_CERT.to_string(), Some(new.cert_pem().to_string())),
                (NEW_KEY.to_string(), Some(new.key_pem())),
            ]),
            &phase_patch(Phase::NewCa),
        )
        .await?;
        new
    } else {
        progress(&format!(
            "cluster {name}: resuming the rotation left at phase {:?}",
            secret.phase
        ));
        CertificateAuthority::from_pem(
            key(x, &secret.data, NEW_CERT)?,
            key(x, &secret.data, NEW_KEY)?,
            NEW_CERT,
            NEW_KEY,
        )?
    };
    let both = TrustBundle::with_overlap(old.cert().clone(), new.cert().clone()).to_pem();
    let only_new = TrustBundle::single(new.cert().clone()).to_pem();
    let old_ca = fingerprint(&old)?;
    let new_ca = fingerprint(&new)?;
    let wait = Wait {
        x,
        name: &name,
        importers: &importers,
        args,
    };

    if secret.phase < Phase::TrustBoth {
        let t = Instant::now();
        progress(&format!(
            "cluster {name} step 1/3: trust old and new CA (bundle of {name}, entries for {name} in its importers)"
        ));
        set_trust(x, &importers, &name, &both, None).await?;
        wait.reloaded("step 1/3").await?;
        x.patch_secret(CA_SECRET, &BTreeMap::new(), &phase_patch(Phase::TrustBoth))
            .await?;
        steps.push((
            "trust old and new CA".to_string(),
            t.elapsed().as_secs_f64(),
        ));
    }
    if secret.phase < Phase::Reissued {
        let t = Instant::now();
        progress(&format!(
            "cluster {name} step 2/3: reissue the mesh-apiserver, node-agent and remote client certificates under the new CA"
        ));
        reissue(x, &importers, &name, &new, &both).await?;
        wait.reloaded("step 2/3").await?;
        x.patch_secret(CA_SECRET, &BTreeMap::new(), &phase_patch(Phase::Reissued))
            .await?;
        steps.push((
            "reissue certificates".to_string(),
            t.elapsed().as_secs_f64(),
        ));
    }
    let t = Instant::now();
    progress(&format!(
        "cluster {name} step 3/3: drop the old CA (only the new one is trusted)"
    ));
    set_trust(x, &importers, &name, &only_new, Some(&new)).await?;
    wait.reloaded("step 3/3").await?;
    x.patch_secret(CA_SECRET, &BTreeMap::new(), &phase_patch(Phase::Idle))
        .await?;
    steps.push(("drop the old CA".to_string(), t.elapsed().as_secs_f64()));
    progress(&format!("cluster {name}: CA rotated ({new_ca})"));
    Ok(ClusterRotation {
        cluster: name,
        context: x.context.clone(),
        resumed_from,
        old_ca,
        new_ca,
        importers: importers
            .iter()
            .map(|(n, c)| (n.clone(), c.context.clone()))
            .collect(),
        steps,
    })
}

fn phase_patch(phase: Phase) -> BTreeMap<String, Option<String>> {
    BTreeMap::from([(
        PHASE_ANNOTATION.to_string(),
        phase.annotation().map(str::to_string),
    )])
}

/// Makes `bundle` what `x` and its importers trust for `x`'s CA: the CA
/// Secret's `bundle.crt`, the TLS Secrets' `ca.crt`, the importers' entries'
/// `ca-cert`. With `finish`, the CA Secret's signing CA becomes `finish`
/// and the kept new CA keys are removed.
async fn set_trust(
    x: &Cluster,
    importers: &[(String, Cluster)],
    name: &str,
    bundle: &str,
    finish: Option<&CertificateAuthority>,
) -> anyhow::Result<()> {
    let mut ca = BTreeMap::from([("bundle.crt".to_string(), Some(bundle.to_string()))]);
    if let Some(new) = finish {
        ca.insert("ca.crt".into(), Some(new.cert_pem().to_string()));
        ca.insert("ca.key".into(), Some(new.key_pem()));
        ca.insert(NEW_CERT.into(), None);
        ca.insert(NEW_KEY.into(), None);
    }
    x.patch_secret(CA_SECRET, &ca, &BTreeMap::new()).await?;
    for tls in [APISERVER_TLS, NODE_AGENT_TLS] {
        if x.secret_texts(tls).await?.is_some() {
            x.patch_secret(
                tls,
                &BTreeMap::from([("ca.crt".to_string(), Some(bundle.to_string()))]),
                &BTreeMap::new(),
            )
            .await?;
        } else {
            progress(&format!(
                "context {}: no Secret {tls}; its certificate is managed elsewhere and must trust the bundle too",
                x.context
            ));
        }
    }
    for (_, r) in importers {
        update_entry(r, name, |e| e.ca_cert = bundle.to_string()).await?;
    }
    Ok(())
}

/// Reissues every certificate `x`'s CA signs, under `new`.
async fn reissue(
    x: &Cluster,
    importers: &[(String, Cluster)],
    name: &str,
    new: &CertificateAuthority,
    bundle: &str,
) -> anyhow::Result<()> {
    let year = Validity::days(365)?;
    for tls in [APISERVER_TLS, NODE_AGENT_TLS] {
        let Some((data, _)) = x.secret_texts(tls).await? else {
            continue;
        };
        let what = format!("Secret {}/{tls} tls.crt", x.namespace);
        let current = data
            .get("tls.crt")
            .with_context(|| format!("context {}: {what} is missing", x.context))?;
        let der = pem::parse_certs(current, &what)?.remove(0);
        // The same names and id under the new CA; a server certificate
        // from before SPIFFE server ids gets this cluster's.
        let issued = new.reissue(
            &der,
            &format!("context {}: {what}", x.context),
            Some(&mesh_api::ClusterName::new(name)?),
            year,
        )?;
        x.patch_secret(
            tls,
            &BTreeMap::from([
                ("tls.crt".to_string(), Some(issued.cert_pem)),
                ("tls.key".to_string(), Some(issued.key_pem)),
                ("ca.crt".to_string(), Some(bundle.to_string())),
            ]),
            &BTreeMap::new(),
        )
        .await?;
    }
    for (importer, r) in importers {
        let id = SpiffeId::cluster(
            new.trust_domain().clone(),
            mesh_api::ClusterName::new(importer.clone())?,
        );
        let cert = new.issue_client(&id, year)?;
        update_entry(r, name, |e| {
            e.client_cert = cert.cert_pem.clone();
            e.client_key = cert.key_pem.clone();
        })
        .await?;
    }
    Ok(())
}

/// Changes `r`'s entry for cluster `name` in place.
async fn update_entry(
    r: &Cluster,
    name: &str,
    change: impl FnOnce(&mut mesh_api::clustermesh::RemoteClusterConfig),
) -> anyhow::Result<()> {
    let mut entry = r
        .remotes()
        .await?
        .remove(name)
        .with_context(|| {
            format!(
                "context {}: its entry for {name} disappeared during the rotation (disconnected?)",
                r.context
            )
        })?
        .map_err(|e| anyhow::anyhow!("context {}: entry for {name}: {e}", r.context))?;
    change(&mut entry);
    r.patch_remotes(&BTreeMap::from([(name.to_string(), Some(entry))]))
        .await
}

/// Waiting after a step.
struct Wait<'a> {
    x: &'a Cluster,
    name: &'a str,
    importers: &'a [(String, Cluster)],
    args: &'a RotateArgs,
}

impl Wait<'_> {
    /// Waits `--reload-wait` for the Secrets to reach the processes' files
    /// and be reloaded, then until every importer reports `x` connected and
    /// synced and `x` reports each of them the same.
    async fn reloaded(&self, step: &str) -> anyhow::Result<()> {
        progress(&format!(
            "{step}: waiting {:?} for mounted Secrets to be updated and reloaded (--reload-wait)",
            self.args.reload_wait
        ));
        tokio::time::sleep(self.args.reload_wait).await;
        let mut pairs: Vec<(&Cluster, String)> = self
            .importers
            .iter()
            .map(|(_, r)| (r, self.name.to_string()))
            .collect();
        for remote in self.x.remotes().await?.into_keys() {
            pairs.push((self.x, remote));
        }
        wait_until(self.args.timeout, &pairs, |st, r| st.is_synced_with(r))
            .await
            .with_context(|| format!("{step} of the rotation of {}'s CA: the mesh did not report connected and synced; fix that and run the same command again to resume", self.name))
    }
}

#[cfg(test)]
mod tests;
