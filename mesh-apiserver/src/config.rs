//! Flags. Their long names are stable and kebab-case: they are the keys of
//! the Helm chart's ConfigMap, which [`Config::from_map`] parses with the
//! same parser, so the chart and the code cannot drift.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use mesh_api::trust::Quotas;
use mesh_api::{ClusterId, ClusterName};

use crate::error::{Error, Result};
use crate::export::LocalCluster;
use crate::store::EtcdConnection;

pub mod etcd;

pub use etcd::{EtcdFlags, EtcdPlan, TlsPlan};

/// Which store backs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// etcd (replicas share it; leader election on).
    Etcd,
    /// In memory (a single replica).
    Memory,
}

/// mesh-apiserver: exports this cluster's mesh state to remote clusters and
/// node-agents over mutual TLS, and imports remote clusters' state.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "mesh-apiserver", version, args_override_self = true)]
pub struct Config {
    /// A mounted ConfigMap: one file per key, each key a flag of this
    /// command (the chart's mesh-apiserver-config). Flags on the command line
    /// override it.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,

    /// This cluster's name (DNS label, ≤32 characters).
    #[arg(long)]
    pub cluster_name: String,
    /// This cluster's id (1–255, unique in the mesh).
    #[arg(long)]
    pub cluster_id: i64,
    /// This cluster's pod CIDRs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub pod_cidrs: Vec<String>,
    /// The store.
    #[arg(long, value_enum, default_value = "memory")]
    pub store: StoreKind,
    /// etcd endpoints, comma-separated: all http://host:port (plaintext)
    /// or all https://host:port (TLS: needs --etcd-ca; --etcd-cert and
    /// --etcd-key for etcd's --client-cert-auth).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: Vec<String>,
    /// CA bundle (PEM) that etcd's server certificate must chain to; only
    /// it is trusted. Required with https:// endpoints. Read once at start:
    /// restart to use a changed file.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd; needs --etcd-key. Read
    /// once at start: restart to use a changed file.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM, not readable by others) of --etcd-cert. Read once
    /// at start: restart to use a changed file.
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// The name etcd's server certificate must carry, when it is not the
    /// endpoints' host (e.g. endpoints given as IP addresses).
    #[arg(long)]
    pub etcd_server_name: Option<String>,
    /// Changes the in-memory store keeps for resuming watchers.
    #[arg(long, default_value_t = 100_000)]
    pub memory_history: usize,
    /// Address of the Export gRPC server.
    #[arg(long, default_value = "0.0.0.0:32379")]
    pub grpc_listen: SocketAddr,
    /// Address of /healthz, /readyz, /metrics and /status.
    #[arg(long, default_value = "0.0.0.0:9963")]
    pub status_listen: SocketAddr,
    /// Server certificate (PEM).
    #[arg(long, default_value = "/etc/meshwork/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// Server key (PEM, mode 0600).
    #[arg(long, default_value = "/etc/meshwork/tls/tls.key")]
    pub tls_key: PathBuf,
    /// CA bundle trusted for client certificates (PEM).
    #[arg(long, default_value = "/etc/meshwork/tls/ca.crt")]
    pub tls_ca: PathBuf,
    /// Re-read --tls-cert, --tls-key and --tls-ca this often (seconds):
    /// changed files are used by new connections without a restart.
    #[arg(long, default_value_t = 5)]
    pub tls_reload_seconds: u64,
    /// This cluster's CA certificate (the meshwork-ca Secret's ca.crt). With
    /// --signing-ca-key, this mesh-apiserver renews certificates before they
    /// expire: its own server certificate and the node-agents' (Secrets
    /// meshwork-apiserver-tls and meshwork-node-agent-tls, or the --tls-*
    /// files without Kubernetes), and the client certificates remote
    /// clusters hold from this CA (they ask over the mesh's mTLS). Without
    /// them nothing is renewed here. Read at every renewal (a CA rotation
    /// swaps them).
    #[arg(long)]
    pub signing_ca_cert: Option<PathBuf>,
    /// This cluster's CA key (the meshwork-ca Secret's ca.key, mode 0600).
    #[arg(long)]
    pub signing_ca_key: Option<PathBuf>,
    /// Lifetime of the certificates renewed here, seconds (default 90
    /// days). A certificate is renewed once two thirds of its lifetime
    /// have passed.
    #[arg(long, default_value_t = 90 * 86_400)]
    pub cert_lifetime_seconds: u64,
    /// The mesh's SPIFFE trust domain.
    #[arg(long, default_value = "meshwork.local")]
    pub trust_domain: String,
    /// Read the remote clusters from this directory (one file per remote)
    /// instead of the Secret.
    #[arg(long)]
    pub clustermesh_config_dir: Option<PathBuf>,
    /// The Secret listing remote clusters (in --namespace).
    #[arg(long, default_value = "meshwork-clustermesh")]
    pub clustermesh_secret: String,
    /// The install namespace.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    /// Keep an unreachable remote's state this many seconds.
    #[arg(long, default_value_t = 600)]
    pub stale_timeout_seconds: u64,
    /// Longest wait between reconnections to a remote, seconds.
    #[arg(long, default_value_t = 10)]
    pub max_backoff_seconds: u64,
    /// Nameservers (`ip` or `ip:port`, comma-separated) that resolve remote
    /// endpoints given as DNS names; empty: the system's resolver
    /// configuration (`/etc/resolv.conf`).
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub dns_nameservers: Vec<String>,
    /// Elect a leader among replicas (etcd store only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Lease TTL of the leader, seconds (a dead leader is replaced within it).
    #[arg(long, default_value_t = 5)]
    pub leader_lease_ttl_seconds: i64,
    /// This replica's name (default: the host name).
    #[arg(long, default_value = "")]
    pub replica_name: String,
    /// Honour Cilium's global-service annotations too.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub compat_cilium_annotations: bool,
    /// Watch the local Kubernetes API (Nodes, Pods, Services, EndpointSlices).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub kubernetes: bool,
    /// LB-IPAM pools, `NAME=CIDR[,CIDR...]` separated by `;` (chart
    /// `lbIPAM.pools`): LoadBalancer Services get their address from
    /// them. Empty: no LB-IPAM (a cloud load balancer, or none).
    #[arg(long, value_delimiter = ';')]
    pub lb_ipam_pools: Vec<String>,
    /// Free an unused identity after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub identity_gc_grace_seconds: u64,
    /// Most nodes one remote cluster may have cached (0: no limit). Past a
    /// quota, the remote is marked degraded and what is over is not cached.
    #[arg(long, default_value_t = Quotas::default().nodes)]
    pub remote_max_nodes: usize,
    /// Most identities one remote may have cached (0: no limit).
    #[arg(long, default_value_t = Quotas::default().identities)]
    pub remote_max_identities: usize,
    /// Most endpoints one remote may have cached (0: no limit).
    #[arg(long, default_value_t = Quotas::default().endpoints)]
    pub remote_max_endpoints: usize,
    /// Most global services one remote may have cached (0: no limit).
    #[arg(long, default_value_t = Quotas::default().services)]
    pub remote_max_services: usize,
    /// Most bytes (encoded records) one remote may have cached (0: no limit).
    #[arg(long, default_value_t = Quotas::default().bytes)]
    pub remote_max_bytes: usize,
    /// Most labels on one imported identity (0: no limit).
    #[arg(long, default_value_t = Quotas::default().labels_per_identity)]
    pub remote_max_labels_per_identity: usize,
}

impl Config {
    /// Parses a key → value map (the chart's ConfigMap): each key is a flag
    /// name without `--`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Config> {
        let args = std::iter::once("mesh-apiserver".to_string())
            .chain(map.iter().map(|(k, v)| format!("--{k}={v}")));
        Config::try_parse_from(args).map_err(|e| Error::Config {
            key: "configmap".into(),
            value: String::new(),
            reason: e.to_string(),
        })
    }

    /// Every flag name (= ConfigMap key), for the chart's tests.
    pub fn keys() -> Vec<String> {
        use clap::CommandFactory;
        Config::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|k| k != "help" && k != "version")
            .collect()
    }

    /// The signer of `--signing-ca-cert`/`--signing-ca-key`, if both are set.
    pub fn signer(&self) -> Result<Option<crate::renew::Signer>> {
        let bad = |key: &str, value: String, reason: &str| Error::Config {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        mesh_certs::Validity::lasting(std::time::Duration::from_secs(self.cert_lifetime_seconds))
            .map_err(|e| {
            bad(
                "cert-lifetime-seconds",
                self.cert_lifetime_seconds.to_string(),
                &e.to_string(),
            )
        })?;
        match (&self.signing_ca_cert, &self.signing_ca_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(crate::renew::Signer {
                cert: cert.clone(),
                key: key.clone(),
                lifetime: std::time::Duration::from_secs(self.cert_lifetime_seconds),
            })),
            (Some(p), None) | (None, Some(p)) => Err(bad(
                "signing-ca-cert",
                p.display().to_string(),
                "--signing-ca-cert and --signing-ca-key go together: set both (renewal on) or neither (off)",
            )),
        }
    }

    /// The per-remote quotas (`--remote-max-*`).
    pub fn quotas(&self) -> Quotas {
        Quotas {
            nodes: self.remote_max_nodes,
            identities: self.remote_max_identities,
            endpoints: self.remote_max_endpoints,
            services: self.remote_max_services,
            bytes: self.remote_max_bytes,
            labels_per_identity: self.remote_max_labels_per_identity,
        }
    }

    /// The `--etcd-*` flags, checked against each other (reads no file).
    pub fn etcd_plan(&self) -> Result<EtcdPlan> {
        EtcdFlags {
            endpoints: self.etcd_endpoints.clone(),
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            server_name: self.etcd_server_name.clone(),
        }
        .plan()
    }

    /// How to reach etcd: the checked flags with their files read and
    /// parsed. `main` connects with it; errors name the flag and the path.
    pub fn etcd(&self) -> Result<EtcdConnection> {
        self.etcd_plan()?.load()
    }

    /// The `--lb-ipam-pools`, parsed and checked (no name twice, no
    /// overlap).
    pub fn lb_ipam_pools(&self) -> Result<Vec<crate::lb_ipam::Pool>> {
        let bad = |reason: String| Error::Config {
            key: "lb-ipam-pools".into(),
            value: self.lb_ipam_pools.join(";"),
            reason,
        };
        let pools = self
            .lb_ipam_pools
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(crate::lb_ipam::Pool::parse)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        crate::lb_ipam::check_pools(&pools).map_err(bad)?;
        Ok(pools)
    }

    /// The `--dns-nameservers` as socket addresses (port 53 when omitted).
    pub fn nameservers(&self) -> Result<Vec<SocketAddr>> {
        self.dns_nameservers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| Error::Config {
                        key: "dns-nameservers".into(),
                        value: s.to_string(),
                        reason:
                            "expected an IP address or ip:port (e.g. 10.96.0.10 or 127.0.0.1:5353)"
                                .into(),
                    })
            })
            .collect()
    }

    /// Validates the values and returns this cluster's facts.
    pub fn local(&self) -> Result<LocalCluster> {
        let name = ClusterName::new(self.cluster_name.clone()).map_err(|e| Error::Config {
            key: "cluster-name".into(),
            value: self.cluster_name.clone(),
            reason: e.to_string(),
        })?;
        let id = ClusterId::new(self.cluster_id).map_err(|e| Error::Config {
            key: "cluster-id".into(),
            value: self.cluster_id.to_string(),
            reason: e.to_string(),
        })?;
        let pod_cidrs = self
            .pod_cidrs
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                mesh_api::cidr::parse_cidr("pod-cidrs", c).map_err(|e| Error::Config {
                    key: "pod-cidrs".into(),
                    value: c.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<IpNet>>>()?;
        self.nameservers()?;
        if self.store == StoreKind::Etcd {
            self.etcd_plan()?;
        }
        if self.leader_lease_ttl_seconds < 2 {
            return Err(Error::Config {
                key: "leader-lease-ttl-seconds".into(),
                value: self.leader_lease_ttl_seconds.to_string(),
                reason: "must be at least 2".into(),
            });
        }
        if self.kubernetes && pod_cidrs.is_empty() {
            return Err(Error::Config {
                key: "pod-cidrs".into(),
                value: String::new(),
                reason: "required with --kubernetes=true: only Nodes whose pod CIDRs lie inside the cluster's are exported, so without them no Node would be (the chart sets it from ipam.podCIDR)".into(),
            });
        }
        Ok(LocalCluster {
            name,
            id,
            pod_cidrs,
        })
    }
}

#[cfg(test)]
mod tests;
