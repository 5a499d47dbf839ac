//! The crate's one error type.

use std::path::PathBuf;

use ipnet::IpNet;

/// Everything that can go wrong in the agent and the CNI plugin. Each variant
/// names what it was about (flag, file, interface, container) and, where a
/// person can act, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that is not allowed.
    #[error("--{flag}: {reason}")]
    Config {
        /// The flag (= ConfigMap key) at fault.
        flag: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The mounted ConfigMap directory cannot be read.
    #[error(transparent)]
    ConfigDir {
        /// What is wrong with it.
        #[from]
        source: mesh_config::Error,
    },
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "read", ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A persisted state file that does not parse.
    #[error("state file {} is corrupt: {source}; move it away to let the agent start", path.display())]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {op} {target}: {source}")]
    Netlink {
        /// The operation ("create veth", "add route", ...).
        op: &'static str,
        /// What it was about.
        target: String,
        /// The netlink error (the kernel's errno).
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that should exist (just created) is missing.
    #[error("interface {name} is missing in {netns}")]
    LinkMissing {
        /// The interface.
        name: String,
        /// The namespace it was looked up in.
        netns: String,
    },
    /// No address left in the node's pod CIDR.
    #[error(
        "pod CIDR {cidr} is exhausted ({allocated} addresses allocated, none free): delete unused pods, or give the node a larger pod CIDR (--pod-cidr / the Node's spec.podCIDR); stale allocations are files under {}",
        dir.display()
    )]
    PodCidrExhausted {
        /// The CIDR.
        cidr: IpNet,
        /// How many addresses are allocated.
        allocated: usize,
        /// The IPAM state directory.
        dir: PathBuf,
    },
    /// A request to the node-agent's local API failed (mesh-cni).
    #[error(transparent)]
    Agent(#[from] mesh_agent_api::Error),
    /// A CNI version this plugin does not speak.
    #[error("CNI version {version:?} is not supported; supported versions: {supported}")]
    CniIncompatibleVersion {
        /// The requested version.
        version: String,
        /// The versions we support.
        supported: String,
    },
    /// A CNI environment variable is missing or invalid.
    #[error("environment variable {var}: {reason}")]
    CniInvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The network configuration on stdin is not JSON of the expected shape.
    #[error("cannot decode the network configuration on stdin: {source}")]
    CniDecode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The network configuration is valid JSON but a field is wrong.
    #[error("network configuration field {field:?}: {reason}")]
    CniInvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// CHECK found the container's networking differs from what ADD set up.
    #[error("CHECK of container {container_id} ({ifname}): {reason}")]
    CniCheckFailed {
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
        /// What differs.
        reason: String,
    },
    /// An endpoint registration that cannot be accepted.
    #[error("endpoint {container_id}/{ifname}: {reason}")]
    InvalidEndpoint {
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// No free endpoint id (65535 endpoints on one node).
    #[error("no free endpoint id: {count} endpoints are registered on this node")]
    EndpointIdsExhausted {
        /// How many endpoints exist.
        count: usize,
    },
    /// The datapath refused an update.
    #[error("datapath {op} {target}: {source}")]
    Datapath {
        /// The operation ("upsert endpoint", ...).
        op: &'static str,
        /// What it was about.
        target: String,
        /// The implementation's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The WireGuard device or key store failed.
    #[error("wireguard {what}: {source}")]
    Wireguard {
        /// What it was about (device, key file).
        what: String,
        /// The mesh-wireguard error.
        #[source]
        source: Box<mesh_wireguard::Error>,
    },
    /// The WireGuard device is shut down (the agent is stopping).
    #[error(
        "wireguard device {ifname} is shut down (the agent is stopping); retry once it is back"
    )]
    DeviceStopped {
        /// The device's interface.
        ifname: String,
    },
    /// A Kubernetes request failed.
    #[error("kubernetes: {what}: {source}")]
    Kube {
        /// What was being done ("read Node n1", "patch Node n1", ...).
        what: String,
        /// The kube-rs error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The mesh-apiserver feed failed (connect, watch, TLS material).
    #[error("mesh-apiserver {endpoint}: {source}")]
    MeshFeed {
        /// The address.
        endpoint: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A listener could not be set up.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address or socket path.
        address: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `what` on `path`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
