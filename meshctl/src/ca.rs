//! `meshctl ca`: the mesh CA on disk — create, issue, inspect, rotate.
//!
//! A CA directory holds `ca.crt`, `ca.key` (mode 0600) and `bundle.crt`
//! (what peers trust). Rotation is two steps so no peer is ever refused:
//! `rotate` makes a new signing CA and a bundle that trusts both; reissue
//! and distribute certificates; `rotate --finish` drops the old CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mesh_api::{ClusterName, NodeName};
use mesh_certs::{
    CaDirectory, CertInfo, IssuedCert, RotationState, SpiffeId, TrustDomain, Validity, inspect, pem,
};
use serde::Serialize;

use crate::output::{self, OutputFormat};

/// `meshctl ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new mesh CA in an empty directory.
    ///
    /// Example: meshctl ca create --ca-dir ./mesh-ca --trust-domain prod.example
    Create {
        #[command(flatten)]
        dir: CaDirArg,
        /// The trust domain every SPIFFE id of this mesh carries.
        #[arg(long, default_value = TrustDomain::DEFAULT)]
        trust_domain: String,
        /// Lifetime of the CA certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate signed by the mesh CA.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Show what certificates say: subject, SANs, SPIFFE id, validity,
    /// fingerprint; with --bundle, whether the bundle trusts them.
    ///
    /// Example: meshctl ca inspect c1.crt --bundle mesh-ca/bundle.crt
    Inspect {
        /// PEM files (each may hold several certificates).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A trust bundle to verify each certificate against.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Create, in the install namespace and only where missing, the CA,
    /// mesh-apiserver and node-agent certificate Secrets (what the chart's
    /// certgen Job runs; in-cluster credentials or KUBECONFIG).
    ///
    /// Example: meshctl ca certgen --namespace meshwork-system --cluster-name c1
    Certgen(crate::certgen::CertgenArgs),
    /// Rotate a mesh CA without refusing anyone.
    ///
    /// With --context (repeat for several clusters): rotates the CA of each
    /// running cluster (Secret meshwork-ca) and of everything that trusts it,
    /// in three steps, each waiting until the Secrets are reloaded and the
    /// mesh reports connected and synced: (1) trust old and new CA: the
    /// cluster's bundle, and the entry for it of every cluster that imports
    /// it (found among the kubeconfig's contexts); (2) reissue the
    /// mesh-apiserver and node-agent certificates and the importers' client
    /// certificates under the new CA; (3) drop the old CA. The phase reached
    /// is kept in the annotation meshwork.io/ca-rotation on Secret
    /// meshwork-ca: run the same command again to resume an interrupted
    /// rotation.
    ///
    /// With --ca-dir: a CA directory on disk; first a new signing CA and a
    /// bundle trusting old and new; after every certificate has been
    /// reissued, `--finish` drops the old CA.
    ///
    /// Examples:
    ///   meshctl ca rotate --context lab-c2
    ///   meshctl ca rotate --context lab-c1 --context lab-c2 --reload-wait 10s -o json
    ///   meshctl ca rotate --ca-dir ./mesh-ca && … && meshctl ca rotate --ca-dir ./mesh-ca --finish
    #[command(verbatim_doc_comment)]
    Rotate {
        /// Directory holding ca.crt, ca.key and bundle.crt (a CA on disk).
        #[arg(long, required_unless_present = "context", conflicts_with = "context")]
        ca_dir: Option<PathBuf>,
        /// Kube context of a cluster whose CA to rotate (repeat).
        #[arg(long)]
        context: Vec<String>,
        /// With --ca-dir: finish a rotation under way: trust only the new CA.
        #[arg(long, requires = "ca_dir")]
        finish: bool,
        /// Lifetime of the new CA certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// With --context: how long each step waits for updated Secrets to
        /// reach the mounted files and be reloaded (the kubelet can take a
        /// minute; mesh-apiserver and node-agents re-read every 5 s).
        #[arg(long, default_value = "90s", value_parser = crate::connect::parse_duration)]
        reload_wait: std::time::Duration,
        /// With --context: how long each step waits for the mesh to report
        /// every connection connected and synced.
        #[arg(long, default_value = "3m", value_parser = crate::connect::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `meshctl ca issue …`
#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A server certificate for a cluster's mesh-apiserver: DNS and IP SANs,
    /// and the cluster's id (spiffe://<trust-domain>/cluster/<name>), which
    /// clients check so that one cluster cannot answer for another.
    ///
    /// Example: meshctl ca issue server --ca-dir mesh-ca --out-dir certs --cluster c1 --name c1-apiserver --san mesh.c1.example --san 192.0.2.10
    Server {
        #[command(flatten)]
        common: IssueArgs,
        /// The cluster whose mesh-apiserver this is.
        #[arg(long)]
        cluster: String,
        /// File name (without extension) of the certificate and key.
        #[arg(long)]
        name: String,
        /// DNS names and IP addresses the server answers to (repeat).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
    },
    /// A client certificate for a cluster's mesh-apiserver
    /// (spiffe://<trust-domain>/cluster/<name>).
    ///
    /// Example: meshctl ca issue cluster --ca-dir mesh-ca --out-dir certs --cluster c2
    Cluster {
        #[command(flatten)]
        common: IssueArgs,
        /// The cluster's name (a DNS label of at most 32 characters).
        #[arg(long)]
        cluster: String,
    },
    /// A client certificate for a node-agent
    /// (spiffe://<trust-domain>/cluster/<name>/node/<node>).
    ///
    /// Example: meshctl ca issue node --ca-dir mesh-ca --out-dir certs --cluster c1 --node worker-1
    Node {
        #[command(flatten)]
        common: IssueArgs,
        /// The cluster's name.
        #[arg(long)]
        cluster: String,
        /// The node's name.
        #[arg(long)]
        node: String,
    },
}

/// The CA directory.
#[derive(Debug, Args)]
pub struct CaDirArg {
    /// Directory holding ca.crt, ca.key and bundle.crt.
    #[arg(long)]
    ca_dir: PathBuf,
}

/// Options every `issue` takes.
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    dir: CaDirArg,
    /// Where to write <name>.crt and <name>.key (key mode 0600).
    #[arg(long)]
    out_dir: PathBuf,
    /// Lifetime in days.
    #[arg(long, default_value_t = 365)]
    days: i64,
}

/// What `create` and `rotate` report.
#[derive(Debug, Serialize)]
struct CaReport {
    ca_dir: PathBuf,
    state: RotationState,
    signing_ca: CertInfo,
    trusted: Vec<CertInfo>,
    next_step: Option<&'static str>,
}

/// What `issue` reports.
#[derive(Debug, Serialize)]
struct IssueReport {
    cert_file: PathBuf,
    key_file: PathBuf,
    certificate: CertInfo,
}

/// One certificate of `inspect`.
#[derive(Debug, Serialize)]
struct InspectedCert {
    file: PathBuf,
    index: usize,
    #[serde(flatten)]
    info: CertInfo,
    /// With --bundle: "trusted", or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<String>,
}

/// Runs a `ca` command.
pub fn run(
    cmd: CaCommand,
    kube: &crate::kube::KubeArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Certgen(args) => crate::block_on(crate::certgen::certgen(args, format)),
        CaCommand::Create {
            dir,
            trust_domain,
            days,
        } => {
            let ca_dir = CaDirectory::new(&dir.ca_dir);
            ca_dir.create(TrustDomain::new(trust_domain)?, Validity::days(days)?)?;
            let report = ca_report(&ca_dir, None)?;
            output::emit(format, &report, print_ca_report)
        }
        CaCommand::Rotate {
            ca_dir: None,
            context,
            days,
            reload_wait,
            timeout,
            ..
        } => crate::block_on(crate::ca_rotate::rotate(
            kube,
            crate::ca_rotate::RotateArgs {
                contexts: context,
                days,
                reload_wait,
                timeout,
            },
            format,
        )),
        CaCommand::Rotate {
            ca_dir: Some(dir),
            finish,
            days,
            ..
        } => {
            let ca_dir = CaDirectory::new(&dir);
            let next = if finish {
                ca_dir.rotate_finish()?;
                None
            } else {
                ca_dir.rotate_start(Validity::days(days)?)?;
                Some(
                    "reissue every certificate from this CA and distribute the bundle, then run `meshctl ca rotate --finish`",
                )
            };
            let report = ca_report(&ca_dir, next)?;
            output::emit(format, &report, print_ca_report)
        }
        CaCommand::Issue(issue) => {
            let report = run_issue(issue)?;
            output::emit(format, &report, |r| {
                output::fields(&[
                    ("certificate", r.cert_file.display().to_string()),
                    ("key", r.key_file.display().to_string()),
                ]);
                print_cert(&r.certificate);
            })
        }
        CaCommand::Inspect { files, bundle } => {
            let bundle = bundle
                .map(|b| mesh_certs::TrustBundle::load(&b))
                .transpose()?;
            let mut out = Vec::new();
            for file in files {
                let text = pem::read_text(&file)?;
                let what = file.display().to_string();
                for (index, der) in pem::parse_certs(&text, &what)?.iter().enumerate() {
                    let info = inspect::inspect(der, &what)?;
                    let verification = bundle.as_ref().map(|b| {
                        match inspect::verify_signed_by(der, b.cas(), time_now()) {
                            Ok(()) => "trusted".to_string(),
                            Err(refusal) => format!("not trusted: {refusal}"),
                        }
                    });
                    out.push(InspectedCert {
                        file: file.clone(),
                        index,
                        info,
                        verification,
                    });
                }
            }
            let all_trusted = out
                .iter()
                .all(|c| c.verification.as_deref().is_none_or(|v| v == "trusted"));
            output::emit(format, &out, |certs| {
                for (i, c) in certs.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    output::fields(&[("file", format!("{} #{}", c.file.display(), c.index))]);
                    print_cert(&c.info);
                    if let Some(v) = &c.verification {
                        output::fields(&[("verification", v.clone())]);
                    }
                }
            })?;
            anyhow::ensure!(
                all_trusted,
                "some certificates are not trusted by the bundle"
            );
            Ok(())
        }
    }
}

/// What an `issue` asks for, once its names are validated.
enum Subject {
    Server(SpiffeId, Vec<String>),
    Client(SpiffeId),
}

fn run_issue(issue: IssueCommand) -> anyhow::Result<IssueReport> {
    let (common, name, cluster, node, sans) = match issue {
        IssueCommand::Server {
            common,
            cluster,
            name,
            sans,
        } => (common, name, Some(ClusterName::new(cluster)?), None, sans),
        IssueCommand::Cluster { common, cluster } => {
            let cluster = ClusterName::new(cluster)?;
            (common, cluster.to_string(), Some(cluster), None, vec![])
        }
        IssueCommand::Node {
            common,
            cluster,
            node,
        } => {
            let (cluster, node) = (ClusterName::new(cluster)?, NodeName::new(node)?);
            (
                common,
                format!("{cluster}-{node}"),
                Some(cluster),
                Some(node),
                vec![],
            )
        }
    };
    if let Some(why) = mesh_api::dns_subdomain_problem(&name) {
        anyhow::bail!("--name {name:?} is not usable as a file name: {why}");
    }
    let ca = CaDirectory::new(&common.dir.ca_dir).load()?;
    let td = ca.trust_domain().clone();
    let subject = match (cluster, node) {
        (Some(c), None) if !sans.is_empty() => Subject::Server(SpiffeId::cluster(td, c), sans),
        (Some(c), None) => Subject::Client(SpiffeId::cluster(td, c)),
        (Some(c), Some(n)) => Subject::Client(SpiffeId::node(td, c, n)),
        (None, _) => unreachable!("every issue command names its cluster"),
    };
    let validity = Validity::days(common.days)?;
    let cert: IssuedCert = match &subject {
        Subject::Server(id, sans) => ca.issue_cluster_server(id, sans, validity)?,
        Subject::Client(id) => ca.issue_client(id, validity)?,
    };
    std::fs::create_dir_all(&common.out_dir)
        .with_context(|| format!("create output directory {}", common.out_dir.display()))?;
    let (cert_file, key_file) = cert.save(&common.out_dir, &name)?;
    Ok(IssueReport {
        certificate: inspect::inspect(&cert.cert_der()?, &cert_file.display().to_string())?,
        cert_file,
        key_file,
    })
}

fn ca_report(dir: &CaDirectory, next_step: Option<&'static str>) -> anyhow::Result<CaReport> {
    let ca = dir.load()?;
    let bundle_path = dir.path().join(CaDirectory::BUNDLE);
    let trusted = dir
        .bundle()?
        .cas()
        .iter()
        .map(|c| inspect::inspect(c, &bundle_path.display().to_string()))
        .collect::<Result<_, _>>()?;
    Ok(CaReport {
        ca_dir: dir.path().to_path_buf(),
        state: dir.rotation_state()?,
        signing_ca: inspect::inspect(ca.cert(), &path_text(dir.path(), CaDirectory::CERT))?,
        trusted,
        next_step,
    })
}

fn path_text(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn print_ca_report(r: &CaReport) {
    output::fields(&[
        ("CA directory", r.ca_dir.display().to_string()),
        (
            "state",
            match r.state {
                RotationState::Stable => "stable (one CA trusted)".to_string(),
                RotationState::Overlap => "rotating (old and new CA trusted)".to_string(),
            },
        ),
    ]);
    println!("signing CA:");
    print_cert(&r.signing_ca);
    let rows: Vec<Vec<String>> = r
        .trusted
        .iter()
        .map(|c| {
            vec![
                c.sha256_fingerprint[..23].to_string(),
                c.not_after.clone(),
                c.expiry_text(),
            ]
        })
        .collect();
    println!("trusted CAs:");
    output::table(&["FINGERPRINT", "NOT AFTER", "EXPIRY"], &rows);
    if let Some(step) = r.next_step {
        println!("next: {step}");
    }
}

fn print_cert(c: &CertInfo) {
    let mut pairs = vec![
        ("subject", c.subject.clone()),
        ("issuer", c.issuer.clone()),
        (
            "valid",
            format!("{} to {} ({})", c.not_before, c.not_after, c.expiry_text()),
        ),
        ("sha256", c.sha256_fingerprint.clone()),
    ];
    if let Some(id) = &c.spiffe_id {
        pairs.push(("spiffe id", id.clone()));
    }
    let sans: Vec<String> = c
        .dns_names
        .iter()
        .cloned()
        .chain(c.ip_addresses.iter().map(ToString::to_string))
        .collect();
    if !sans.is_empty() {
        pairs.push(("names", sans.join(", ")));
    }
    if c.is_ca {
        pairs.push(("ca", "yes".to_string()));
    }
    output::fields(&pairs);
}
