//! The device's public API: [`Device::start`] creates the TUN queues and
//! UDP sockets and starts the threads around boringtun's noise layer (one
//! TUN and one UDP loop per queue, the timer thread, the UAPI server);
//! [`Device::apply_peers`] makes the peer table equal to what the agent
//! wants. The loops live in `tun_loop`, `udp_loop` and `timers`, the state
//! they share in `shared`.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use mesh_api::WireGuardKey;

use crate::error::{Error, Result};
use crate::key::{KeyStore, PrivateKey};
use crate::peers::{Change, PeerConfig, PeerStatus, PeerSync, plan_peers, screen_peers};
use crate::shared::Shared;
use crate::uapi::PeerUpdate;
use crate::udp_socket::bind_udp;
use crate::{sys, timers, tun_loop, uapi_server, udp_loop};

/// Default interface name (DESIGN.md).
pub const DEFAULT_IFNAME: &str = "mesh-wg0";
/// Default UDP port (DESIGN.md).
pub const DEFAULT_PORT: u16 = 51871;
/// Default UAPI socket directory (where `wg` looks).
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";
/// Default MTU: 1500 minus IPv4/UDP/WireGuard overhead, as wg-quick uses.
pub const DEFAULT_MTU: u32 = 1420;

/// How to start a device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// TUN interface name (≤ 15 bytes).
    pub ifname: String,
    /// UDP listen port (0 = any free port; read it back with [`Device::listen_port`]).
    pub listen_port: u16,
    /// Directory of the UAPI socket `<dir>/<ifname>.sock`.
    pub uapi_dir: PathBuf,
    /// Interface MTU.
    pub mtu: u32,
    /// Number of TUN queues / UDP sockets, each with its own pair of threads
    /// (default: one per CPU, at most 4).
    pub queues: usize,
    /// SO_MARK for the UDP socket (0 = none).
    pub fwmark: u32,
    /// TUN offloads (TSO, partial checksums) split in software, UDP GSO on
    /// send and GRO on receive: one syscall per ~45 packets instead of one
    /// per packet. Off = one packet per syscall (for comparison).
    pub offload: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            ifname: DEFAULT_IFNAME.to_string(),
            listen_port: DEFAULT_PORT,
            uapi_dir: PathBuf::from(DEFAULT_UAPI_DIR),
            mtu: DEFAULT_MTU,
            queues: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            fwmark: 0,
            offload: true,
        }
    }
}

/// A running WireGuard device. Dropping it (or [`Device::shutdown`]) stops
/// its threads, removes the UAPI socket and the TUN interface.
pub struct Device {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    uapi_path: PathBuf,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ifname", &self.shared.ifname)
            .field("listen_port", &self.shared.listen_port)
            .field("uapi", &self.uapi_path)
            .finish()
    }
}

fn validate_ifname(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidInterfaceName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(bad("it must have 1 to 15 bytes"));
    }
    if name.contains(['/', ' ', '\0', ':']) || name == "." || name == ".." {
        return Err(bad("it must not contain '/', ':', spaces or NUL"));
    }
    Ok(())
}

impl Device {
    /// Creates the TUN interface and UDP socket(s) in the calling thread's
    /// network namespace, binds the UAPI socket and starts the threads.
    pub fn start(config: &DeviceConfig, key: PrivateKey) -> Result<Device> {
        validate_ifname(&config.ifname)?;
        let ifname = config.ifname.clone();
        let queues = config.queues.max(1);
        let uapi_path = config.uapi_dir.join(format!("{ifname}.sock"));

        let tun_err = |op, source| Error::Tun {
            ifname: ifname.clone(),
            op,
            source,
        };
        let mut tuns = Vec::new();
        for _ in 0..queues {
            tuns.push(
                sys::open_tun_queue(&ifname, config.offload)
                    .map_err(|e| tun_err("create (TUNSETIFF)", e))?,
            );
        }
        sys::set_mtu_and_up(&ifname, config.mtu).map_err(|e| tun_err("set MTU and up", e))?;

        let first = bind_udp(&ifname, config.listen_port, queues > 1, None)?;
        let port = first
            .sock
            .local_addr()
            .map_err(|e| Error::Udp {
                ifname: ifname.clone(),
                port: config.listen_port,
                op: "read bound port",
                source: e,
            })?
            .port();
        let first_v6 = first.v6;
        let mut udps = vec![first];
        for _ in 1..queues {
            udps.push(bind_udp(&ifname, port, true, Some(first_v6))?);
        }
        for u in &udps {
            if config.offload {
                // Coalesced receive; harmless when the peer sends singly.
                let _ = sys::set_int_opt(u.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
            }
            if config.fwmark != 0 {
                sys::set_mark(u.as_raw_fd(), config.fwmark).map_err(|source| Error::Fwmark {
                    mark: config.fwmark,
                    source,
                })?;
            }
        }

        // Last, so a failure above leaves no socket behind for `wg` to trip on.
        let listener = uapi_server::bind(&uapi_path)?;
        let shared = Arc::new(Shared::new(
            ifname.clone(),
            port,
            key,
            tuns,
            udps,
            config.fwmark,
            config.offload,
        ));

        let mut dev = Device {
            shared: shared.clone(),
            threads: Vec::new(),
            uapi_path: uapi_path.clone(),
        };
        for q in 0..queues {
            let s = shared.clone();
            dev.spawn(format!("wg-tun{q}"), move || tun_loop::tun_loop(&s, q))?;
            let s = shared.clone();
            dev.spawn(format!("wg-udp{q}"), move || udp_loop::udp_loop(&s, q))?;
        }
        let s = shared.clone();
        dev.spawn("wg-timers".into(), move || timers::timer_loop(&s))?;
        let s = shared.clone();
        dev.spawn("wg-uapi".into(), move || uapi_server::serve(&*s, listener))?;
        tracing::info!(ifname = %ifname, port, queues, uapi = %uapi_path.display(), public_key = %dev.public_key(), "WireGuard device started");
        Ok(dev)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| Error::Thread { name, source })?;
        self.threads.push(h);
        Ok(())
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.shared.ifname
    }

    /// The UDP port actually bound.
    pub fn listen_port(&self) -> u16 {
        self.shared.listen_port
    }

    /// The UAPI socket path.
    pub fn uapi_path(&self) -> &std::path::Path {
        &self.uapi_path
    }

    /// This device's public key.
    pub fn public_key(&self) -> WireGuardKey {
        self.shared.key.read().private.public_key()
    }

    /// Replaces the private key: every peer's sessions are dropped and new
    /// handshakes start with the next packet.
    pub fn set_private_key(&self, key: PrivateKey) {
        let _g = self.shared.config_lock.lock();
        self.shared.set_private_key(key);
    }

    /// Generates a new key, persists it in `store`, and uses it. Returns the
    /// new public key (to publish so peers can follow).
    pub fn rotate_key(&self, store: &KeyStore) -> Result<WireGuardKey> {
        let k = store.rotate()?;
        let public = k.public_key();
        self.set_private_key(k);
        Ok(public)
    }

    /// Makes the peer table equal to `desired` with the fewest changes:
    /// unchanged peers keep their sessions. A peer that repeats a key, is
    /// this device, or whose AllowedIPs overlap an earlier desired peer's is
    /// refused (in `rejected`) and every other peer is applied.
    pub fn apply_peers(&self, desired: &[PeerConfig]) -> PeerSync {
        let _g = self.shared.config_lock.lock();
        let mut sync = PeerSync::default();
        let (accepted, rejected) = screen_peers(&self.public_key(), desired);
        sync.rejected = rejected;
        for e in &sync.rejected {
            tracing::warn!(ifname = %self.shared.ifname, error = %e, "peer refused");
        }

        let plan = plan_peers(&self.peers(), &accepted);
        for k in plan.remove {
            self.shared.remove_peer(k.as_bytes());
            sync.removed.push(k);
        }
        for (change, p) in plan.upsert {
            match change {
                Change::Add => sync.added.push(p.public_key),
                Change::Update => sync.updated.push(p.public_key),
            }
            self.shared.upsert_peer(&PeerUpdate::replacing(p));
        }
        if !(sync.added.is_empty() && sync.updated.is_empty() && sync.removed.is_empty()) {
            tracing::info!(ifname = %self.shared.ifname, added = sync.added.len(), updated = sync.updated.len(), removed = sync.removed.len(), rejected = sync.rejected.len(), "peers applied");
        }
        sync
    }

    /// Whether the device stopped on its own because its TUN interface was
    /// deleted (its threads are ending; shut it down and start a new one).
    pub fn interface_lost(&self) -> bool {
        self.shared.lost()
    }

    /// Every peer's state, sorted by public key.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared
            .peer_infos()
            .into_iter()
            .map(|p| p.status)
            .collect()
    }

    /// Stops the threads, removes the UAPI socket and the TUN interface.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.request_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.uapi_path);
        tracing::info!(ifname = %self.shared.ifname, "WireGuard device stopped");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}
