//! The crate's one error type.

use std::path::PathBuf;

/// Errors of loading, attaching and driving the datapath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pin root is not on a bpffs mount, so maps could not survive a restart.
    #[error(
        "pin root {path} is not on a bpf filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or choose a directory under it"
    )]
    NotBpffs {
        /// The configured pin root.
        path: PathBuf,
    },
    /// Mounting a missing bpffs or cgroup v2 failed (usually: not root, or
    /// no CAP_SYS_ADMIN).
    #[error(
        "cannot mount {fs} at {path}: {source}; run node-agent as root (it needs CAP_SYS_ADMIN), or mount it before starting: `{command} {path}`"
    )]
    Mount {
        /// The filesystem ("bpffs" or "cgroup2").
        fs: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The command a person would run instead.
        command: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem would have to be mounted over a directory with contents.
    #[error(
        "{path} is not on {fs} and is not empty: mounting {fs} there would hide what it holds; choose an empty directory, or mount {fs} there yourself"
    )]
    WouldHide {
        /// The filesystem ("bpffs" or "cgroup2").
        fs: &'static str,
        /// The directory.
        path: PathBuf,
    },
    /// cgroup v2 is missing and this process is in a private cgroup namespace.
    #[error(
        "cgroup root {path} is not a cgroup v2 mount, and this process runs in a private cgroup namespace (a container): a cgroup v2 mounted from here would be this container's own subtree, where no other pod runs, so the socket LB would see no traffic; mount the host's cgroup v2 at {path} first from the host's cgroup namespace (the chart's init container runs `nsenter --cgroup=/hostproc/1/ns/cgroup mount -t cgroup2 none {path}`)"
    )]
    PrivateCgroupNamespace {
        /// The configured cgroup root.
        path: PathBuf,
    },
    /// The cgroup root is not a cgroup v2 directory even after mounting.
    #[error(
        "cgroup root {path} is not a cgroup v2 directory; point it at the host's cgroup v2 mount (or an empty directory, where it is mounted)"
    )]
    NotCgroup2 {
        /// The configured cgroup root.
        path: PathBuf,
    },
    /// A filesystem operation on a pin path, a cgroup or a netns file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused an eBPF object (verifier, BTF, map creation).
    #[error("loading eBPF object {object}: {source}")]
    Load {
        /// The object (entry file) name.
        object: &'static str,
        /// aya's error, with the verifier log when there is one.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object or is of an unexpected type.
    #[error("eBPF program {program}: {source}")]
    Program {
        /// The program (function) name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program or map the loader expects is not in the compiled object.
    #[error("{kind} {name} is missing from the compiled eBPF object; rebuild mesh-bpf")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// Attaching a program to an interface or cgroup failed.
    #[error("attaching {program} to {target}: {source}")]
    Attach {
        /// The program name.
        program: &'static str,
        /// Interface name or cgroup path.
        target: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Pinning or opening a pinned link failed.
    #[error("pinned link {path}: {source}")]
    Link {
        /// The pin path.
        path: PathBuf,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pinned map's layout differs from what this build expects.
    #[error(
        "map {map} at {path}: {what} is {found}, this build expects {expected}; it was created by an incompatible build. Remove the pin to recreate it (its state is lost) or run the matching agent version"
    )]
    MapLayout {
        /// Map name.
        map: &'static str,
        /// The pin path.
        path: PathBuf,
        /// "key size", "value size" or "map type".
        what: &'static str,
        /// What the kernel reports.
        found: String,
        /// What this build's C/Rust structs say.
        expected: String,
    },
    /// A map operation failed.
    #[error("map {map}: {op} failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The operation ("insert", "remove", "open", ...).
        op: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The map has no room for another entry.
    #[error(
        "map {map} is full ({max_entries} entries): entry not added; remove stale entries or raise the map size"
    )]
    MapFull {
        /// Map name.
        map: &'static str,
        /// Its capacity.
        max_entries: u32,
    },
    /// Input the datapath cannot represent; nothing was written.
    #[error("invalid {field} {value}: {allowed}")]
    InvalidInput {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// Entering a network namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
