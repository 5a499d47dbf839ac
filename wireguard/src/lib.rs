//! mesh-wireguard: Meshwork's userspace WireGuard device.
//!
//! What it is for: the node-agent embeds a [`Device`] — a TUN interface
//! (`mesh-wg0` by default) and a UDP socket (port 51871 by default) created
//! in the calling thread's network namespace, with boringtun's noise layer
//! (`boringtun::noise::Tunn`) driven by the crate's own threads — and keeps
//! its peers equal to the mesh's nodes with [`Device::apply_peers`]. The
//! node's private key lives in the state dir ([`KeyStore`], mode 0600,
//! atomic writes) and rotates on request ([`Device::rotate_key`]). The device
//! answers the standard cross-platform UAPI on `<dir>/<ifname>.sock`, so
//! `wg show` and `wg set` work, and it interoperates with other WireGuard
//! implementations (tested against wireguard-go).
//!
//! The node-agent does not embed the device: it runs it in its own process
//! (the `mesh-wg` program, a thin shell over [`Device`]) and drives it over
//! that socket with a [`DeviceProcess`], so an agent restart or upgrade
//! leaves the tunnel, its sessions and counters untouched.
//!
//! What it is not for: addresses and routes on the interface (the agent's
//! routing reconciler owns them), deciding which peers exist (the agent
//! computes them from node records), kernel WireGuard (not available here).
//!
//! How it is fast: per queue, one thread reads the TUN and one reads the UDP
//! socket. With [`DeviceConfig::offload`] (default) the TUN hands over TCP
//! super-packets (TSO via `IFF_VNET_HDR`) that [`offload`] cuts into MTU-sized
//! packets, encrypted and sent as one UDP GSO `sendmsg`; received datagrams
//! come coalesced (UDP GRO) and decrypted TCP segments of one flow are merged
//! back into one GSO write to the TUN. Syscalls per packet drop from ~2 to
//! ~0.05 on a bulk stream (see `scripts/bench.d/wireguard.sh`).
//!
//! Endpoints may be IPv4 or IPv6 (one dual-stack socket; IPv4-only when the
//! kernel has no IPv6). TCP merging on receive is IPv4 only; IPv6 tunnelled
//! traffic is cut (TSO) but written to the TUN packet by packet.
//!
//! Limits: the listen port cannot change on a running device (UAPI answers
//! `errno=98`); a preshared key or keepalive change starts a new handshake.
//!
//! ```no_run
//! use mesh_wireguard::{Device, DeviceConfig, KeyStore, PeerConfig};
//! # fn main() -> mesh_wireguard::Result<()> {
//! let store = KeyStore::in_state_dir(std::path::Path::new("/var/lib/meshwork"));
//! let dev = Device::start(&DeviceConfig::default(), store.load_or_generate()?)?;
//! println!("publish {}", dev.public_key());
//! let peer = PeerConfig {
//!     public_key: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".parse().unwrap(),
//!     endpoint: Some("192.168.1.12:51871".parse().unwrap()),
//!     allowed_ips: vec!["10.244.2.0/24".parse().unwrap()],
//!     persistent_keepalive: Some(25),
//! };
//! let sync = dev.apply_peers(&[peer]);
//! for refused in &sync.rejected {
//!     eprintln!("{refused}");
//! }
//! for p in dev.peers() {
//!     println!("{} last handshake {:?}", p.public_key, p.last_handshake);
//! }
//! let new_public = dev.rotate_key(&store)?;
//! # let _ = new_public;
//! dev.shutdown(); // removes the TUN and the UAPI socket
//! # Ok(())
//! # }
//! ```

mod allowed_ips;
mod device;
mod device_process;
mod error;
mod key;
pub mod netns;
pub mod offload;
mod peers;
mod shared;
mod sys;
mod timers;
mod tun_loop;
pub mod uapi;
mod uapi_server;
mod udp_loop;
mod udp_socket;

pub use allowed_ips::{AllowedIps, overlaps};
pub use device::{
    DEFAULT_IFNAME, DEFAULT_MTU, DEFAULT_PORT, DEFAULT_UAPI_DIR, Device, DeviceConfig,
};
pub use device_process::{DeviceProcess, Origin, ProcessConfig};
pub use error::{Error, Result};
pub use key::{KEY_FILE_NAME, KeyStore, PrivateKey};
pub use mesh_api::WireGuardKey;
pub use peers::{PeerConfig, PeerStatus, PeerSync};

#[cfg(test)]
mod tests;
