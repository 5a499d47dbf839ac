//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use ipnet::IpNet;
use mesh_api::WireGuardKey;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the device, its key store and its APIs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The private key file exists but group or other users may read it.
    #[error(
        "private key file {path} has mode {mode:o}: group/other must have no access; fix it with `chmod 600 {path}` (or delete it to generate a new key)"
    )]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The private key file does not hold one base64 32-byte key.
    #[error(
        "private key file {path} does not hold a WireGuard private key ({reason}): expected one base64 line as written by `wg genkey`; replace or delete the file"
    )]
    KeyFileContent {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing a key file or the state dir failed.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Random bytes for a new key could not be read.
    #[error("reading random bytes for a new private key from /dev/urandom: {source}")]
    Random {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The interface name is not usable for a TUN device.
    #[error("interface name {name:?} is invalid: {reason}")]
    InvalidInterfaceName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Creating or configuring the TUN interface failed.
    #[error("TUN interface {ifname}: {op}: {source}")]
    Tun {
        /// The interface.
        ifname: String,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding or configuring the UDP socket failed.
    #[error("UDP socket of {ifname} on port {port}: {op}: {source}")]
    Udp {
        /// The interface the socket belongs to.
        ifname: String,
        /// The port asked for.
        port: u16,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The UAPI socket could not be created.
    #[error("UAPI socket {path}: {op}: {source}")]
    UapiSocket {
        /// The socket path.
        path: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another live process already serves this interface's UAPI socket.
    #[error(
        "UAPI socket {path} is served by another running device: choose another interface name or socket directory"
    )]
    UapiSocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Entering a network namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Starting a device thread failed.
    #[error("starting thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A UAPI request line is malformed or names an unknown key.
    #[error("UAPI line {line:?}: {reason}")]
    UapiInvalid {
        /// The offending line.
        line: String,
        /// What is wrong.
        reason: String,
    },
    /// A desired peer's AllowedIPs overlap another desired peer's.
    #[error(
        "peer {peer}: allowed IP {prefix} overlaps {other_prefix} of peer {other}: each address may route to one peer only; the peer was not applied"
    )]
    AllowedIpsOverlap {
        /// The rejected peer.
        peer: WireGuardKey,
        /// Its overlapping prefix.
        prefix: IpNet,
        /// The peer kept.
        other: WireGuardKey,
        /// The kept peer's overlapping prefix.
        other_prefix: IpNet,
    },
    /// The same public key appears twice in one desired peer list.
    #[error(
        "peer {peer} is listed twice: each public key may appear once; the second entry was not applied"
    )]
    DuplicatePeer {
        /// The repeated key.
        peer: WireGuardKey,
    },
    /// A desired peer has this device's own public key.
    #[error(
        "peer {peer} is this device's own public key: a device cannot peer with itself; not applied"
    )]
    SelfPeer {
        /// The key.
        peer: WireGuardKey,
    },
    /// A listen port change was asked of a running device.
    #[error(
        "listen port change from {current} to {requested} on a running device is not supported: restart the device with the new port"
    )]
    ListenPortChange {
        /// The port in use.
        current: u16,
        /// The port asked for.
        requested: u16,
    },
    /// Setting the fwmark on the UDP socket failed.
    #[error("setting fwmark {mark} on the UDP socket: {source}")]
    Fwmark {
        /// The mark.
        mark: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Talking to a device's UAPI socket failed (no device answers there,
    /// or the connection broke).
    #[error("UAPI socket {path}: {op}: {source}")]
    Uapi {
        /// The socket path.
        path: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A device refused a UAPI request.
    #[error("UAPI socket {path}: the device refused {op} (errno {errno}: {})", io::Error::from_raw_os_error(*errno))]
    UapiRefused {
        /// The socket path.
        path: PathBuf,
        /// What was asked.
        op: &'static str,
        /// The errno it answered.
        errno: i32,
    },
    /// The device process could not be started or did not come up.
    #[error("WireGuard device process {program}: {reason}")]
    DeviceProcess {
        /// The program run.
        program: PathBuf,
        /// What went wrong, with what to do.
        reason: String,
    },
}

impl Error {
    /// The errno a UAPI client gets for this error (`errno=` line).
    pub fn errno(&self) -> i32 {
        match self {
            Error::UapiInvalid { .. }
            | Error::AllowedIpsOverlap { .. }
            | Error::DuplicatePeer { .. }
            | Error::SelfPeer { .. } => libc::EINVAL,
            Error::ListenPortChange { .. } => libc::EADDRINUSE,
            Error::Fwmark { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}
