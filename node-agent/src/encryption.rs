//! Transparent encryption: the node's WireGuard device (mesh-wireguard,
//! boringtun on a TUN interface in the agent's namespace) and its peers.
//!
//! The device runs in its own process (`mesh-wg`), which the agent attaches
//! to over its UAPI socket, or starts when none answers: an agent that is
//! killed, crashes or is upgraded leaves the tunnel, its sessions and
//! counters running, and the next agent picks them up. Only turning
//! encryption off stops the device.
//!
//! [`desired_peers`] is pure: node records + the local node → one peer per
//! other node that has published a key (endpoint = node IP:port, AllowedIPs
//! = its pod CIDRs, plus its node IP /32 with node encryption). The routes
//! that send pod traffic into the device are [`crate::routes`]'s job.
//!
//! [`Encryption::rotate_key`] replaces the key (persisted first) and wakes
//! the node controller, which publishes the new public key so peers follow.
//!
//! What it is not for: deciding when encryption is on (the node controller
//! starts and stops the device from the runtime settings), strict mode (the
//! datapath drops what would leave unencrypted).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use ipnet::{IpNet, Ipv4Net};
use mesh_api::{NodeRecord, WireGuardKey};
use mesh_wireguard::{DeviceConfig, DeviceProcess, KeyStore, PeerConfig, PeerSync, ProcessConfig};

use crate::error::{Error, Result};
use crate::routes::{LocalNode, NextHop, node_ipv4};

/// What `/v1/status` and `/v1/encryption` report of the device.
pub use mesh_agent_api::encryption::{EncryptionStatus, PeerReport};

/// How peers are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOptions {
    /// The UDP port every node's device listens on.
    pub port: u16,
    /// Persistent keepalive in seconds (0: off).
    pub keepalive: u16,
    /// Also route node IPs (/32) through the tunnel.
    pub node_encryption: bool,
    /// Node addresses node encryption leaves alone (the API server's, so
    /// the agent reaches it whatever the tunnel's state).
    pub node_encryption_exclude: Vec<Ipv4Net>,
}

/// One peer per other node with a key. A key equal to `own_key` (a copied
/// state dir) and a pod CIDR already claimed by an earlier node or by the
/// local node are left out, so AllowedIPs never overlap.
pub fn desired_peers(
    nodes: &[&NodeRecord],
    local: &LocalNode,
    own_key: &WireGuardKey,
    opts: &PeerOptions,
) -> Vec<PeerConfig> {
    let mut claimed: Vec<IpNet> = local.pod_cidrs.clone();
    let mut seen_keys = vec![*own_key];
    let mut out = Vec::new();
    for node in nodes {
        if local.is(node) {
            continue;
        }
        let (Some(key), Some(ip)) = (node.wireguard_key, node_ipv4(node)) else {
            continue;
        };
        if seen_keys.contains(&key) {
            continue;
        }
        let mut allowed = Vec::new();
        for cidr in &node.pod_cidrs {
            let cidr = cidr.trunc();
            if !matches!(cidr, IpNet::V4(_)) {
                continue;
            }
            if claimed
                .iter()
                .any(|c| c.contains(&cidr.network()) || cidr.contains(&c.network()))
            {
                continue;
            }
            claimed.push(cidr);
            allowed.push(cidr);
        }
        if opts.node_encryption && !opts.node_encryption_exclude.iter().any(|c| c.contains(&ip)) {
            allowed.push(IpNet::V4(Ipv4Net::new(ip, 32).expect("/32")));
        }
        if allowed.is_empty() {
            continue;
        }
        seen_keys.push(key);
        out.push(PeerConfig {
            public_key: key,
            endpoint: Some(SocketAddr::new(IpAddr::V4(ip), opts.port)),
            allowed_ips: allowed,
            persistent_keepalive: (opts.keepalive != 0).then_some(opts.keepalive),
        });
    }
    out
}

/// Where the device is and how to start it.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// `--state-dir` (holds the key, and the device's log).
    pub state_dir: PathBuf,
    /// `--wireguard-interface`.
    pub ifname: String,
    /// `--wireguard-port`.
    pub port: u16,
    /// `--wireguard-device-program` (`mesh-wg`).
    pub program: PathBuf,
    /// `--wireguard-device-start`: start the program when no device
    /// answers (false: attach only).
    pub start: bool,
    /// The device's MTU when it is started ([`crate::mtu`]: the node
    /// interface's less the overhead).
    pub mtu: u32,
}

impl DeviceSpec {
    /// The device's log, beside the key.
    pub fn log(&self) -> PathBuf {
        self.state_dir.join(format!("{}.log", self.ifname))
    }
}

/// The default device program: `mesh-wg` beside the running executable
/// (the image and `cargo build` put them together).
pub fn default_device_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("mesh-wg")))
        .unwrap_or_else(|| PathBuf::from("mesh-wg"))
}

/// Node encryption's routes: `<node IP>/32 dev <ifname>` for every peer
/// whose AllowedIPs carry its own endpoint's address (which
/// [`desired_peers`] adds with node encryption, exclusions left out).
pub fn node_routes(peers: &[PeerConfig], ifname: &str) -> BTreeMap<Ipv4Net, NextHop> {
    let mut out = BTreeMap::new();
    for p in peers {
        let Some(SocketAddr::V4(ep)) = p.endpoint else {
            continue;
        };
        let host = Ipv4Net::new(*ep.ip(), 32).expect("/32");
        if p.allowed_ips.contains(&IpNet::V4(host)) {
            out.insert(host, NextHop::Dev(ifname.to_string()));
        }
    }
    out
}

/// The running device and what was last applied to it.
pub struct Encryption {
    device: Mutex<Option<DeviceProcess>>,
    public_key: Mutex<WireGuardKey>,
    state_dir: std::path::PathBuf,
    rotated: tokio::sync::Notify,
    ifname: String,
    port: u16,
    rejected: Mutex<Vec<String>>,
    published: std::sync::atomic::AtomicBool,
    /// The fwmark last set on the device (None: not set by this agent).
    fwmark: Mutex<Option<u32>>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("ifname", &self.ifname)
            .field("public_key", &self.public_key().to_string())
            .finish_non_exhaustive()
    }
}

impl Encryption {
    /// Loads or generates the key under the state dir, then attaches to the
    /// device answering on the interface's UAPI socket (a previous agent's)
    /// or starts the device program, in the calling thread's namespace.
    pub fn start(spec: &DeviceSpec) -> Result<Encryption> {
        let store = KeyStore::in_state_dir(&spec.state_dir);
        let key = store
            .load_or_generate()
            .map_err(|source| Error::Wireguard {
                what: format!("key in {}", store.path().display()),
                source: Box::new(source),
            })?;
        let config = ProcessConfig {
            device: DeviceConfig {
                ifname: spec.ifname.clone(),
                listen_port: spec.port,
                mtu: spec.mtu,
                ..DeviceConfig::default()
            },
            program: spec.program.clone(),
            state_dir: spec.state_dir.clone(),
            log: spec.log(),
            start: spec.start,
        };
        let device =
            DeviceProcess::attach_or_start(&config, &key).map_err(|source| Error::Wireguard {
                what: format!("device {} on UDP port {}", spec.ifname, spec.port),
                source: Box::new(source),
            })?;
        Ok(Encryption {
            public_key: Mutex::new(device.public_key()),
            state_dir: spec.state_dir.clone(),
            rotated: tokio::sync::Notify::new(),
            port: device.listen_port(),
            ifname: spec.ifname.clone(),
            device: Mutex::new(Some(device)),
            rejected: Mutex::default(),
            published: Default::default(),
            fwmark: Mutex::default(),
        })
    }

    /// Whether the device still answers (its process may have died).
    pub fn alive(&self) -> bool {
        self.device
            .lock()
            .expect("device lock")
            .as_ref()
            .is_some_and(DeviceProcess::alive)
    }

    /// The device process's pid, when visible.
    pub fn pid(&self) -> Option<u32> {
        self.device
            .lock()
            .expect("device lock")
            .as_ref()
            .and_then(DeviceProcess::pid)
    }

    /// The device's interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// This node's public key.
    pub fn public_key(&self) -> WireGuardKey {
        *self.public_key.lock().expect("key lock")
    }

    /// Generates a new key, persists it in the state dir (0600, atomically)
    /// and gives it to the device: sessions restart with the next packet,
    /// and peers accept the new key once they learn it from the Node
    /// annotation (the node controller, woken by
    /// [`Encryption::key_rotated`], publishes it, retrying a failed write;
    /// the API answers once its first attempt is done). Returns (old, new)
    /// public keys.
    pub fn rotate_key(&self) -> Result<(WireGuardKey, WireGuardKey)> {
        let guard = self.device.lock().expect("device lock");
        let dev = guard.as_ref().ok_or_else(|| Error::DeviceStopped {
            ifname: self.ifname.clone(),
        })?;
        let store = KeyStore::in_state_dir(&self.state_dir);
        let old = self.public_key();
        let new = dev.rotate_key(&store).map_err(|source| Error::Wireguard {
            what: format!("key rotation in {}", store.path().display()),
            source: Box::new(source),
        })?;
        *self.public_key.lock().expect("key lock") = new;
        self.published
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.rotated.notify_one();
        tracing::info!(old = %old, new = %new, "WireGuard key rotated");
        Ok((old, new))
    }

    /// Completes after the next [`Encryption::rotate_key`] (or at once if
    /// one happened since the last call).
    pub async fn key_rotated(&self) {
        self.rotated.notified().await;
    }

    /// Records that the key is on the Node annotation.
    pub fn set_published(&self) {
        self.published
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the device's peers equal to `peers`. Fails when the device
    /// does not answer.
    pub fn apply(&self, peers: &[PeerConfig]) -> Result<PeerSync> {
        let guard = self.device.lock().expect("device lock");
        let Some(dev) = guard.as_ref() else {
            return Ok(PeerSync::default());
        };
        let sync = dev.apply_peers(peers).map_err(|source| Error::Wireguard {
            what: format!("peers of {}", self.ifname),
            source: Box::new(source),
        })?;
        *self.rejected.lock().expect("lock") =
            sync.rejected.iter().map(ToString::to_string).collect();
        Ok(sync)
    }

    /// Sets the fwmark of the device's own UDP packets (node encryption),
    /// when it differs from what this agent last set.
    pub fn set_fwmark(&self, mark: u32) -> Result<()> {
        let mut last = self.fwmark.lock().expect("fwmark lock");
        if *last == Some(mark) {
            return Ok(());
        }
        let guard = self.device.lock().expect("device lock");
        let Some(dev) = guard.as_ref() else {
            return Ok(());
        };
        dev.set_fwmark(mark).map_err(|source| Error::Wireguard {
            what: format!("fwmark of {}", self.ifname),
            source: Box::new(source),
        })?;
        *last = Some(mark);
        Ok(())
    }

    /// Status with the peers' last handshakes.
    pub fn status(&self) -> EncryptionStatus {
        let now = SystemTime::now();
        let peers = self
            .device
            .lock()
            .expect("device lock")
            .as_ref()
            .map(|d| {
                d.peers().unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "WireGuard device status");
                    Vec::new()
                })
            })
            .unwrap_or_default()
            .into_iter()
            .map(|p| PeerReport {
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                last_handshake_seconds_ago: p
                    .last_handshake
                    .map(|t| now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect();
        EncryptionStatus {
            enabled: true,
            interface: Some(self.ifname.clone()),
            port: Some(self.port),
            device_pid: self.pid(),
            public_key: Some(self.public_key().to_string()),
            key_published: self.published.load(std::sync::atomic::Ordering::Relaxed),
            peers,
            rejected: self.rejected.lock().expect("lock").clone(),
        }
    }

    /// Stops the device (its process removes the TUN and the UAPI
    /// socket): encryption turned off. An agent that merely exits leaves it
    /// running for the next one.
    pub fn shutdown(&self) {
        if let Some(dev) = self.device.lock().expect("device lock").take()
            && let Err(e) = dev.stop()
        {
            tracing::warn!(error = %e, "stopping the WireGuard device");
        }
    }
}

#[cfg(test)]
mod tests;
