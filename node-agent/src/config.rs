//! The agent's configuration: command-line flags whose names (without `--`)
//! are the keys of the Helm chart's ConfigMap.
//!
//! The chart mounts its ConfigMap as a directory (`--config-dir`), one file
//! per key, as Cilium does. [`AgentConfig::parse_with_map`] turns those
//! key/value pairs into `--key=value` arguments and feeds them, followed by
//! the real command line, to the same clap parser: a key the parser does not
//! know is an error, so the chart and the code cannot drift. Flags given on
//! the command line override the ConfigMap.
//!
//! | Helm value | ConfigMap key / flag | default |
//! | --- | --- | --- |
//! | `cluster.name` | `cluster-name` | (required) |
//! | `cluster.id` | `cluster-id` | (required, 1-255) |
//! | (downward API `spec.nodeName`, env `NODE_NAME`) | `node-name` | (required) |
//! | `ipam.podCIDR` (else the Node's `spec.podCIDR`) | `pod-cidr` | none |
//! | `bpf.root` | `bpf-root` | `/sys/fs/bpf/meshwork` |
//! | `stateDir` | `state-dir` | `/var/lib/meshwork` |
//! | `cgroup.root` | `cgroup-root` | `/run/meshwork/cgroupv2` |
//! | `agent.socketPath` | `agent-socket` | `/var/run/meshwork/agent.sock` |
//! | `kubeProxyReplacement` | `kube-proxy-replacement` | `true` |
//! | `allowLocalhost` | `allow-localhost` | `always` (or `policy`) |
//! | `policyAuditMode` | `policy-audit-mode` | `false` |
//! | `bpf.masquerade` | `enable-bpf-masquerade` | `true` |
//! | `ipMasqAgent.config.nonMasqueradeCIDRs` | `non-masquerade-cidrs` | none |
//! | `mtu` | `mtu` | `0` (derive from the node interface) |
//! | `loadBalancer.algorithm` | `lb-algorithm` | `random` (or `maglev`) |
//! | `maglev.hashSeed` | `bpf-lb-maglev-hash-seed` | `meshwork` |
//! | `encryption.enabled` | `enable-encryption` | `false` |
//! | `encryption.type` | `encryption-type` | `wireguard` |
//! | `encryption.nodeEncryption` | `node-encryption` | `false` |
//! | `encryption.nodeEncryptionExcludeCIDRs` | `node-encryption-exclude-cidrs` | none |
//! | `encryption.strictMode.enabled` | `encryption-strict-mode` | `false` |
//! | `encryption.wireguard.interface` | `wireguard-interface` | `mesh-wg0` |
//! | `encryption.wireguard.port` | `wireguard-port` | `51871` |
//! | `encryption.wireguard.persistentKeepalive` | `wireguard-persistent-keepalive` | `0` (seconds, off) |
//! | (image) | `wireguard-device-program` | `mesh-wg` beside `node-agent` |
//! | (`false` when the chart runs the `wireguard` container) | `wireguard-device-start` | `true` |
//! | `clustermesh.apiserver.address` | `mesh-apiserver-address` | none |
//! | `clustermesh.apiserver.tls.client.cert` | `mesh-client-cert` | none |
//! | `clustermesh.apiserver.tls.client.key` | `mesh-client-key` | none |
//! | `clustermesh.apiserver.tls.ca` | `mesh-client-ca` | none |
//! | `compat.ciliumAnnotations` | `compat-cilium-annotations` | `false` |
//! | `compat.ciliumPolicies` | `compat-cilium-policies` | `false` |
//! | `metrics.address` | `metrics-address` | `127.0.0.1:9962` |
//! | `logFormat` | `log-format` | `text` (or `json`) |
//!
//! `config-dir` itself is a command-line-only flag. The `encryption.*`
//! keys (see [`EncryptionSettings`]) are re-read while the agent runs, as
//! the kubelet updates the mounted ConfigMap; every other key is read at
//! start-up only.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};
use ipnet::IpNet;
use mesh_api::{ClusterId, ClusterName, NodeName};

use crate::error::{Error, Result};

/// Backend selection of the service load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbAlgorithm {
    /// A random backend per connection.
    Random,
    /// Maglev consistent hashing (table size 16381).
    Maglev,
}

/// Transparent encryption engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionType {
    /// WireGuard (userspace boringtun device).
    Wireguard,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The node-agent's configuration. Field docs are the `--help` text; flag
/// names are the ConfigMap keys (see the module docs for the Helm values).
#[derive(Debug, Clone, PartialEq, Parser, serde::Serialize)]
#[command(
    name = "node-agent",
    version,
    about = "Meshwork node-agent",
    args_override_self = true
)]
pub struct AgentConfig {
    /// A directory holding one file per key (the mounted ConfigMap); its
    /// values are read before the command line, which overrides them.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,

    /// This cluster's name (DNS label, at most 32 characters).
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster_name: ClusterName,

    /// This cluster's id, unique in the mesh (1-255).
    #[arg(long, value_parser = parse_cluster_id)]
    pub cluster_id: ClusterId,

    /// This node's name (the Kubernetes Node).
    #[arg(long, env = "NODE_NAME", value_parser = parse_node_name)]
    pub node_name: NodeName,

    /// The node's pod CIDR; when absent it is read from the Node object.
    #[arg(long, value_parser = parse_pod_cidr)]
    pub pod_cidr: Option<IpNet>,

    /// bpffs directory under which maps are pinned (distinct per agent when
    /// several share a host).
    #[arg(long, default_value = "/sys/fs/bpf/meshwork")]
    pub bpf_root: PathBuf,

    /// State directory: IPAM allocations, endpoints, keys.
    #[arg(long, default_value = "/var/lib/meshwork")]
    pub state_dir: PathBuf,

    /// cgroup v2 directory the socket load balancer attaches to (at the
    /// hierarchy's root it sees every pod). When it is an empty directory the
    /// agent mounts the host's cgroup v2 there, as the chart's init container does.
    #[arg(long, default_value = "/run/meshwork/cgroupv2")]
    pub cgroup_root: PathBuf,

    /// Unix socket of the local API (used by mesh-cni and meshctl).
    #[arg(long, default_value = "/var/run/meshwork/agent.sock")]
    pub agent_socket: PathBuf,

    /// Replace kube-proxy: serve ClusterIP and NodePort services in eBPF.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub kube_proxy_replacement: bool,

    /// The node's own traffic (kubelet probes) to its pods: `always`
    /// admitted whatever their policies, or only where a `policy` admits
    /// the `host` entity (Cilium's `allow-localhost`).
    #[arg(long, default_value = "always", value_parser = ["always", "policy"])]
    pub allow_localhost: String,

    /// Audit the host firewall: what host policies (a
    /// MeshClusterwideNetworkPolicy with `nodeSelector`) would drop is
    /// reported as a flow with verdict `audit` and passes, so a policy can
    /// be tried without locking the node out. (Pod policies are always
    /// enforced in this version.)
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub policy_audit_mode: bool,

    /// Masquerade in eBPF: pod traffic to destinations outside the cluster
    /// network (not in any known pod CIDR, not a node, not in
    /// --non-masquerade-cidrs) leaves with the node's address (Cilium's
    /// `enable-bpf-masquerade`; here on by default, as there is no
    /// iptables masquerade to fall back to). Ports come from above the
    /// node's ephemeral range.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_bpf_masquerade: bool,

    /// Destinations pods reach with their own address besides the pod
    /// CIDRs and node addresses the agent knows (comma-separated IPv4
    /// CIDRs; ip-masq-agent's nonMasqueradeCIDRs): a routed underlay
    /// that knows pod addresses, a peered VPC.
    #[arg(long, value_delimiter = ',')]
    pub non_masquerade_cidrs: Vec<ipnet::Ipv4Net>,

    /// The pods' MTU (0: derived from the node interface's MTU, less the
    /// WireGuard overhead when encryption is on at start-up). The
    /// WireGuard device always gets the node interface's less the
    /// overhead.
    #[arg(long, default_value_t = 0)]
    pub mtu: u32,

    /// Backend selection for services.
    #[arg(long, value_enum, default_value_t = LbAlgorithm::Random)]
    pub lb_algorithm: LbAlgorithm,

    /// The seed of the flow hash Maglev indexes with (any string). Every
    /// node of a cluster, and of the clusters sharing global services,
    /// must have the same one to pick the same backend for the same flow;
    /// change it from the default so outsiders cannot predict choices.
    #[arg(long, default_value = "meshwork")]
    pub bpf_lb_maglev_hash_seed: String,

    /// Encrypt pod traffic between nodes.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_encryption: bool,

    /// Encryption engine.
    #[arg(long, value_enum, default_value_t = EncryptionType::Wireguard)]
    pub encryption_type: EncryptionType,

    /// Also encrypt node-to-node traffic (AllowedIPs include node IPs).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub node_encryption: bool,

    /// Node addresses node encryption leaves in clear (comma-separated
    /// CIDRs): the API server's, so the agent reaches it whatever the
    /// tunnel's state (Cilium opts control-plane nodes out the same way).
    #[arg(long, value_delimiter = ',')]
    pub node_encryption_exclude_cidrs: Vec<ipnet::Ipv4Net>,

    /// Drop pod traffic to remote nodes that would leave unencrypted.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub encryption_strict_mode: bool,

    /// Name of the WireGuard interface (distinct per agent on a shared host).
    #[arg(long, default_value = "mesh-wg0")]
    pub wireguard_interface: String,

    /// UDP port of the WireGuard device.
    #[arg(long, default_value_t = 51871)]
    pub wireguard_port: u16,

    /// Persistent keepalive towards peers, in seconds (0: off).
    #[arg(long, default_value_t = 0)]
    pub wireguard_persistent_keepalive: u16,

    /// The WireGuard device program, started when no device answers on the
    /// interface's UAPI socket (default: `mesh-wg` beside this executable).
    /// The device runs in its own process so it outlives the agent.
    #[arg(long)]
    pub wireguard_device_program: Option<PathBuf>,

    /// Start the device program when no device answers on the UAPI socket.
    /// False when the device runs in a container of its own (the chart's
    /// `wireguard` container, which an agent container restart leaves up):
    /// the agent then only attaches to it.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wireguard_device_start: bool,

    /// Address (host:port) of this cluster's mesh-apiserver.
    #[arg(long)]
    pub mesh_apiserver_address: Option<String>,

    /// Client certificate (PEM) for the mesh-apiserver.
    #[arg(long)]
    pub mesh_client_cert: Option<PathBuf>,

    /// Client key (PEM) for the mesh-apiserver.
    #[arg(long)]
    pub mesh_client_key: Option<PathBuf>,

    /// CA bundle (PEM) that signs the mesh-apiserver's certificate.
    #[arg(long)]
    pub mesh_client_ca: Option<PathBuf>,

    /// Also honour Cilium's service annotations (service.cilium.io/*).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub compat_cilium_annotations: bool,

    /// Also enforce Cilium's policies (CiliumNetworkPolicy and
    /// CiliumClusterwideNetworkPolicy, `cilium.io/v2`) as written; their
    /// CRDs must be installed (the chart does with `compat.ciliumPolicies`).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub compat_cilium_policies: bool,

    /// Address of the Prometheus /metrics listener (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9962")]
    pub metrics_address: SocketAddr,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn parse_cluster_name(s: &str) -> std::result::Result<ClusterName, String> {
    ClusterName::new(s).map_err(|e| e.to_string())
}

fn parse_cluster_id(s: &str) -> std::result::Result<ClusterId, String> {
    s.parse::<ClusterId>().map_err(|e| e.to_string())
}

fn parse_node_name(s: &str) -> std::result::Result<NodeName, String> {
    NodeName::new(s).map_err(|e| e.to_string())
}

fn parse_pod_cidr(s: &str) -> std::result::Result<IpNet, String> {
    let net = mesh_api::cidr::parse_cidr("pod CIDR", s).map_err(|e| e.to_string())?;
    match net {
        IpNet::V4(v4) if v4.prefix_len() <= 30 => Ok(net),
        IpNet::V4(_) => Err(format!(
            "{net} has no room for pods: use a prefix of /30 or shorter (e.g. /24)"
        )),
        IpNet::V6(_) => Err(format!("{net}: only IPv4 pod CIDRs are supported")),
    }
}

impl AgentConfig {
    /// Parses `key → value` pairs (ConfigMap keys) and then `args` (a full
    /// command line, program name first), with the same parser; then
    /// validates. Command-line values override the map.
    pub fn parse_with_map<I, T>(
        map: &BTreeMap<String, String>,
        args: I,
    ) -> Result<AgentConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let full = mesh_config::merge(map, args).map_err(|_| {
            ConfigError::Invalid(Error::Config {
                flag: "config-dir",
                reason: "cannot be set from the config directory itself".into(),
            })
        })?;
        let config = AgentConfig::try_parse_from(full).map_err(ConfigError::Clap)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Parses a process's command line: when it names `--config-dir`, that
    /// directory's keys are read first. Validates.
    pub fn from_args<I, T>(args: I) -> Result<AgentConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let map = match mesh_config::config_dir_arg(&args) {
            Some(dir) => mesh_config::read_config_dir(&dir)
                .map_err(|source| ConfigError::Invalid(Error::ConfigDir { source }))?,
            None => BTreeMap::new(),
        };
        AgentConfig::parse_with_map(&map, args)
    }

    /// Checks what clap's per-flag parsers cannot: combinations.
    pub fn validate(&self) -> Result<()> {
        if self.mtu != 0 && !(576..=65535).contains(&self.mtu) {
            return Err(Error::Config {
                flag: "mtu",
                reason: format!(
                    "{} is out of range: use 576-65535, or 0 to derive it from the node interface",
                    self.mtu
                ),
            });
        }
        if self.wireguard_port == 0 {
            return Err(Error::Config {
                flag: "wireguard-port",
                reason: "0 is not a usable UDP port: use 1-65535 (default 51871)".into(),
            });
        }
        if mesh_api::dns_label_problem(&self.wireguard_interface, 15).is_some() {
            return Err(Error::Config {
                flag: "wireguard-interface",
                reason: format!(
                    "{:?} is not a usable interface name: 1-15 characters of a-z, 0-9 and '-'",
                    self.wireguard_interface
                ),
            });
        }
        if !self.enable_encryption {
            if self.node_encryption {
                return Err(Error::Config {
                    flag: "node-encryption",
                    reason: "needs --enable-encryption=true (encryption.enabled in the chart)"
                        .into(),
                });
            }
            if self.encryption_strict_mode {
                return Err(Error::Config {
                    flag: "encryption-strict-mode",
                    reason: "needs --enable-encryption=true (encryption.enabled in the chart)"
                        .into(),
                });
            }
        }
        let tls = [
            ("mesh-client-cert", &self.mesh_client_cert),
            ("mesh-client-key", &self.mesh_client_key),
            ("mesh-client-ca", &self.mesh_client_ca),
        ];
        let given = tls.iter().filter(|(_, v)| v.is_some()).count();
        if given != 0 && given != tls.len() {
            let missing = tls
                .iter()
                .find(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .unwrap_or("");
            return Err(Error::Config {
                flag: missing,
                reason: "mesh-client-cert, mesh-client-key and mesh-client-ca go together: give all three or none".into(),
            });
        }
        if given != 0 && self.mesh_apiserver_address.is_none() {
            return Err(Error::Config {
                flag: "mesh-apiserver-address",
                reason: "client certificates are set but no mesh-apiserver address: set host:port"
                    .into(),
            });
        }
        if let Some(addr) = &self.mesh_apiserver_address {
            let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !ok {
                return Err(Error::Config {
                    flag: "mesh-apiserver-address",
                    reason: format!(
                        "{addr:?} is not host:port (e.g. mesh-apiserver.kube-system.svc:2379)"
                    ),
                });
            }
        }
        if self.agent_socket.as_os_str().is_empty() || self.state_dir.as_os_str().is_empty() {
            return Err(Error::Config {
                flag: if self.state_dir.as_os_str().is_empty() {
                    "state-dir"
                } else {
                    "agent-socket"
                },
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// The part of the configuration the agent applies while running: the
/// node controller converges the WireGuard device, peers, routes and strict
/// mode to it when the config directory changes (see [`crate::config_watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionSettings {
    /// `enable-encryption`.
    pub enabled: bool,
    /// `encryption-strict-mode`.
    pub strict_mode: bool,
    /// `node-encryption`.
    pub node_encryption: bool,
    /// `wireguard-persistent-keepalive`.
    pub persistent_keepalive: u16,
    /// `node-encryption-exclude-cidrs`.
    pub node_encryption_exclude: Vec<ipnet::Ipv4Net>,
}

impl AgentConfig {
    /// The runtime-applied encryption settings.
    pub fn encryption_settings(&self) -> EncryptionSettings {
        EncryptionSettings {
            enabled: self.enable_encryption,
            strict_mode: self.encryption_strict_mode,
            node_encryption: self.node_encryption,
            persistent_keepalive: self.wireguard_persistent_keepalive,
            node_encryption_exclude: self.node_encryption_exclude_cidrs.clone(),
        }
    }
}

/// Why a configuration was refused: a flag clap could not parse (unknown key,
/// bad value; its message names the flag and the allowed values), or a
/// combination [`AgentConfig::validate`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Refused by the parser.
    #[error(transparent)]
    Clap(clap::Error),
    /// Refused by validation.
    #[error(transparent)]
    Invalid(Error),
}

#[cfg(test)]
mod tests;
