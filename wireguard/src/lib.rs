//! mesh-wireguard: Meshwork's userspace WireGuard device.
//!
//! What it is for: the node-agent embeds a [`Device`] — a TUN interface
//! (`mesh-wg0` by default) and a UDP socket (port 51871 by default) created
//! in the calling thread's network namespace, with boringtun's noise layer
//! driven by the crate's own threads — and keeps its peers equal to the mesh's
//! nodes with [`Device::apply_peers`]. The node's private key lives in the
//! state dir ([`KeyStore`], mode 0600, atomic writes) and rotates on request
//! ([`Device::rotate_key`]). The device answers the standard cross-platform
//! UAPI on `<dir>/<ifname>.sock`, so `wg show` and `wg set` work, and it
//! interoperates with other WireGuard implementations (wireguard-go).
//!
//! What it is not for: addresses and routes on the interface (the agent's
//! routing reconciler owns them), deciding which peers exist (the agent
//! computes them from node records), kernel WireGuard.

mod allowed_ips;
mod device;
mod error;
mod key;
pub mod netns;
mod sys;
pub mod uapi;
mod uapi_server;

pub use allowed_ips::{AllowedIps, overlaps};
pub use device::{
    DEFAULT_IFNAME, DEFAULT_MTU, DEFAULT_PORT, DEFAULT_UAPI_DIR, Device, DeviceConfig, PeerConfig,
    PeerStatus, PeerSync,
};
pub use error::{Error, Result};
pub use key::{KEY_FILE_NAME, KeyStore, PrivateKey};
pub use mesh_api::WireGuardKey;

#[cfg(test)]
mod tests;
