//! The device: TUN queues and UDP sockets driven by dedicated threads around
//! boringtun's noise layer, plus a timer thread and the UAPI server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use mesh_api::WireGuardKey;
use parking_lot::{Mutex, RwLock};

use crate::allowed_ips::{AllowedIps, overlaps};
use crate::error::{Error, Result};
use crate::key::{KeyStore, PrivateKey};
use crate::offload::{VNET_HDR_LEN, VnetHdr, coalesce_and_write, segment};
use crate::uapi::{DeviceInfo, PeerInfo, PeerUpdate, SetRequest};
use crate::{sys, uapi_server};

/// Default interface name (DESIGN.md).
pub const DEFAULT_IFNAME: &str = "mesh-wg0";
/// Default UDP port (DESIGN.md).
pub const DEFAULT_PORT: u16 = 51871;
/// Default UAPI socket directory (where `wg` looks).
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";
/// Default MTU: 1500 minus IPv4/UDP/WireGuard overhead, as wg-quick uses.
pub const DEFAULT_MTU: u32 = 1420;

const HANDSHAKES_PER_SEC_BEFORE_COOKIES: u64 = 100;
const TIMER_TICK: Duration = Duration::from_millis(250);
const POLL_MS: i32 = 200;
const MAX_PACKET: usize = 65536;

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

/// A desired peer, as the node-agent computes it from a node record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: WireGuardKey,
    /// Where to send its packets (node IP : its port).
    pub endpoint: Option<SocketAddr>,
    /// Addresses routed to the peer, and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// What one [`Device::apply_peers`] changed and refused.
#[derive(Debug, Default)]
#[must_use = "rejected peers carry errors to report"]
pub struct PeerSync {
    /// Peers created.
    pub added: Vec<WireGuardKey>,
    /// Peers whose endpoint, AllowedIPs or keepalive changed.
    pub updated: Vec<WireGuardKey>,
    /// Peers removed.
    pub removed: Vec<WireGuardKey>,
    /// Peers refused, with why. Valid peers were applied anyway.
    pub rejected: Vec<Error>,
}

/// A peer's state for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: WireGuardKey,
    /// Current endpoint (roams to where authenticated packets come from).
    pub endpoint: Option<SocketAddr>,
    /// AllowedIPs.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive in seconds (None = off).
    pub persistent_keepalive: Option<u16>,
    /// Time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
}

struct Peer {
    public: [u8; 32],
    index: u32,
    state: Mutex<PeerState>,
}

struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    allowed_ips: Vec<IpNet>,
    keepalive: Option<u16>,
    preshared: Option<[u8; 32]>,
    /// Counters of tunnels replaced by a new one (keepalive/psk change).
    rx_base: u64,
    tx_base: u64,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    allowed: AllowedIps<Arc<Peer>>,
}

struct KeyState {
    private: PrivateKey,
    secret: StaticSecret,
    public: PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

impl KeyState {
    fn new(private: PrivateKey) -> KeyState {
        let secret = private.secret();
        let public = PublicKey::from(&secret);
        KeyState {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SEC_BEFORE_COOKIES)),
            private,
            secret,
            public,
        }
    }
}

pub(crate) struct Shared {
    ifname: String,
    listen_port: u16,
    key: RwLock<KeyState>,
    table: RwLock<Table>,
    tuns: Vec<OwnedFd>,
    udps: Vec<Udp>,
    fwmark: AtomicU32,
    offload: bool,
    next_index: AtomicU32,
    stop: AtomicBool,
    /// Serialises configuration changes (UAPI set, apply_peers, rotation).
    config_lock: Mutex<()>,
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

/// The device's UDP socket. Dual-stack IPv6 when the namespace has IPv6
/// (IPv4 peers travel as v4-mapped addresses), else IPv4 only; callers
/// always see plain IPv4 or IPv6 endpoints.
pub(crate) struct Udp {
    sock: UdpSocket,
    v6: bool,
}

impl Udp {
    fn wire(&self, ep: SocketAddr) -> SocketAddr {
        match ep {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            _ => ep,
        }
    }

    fn send_to(&self, buf: &[u8], ep: SocketAddr) -> std::io::Result<usize> {
        self.sock.send_to(buf, self.wire(ep))
    }

    fn send_gso(&self, buf: &[u8], seg: u16, ep: SocketAddr) -> std::io::Result<usize> {
        sys::send_gso(self.sock.as_raw_fd(), buf, seg, self.wire(ep))
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// Binds one queue's socket. `v6`: None = try dual-stack, fall back to IPv4
/// when the kernel has no IPv6; Some = the family of the first queue.
fn bind_udp(ifname: &str, port: u16, reuse: bool, v6: Option<bool>) -> Result<Udp> {
    let err = |op, source| Error::Udp {
        ifname: ifname.to_string(),
        port,
        op,
        source,
    };
    let (sock, v6) = match v6 {
        Some(v6) => (
            sys::udp_socket(port, v6, reuse).map_err(|e| err("bind", e))?,
            v6,
        ),
        None => match sys::udp_socket(port, true, reuse) {
            Ok(s) => (s, true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                (
                    sys::udp_socket(port, false, reuse).map_err(|e| err("bind", e))?,
                    false,
                )
            }
            Err(e) => return Err(err("bind", e)),
        },
    };
    sock.set_nonblocking(true)
        .map_err(|e| err("set non-blocking", e))?;
    // Bigger buffers keep bursts from being dropped while a thread is busy.
    let _ = sys::set_int_opt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    let _ = sys::set_int_opt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    Ok(Udp { sock, v6 })
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
        let shared = Arc::new(Shared {
            ifname: ifname.clone(),
            listen_port: port,
            key: RwLock::new(KeyState::new(key)),
            table: RwLock::new(Table::default()),
            tuns,
            udps,
            fwmark: AtomicU32::new(config.fwmark),
            offload: config.offload,
            next_index: AtomicU32::new(1),
            stop: AtomicBool::new(false),
            config_lock: Mutex::new(()),
        });

        let mut dev = Device {
            shared: shared.clone(),
            threads: Vec::new(),
            uapi_path: uapi_path.clone(),
        };
        for q in 0..queues {
            let s = shared.clone();
            dev.spawn(format!("wg-tun{q}"), move || tun_loop(&s, q))?;
            let s = shared.clone();
            dev.spawn(format!("wg-udp{q}"), move || udp_loop(&s, q))?;
        }
        let s = shared.clone();
        dev.spawn("wg-timers".into(), move || timer_loop(&s))?;
        let s = shared.clone();
        dev.spawn("wg-uapi".into(), move || uapi_server::serve(&s, listener))?;
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
        let own = self.public_key();
        let mut accepted: Vec<&PeerConfig> = Vec::new();
        'next: for p in desired {
            if p.public_key == own {
                sync.rejected.push(Error::SelfPeer { peer: p.public_key });
                continue;
            }
            for a in &accepted {
                if a.public_key == p.public_key {
                    sync.rejected
                        .push(Error::DuplicatePeer { peer: p.public_key });
                    continue 'next;
                }
                for net in &p.allowed_ips {
                    if let Some(other) = a.allowed_ips.iter().find(|o| overlaps(net, o)) {
                        sync.rejected.push(Error::AllowedIpsOverlap {
                            peer: p.public_key,
                            prefix: *net,
                            other: a.public_key,
                            other_prefix: *other,
                        });
                        continue 'next;
                    }
                }
            }
            accepted.push(p);
        }
        for e in &sync.rejected {
            tracing::warn!(ifname = %self.shared.ifname, error = %e, "peer refused");
        }

        let current: HashMap<[u8; 32], PeerStatus> = self
            .peers()
            .into_iter()
            .map(|s| (*s.public_key.as_bytes(), s))
            .collect();
        let wanted: HashMap<[u8; 32], &PeerConfig> = accepted
            .iter()
            .map(|p| (*p.public_key.as_bytes(), *p))
            .collect();
        // Remove first, so AllowedIPs moving between peers never collide.
        for k in current.keys() {
            if !wanted.contains_key(k) {
                self.shared.remove_peer(k);
                sync.removed.push(WireGuardKey::from_bytes(*k));
            }
        }
        for p in &accepted {
            let k = *p.public_key.as_bytes();
            let mut allowed = p.allowed_ips.iter().map(IpNet::trunc).collect::<Vec<_>>();
            allowed.sort();
            allowed.dedup();
            let keepalive = p.persistent_keepalive.filter(|k| *k != 0);
            match current.get(&k) {
                Some(cur) => {
                    let mut cur_allowed = cur.allowed_ips.clone();
                    cur_allowed.sort();
                    let endpoint_changed = p.endpoint.is_some() && cur.endpoint != p.endpoint;
                    if cur_allowed == allowed
                        && !endpoint_changed
                        && cur.persistent_keepalive == keepalive
                    {
                        continue;
                    }
                    sync.updated.push(p.public_key);
                }
                None => sync.added.push(p.public_key),
            }
            let mut up = PeerUpdate::new(k);
            up.endpoint = p.endpoint;
            up.persistent_keepalive = Some(keepalive.unwrap_or(0));
            up.replace_allowed_ips = true;
            up.allowed_ips = allowed;
            self.shared.upsert_peer(&up);
        }
        if !(sync.added.is_empty() && sync.updated.is_empty() && sync.removed.is_empty()) {
            tracing::info!(ifname = %self.shared.ifname, added = sync.added.len(), updated = sync.updated.len(), removed = sync.removed.len(), rejected = sync.rejected.len(), "peers applied");
        }
        sync
    }

    /// Every peer's state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared
            .peer_infos()
            .into_iter()
            .map(|p| PeerStatus {
                public_key: WireGuardKey::from_bytes(p.public_key),
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                persistent_keepalive: Some(p.persistent_keepalive).filter(|k| *k != 0),
                last_handshake: p.last_handshake,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect()
    }

    /// Stops the threads, removes the UAPI socket and the TUN interface.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
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

impl Shared {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn set_private_key(&self, key: PrivateKey) {
        let ks = KeyState::new(key);
        let peers: Vec<Arc<Peer>> = self.table.read().by_key.values().cloned().collect();
        for p in peers {
            let mut st = p.state.lock();
            st.tunn
                .set_static_private(ks.secret.clone(), ks.public, Some(ks.rate_limiter.clone()));
        }
        // No other lock is held here: the receive path takes key then table.
        *self.key.write() = ks;
    }

    fn new_tunn(
        &self,
        public: [u8; 32],
        index: u32,
        psk: Option<[u8; 32]>,
        keepalive: Option<u16>,
    ) -> Tunn {
        let ks = self.key.read();
        Tunn::new(
            ks.secret.clone(),
            PublicKey::from(public),
            psk,
            keepalive,
            index,
            Some(ks.rate_limiter.clone()),
        )
    }

    fn remove_peer(&self, key: &[u8; 32]) {
        let mut t = self.table.write();
        if let Some(p) = t.by_key.remove(key) {
            t.by_index.remove(&p.index);
            t.allowed.retain(|_, v| !Arc::ptr_eq(v, &p));
        }
    }

    /// Applies one UAPI peer section (also used by apply_peers).
    fn upsert_peer(&self, up: &PeerUpdate) {
        if up.remove {
            self.remove_peer(&up.public_key);
            return;
        }
        let existing = self.table.read().by_key.get(&up.public_key).cloned();
        let created = existing.is_none();
        let peer = match existing {
            Some(p) => p,
            None if up.update_only => return,
            None => {
                let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
                let keepalive = up.persistent_keepalive.filter(|k| *k != 0);
                let psk = up.preshared_key.filter(|k| *k != [0; 32]);
                let p = Arc::new(Peer {
                    public: up.public_key,
                    index,
                    state: Mutex::new(PeerState {
                        tunn: self.new_tunn(up.public_key, index, psk, keepalive),
                        endpoint: None,
                        allowed_ips: Vec::new(),
                        keepalive,
                        preshared: psk,
                        rx_base: 0,
                        tx_base: 0,
                    }),
                });
                let mut t = self.table.write();
                t.by_key.insert(up.public_key, p.clone());
                t.by_index.insert(index, p.clone());
                p
            }
        };
        {
            let mut st = peer.state.lock();
            if let Some(ep) = up.endpoint {
                st.endpoint = Some(ep);
            }
            let mut rebuild = false;
            if let Some(k) = up.persistent_keepalive {
                let k = Some(k).filter(|k| *k != 0);
                if k != st.keepalive {
                    st.keepalive = k;
                    rebuild = true;
                }
            }
            if let Some(psk) = up.preshared_key {
                let psk = Some(psk).filter(|k| *k != [0; 32]);
                if psk != st.preshared {
                    st.preshared = psk;
                    rebuild = true;
                }
            }
            if rebuild {
                // boringtun fixes keepalive and PSK at construction: a new
                // tunnel (and handshake) carries the new values.
                let (_, tx, rx, _, _) = st.tunn.stats();
                st.tx_base += tx as u64;
                st.rx_base += rx as u64;
                st.tunn = self.new_tunn(peer.public, peer.index, st.preshared, st.keepalive);
            }
        }
        if up.replace_allowed_ips || !up.allowed_ips.is_empty() {
            let mut t = self.table.write();
            let mut st = peer.state.lock();
            if up.replace_allowed_ips {
                for net in std::mem::take(&mut st.allowed_ips) {
                    if t.allowed
                        .get_exact(net)
                        .is_some_and(|v| Arc::ptr_eq(v, &peer))
                    {
                        t.allowed.remove(net);
                    }
                }
            }
            for net in &up.allowed_ips {
                let net = net.trunc();
                // As the kernel does: a prefix belongs to the last peer given it.
                if let Some(prev) = t.allowed.insert(net, peer.clone())
                    && !Arc::ptr_eq(&prev, &peer)
                {
                    prev.state.lock().allowed_ips.retain(|n| *n != net);
                }
                if !st.allowed_ips.contains(&net) {
                    st.allowed_ips.push(net);
                }
            }
        }
        // A new peer (e.g. a node that just rotated its key) or one with
        // keepalive gets a handshake now: the tunnel is up before the first
        // packet, and the other side's queued traffic flows without waiting
        // for its own retry (REKEY_TIMEOUT, 5 s).
        self.kick(&peer, created);
    }

    fn kick(&self, peer: &Arc<Peer>, created: bool) {
        let mut buf = vec![0u8; 256];
        let mut st = peer.state.lock();
        if st.keepalive.is_none() && !created {
            return;
        }
        let Some(ep) = st.endpoint else { return };
        if st.tunn.time_since_last_handshake().is_some() {
            return;
        }
        if let TunnResult::WriteToNetwork(p) = st.tunn.format_handshake_initiation(&mut buf, false)
        {
            let _ = self.udps[0].send_to(p, ep);
        }
    }

    pub(crate) fn apply_set(&self, req: &SetRequest) -> Result<()> {
        let _g = self.config_lock.lock();
        if let Some(p) = req.listen_port
            && p != self.listen_port
        {
            return Err(Error::ListenPortChange {
                current: self.listen_port,
                requested: p,
            });
        }
        if let Some(mark) = req.fwmark {
            for u in &self.udps {
                sys::set_mark(u.as_raw_fd(), mark)
                    .map_err(|source| Error::Fwmark { mark, source })?;
            }
            self.fwmark.store(mark, Ordering::Relaxed);
        }
        if let Some(k) = req.private_key {
            // The device always keeps a key: an all-zero key (removal) is refused.
            if k == [0; 32] {
                return Err(Error::UapiInvalid {
                    line: "private_key=0000…".into(),
                    reason: "this device cannot run without a private key".into(),
                });
            }
            self.set_private_key(PrivateKey::from_bytes(k));
        }
        if req.replace_peers {
            let keys: Vec<[u8; 32]> = self.table.read().by_key.keys().copied().collect();
            for k in keys {
                self.remove_peer(&k);
            }
        }
        for up in &req.peers {
            self.upsert_peer(up);
        }
        Ok(())
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let table = self.table.read();
        let now = SystemTime::now();
        let mut out: Vec<PeerInfo> = table
            .by_key
            .values()
            .map(|p| {
                let st = p.state.lock();
                let (since, tx, rx, _, _) = st.tunn.stats();
                PeerInfo {
                    public_key: p.public,
                    preshared_key: st.preshared,
                    endpoint: st.endpoint,
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                    rx_bytes: st.rx_base + rx as u64,
                    tx_bytes: st.tx_base + tx as u64,
                    persistent_keepalive: st.keepalive.unwrap_or(0),
                    allowed_ips: st.allowed_ips.clone(),
                }
            })
            .collect();
        out.sort_by_key(|p| p.public_key);
        out
    }

    pub(crate) fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            private_key: Some(*self.key.read().private.as_bytes()),
            listen_port: self.listen_port,
            fwmark: self.fwmark.load(Ordering::Relaxed),
            peers: self.peer_infos(),
        }
    }
}

/// TUN → UDP: read a packet (with offload: a TSO super-packet, cut into
/// MTU-sized packets), find the peer by destination (AllowedIPs), encrypt,
/// send to the peer's endpoint (with offload: one UDP GSO send per run).
fn tun_loop(s: &Shared, q: usize) {
    let tun = s.tuns[q].as_raw_fd();
    let udp = &s.udps[q];
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET];
    let mut segs: Vec<u8> = Vec::with_capacity(2 * MAX_PACKET);
    let mut ranges = Vec::with_capacity(64);
    let mut batch = GsoBatch::new();
    // The batch stays open across reads while packets keep coming for the
    // same peer (e.g. a burst of ACKs), and is sent when the TUN runs dry.
    let mut open: Option<(Arc<Peer>, Option<SocketAddr>)> = None;
    let mut reads = 0usize;
    while !s.is_stopping() {
        let n = match sys::read(tun, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some((_, ep)) = open.take() {
                    batch.flush(udp, ep, s.offload);
                }
                reads = 0;
                sys::wait_readable(tun, POLL_MS);
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "TUN read");
                continue;
            }
        };
        segs.clear();
        ranges.clear();
        if s.offload {
            let Some(hdr) = VnetHdr::parse(&buf[..n]) else {
                continue;
            };
            if let Err(e) = segment(&hdr, &buf[VNET_HDR_LEN..n], &mut segs, &mut ranges) {
                tracing::debug!(error = ?e, "dropping a TUN packet that cannot be segmented");
                continue;
            }
        } else {
            segs.extend_from_slice(&buf[..n]);
            ranges.push(0..n);
        }
        let Some(first) = ranges.first() else {
            continue;
        };
        // All segments of one read share the destination.
        let Some(dst) = Tunn::dst_address(&segs[first.clone()]) else {
            continue;
        };
        let Some(peer) = s.table.read().allowed.lookup(dst).cloned() else {
            continue;
        };
        let mut st = peer.state.lock();
        let ep = st.endpoint;
        if let Some((prev, prev_ep)) = &open
            && (!Arc::ptr_eq(prev, &peer) || *prev_ep != ep)
        {
            batch.flush(udp, *prev_ep, s.offload);
        }
        for r in &ranges {
            let seg = &segs[r.clone()];
            if batch.len() + seg.len() + DATA_OVERHEAD > GSO_MAX_BYTES {
                batch.flush(udp, ep, s.offload);
            }
            match st.tunn.encapsulate(seg, batch.room()) {
                TunnResult::WriteToNetwork(p) => {
                    let len = p.len();
                    if len == seg.len() + DATA_OVERHEAD {
                        batch.commit(len, udp, ep, s.offload);
                    } else if let Some(ep) = ep {
                        // A handshake initiation (no session yet): alone.
                        let _ = udp.send_to(p, ep);
                    }
                }
                TunnResult::Err(e) => tracing::debug!(error = ?e, "encapsulate"),
                _ => {}
            }
        }
        drop(st);
        open = Some((peer, ep));
        reads += 1;
        if reads >= MAX_READS_PER_BATCH {
            batch.flush(udp, ep, s.offload);
            open = None;
            reads = 0;
        }
    }
}

/// Bound on TUN reads gathered into one send, so a busy TUN never delays
/// packets by more than this many reads.
const MAX_READS_PER_BATCH: usize = 64;

const DATA_OVERHEAD: usize = 32;
/// UDP's length limit for one GSO send (IPv4), with margin.
const GSO_MAX_BYTES: usize = 65_000;

/// Encrypted datagrams for one endpoint, laid end to end for UDP GSO: all of
/// one size, except possibly the last.
struct GsoBatch {
    buf: Vec<u8>,
    len: usize,
    seg: usize,
    count: usize,
    closed: bool,
}

impl GsoBatch {
    fn new() -> GsoBatch {
        GsoBatch {
            buf: vec![0u8; GSO_MAX_BYTES + MAX_PACKET + 64],
            len: 0,
            seg: 0,
            count: 0,
            closed: false,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Where the next datagram is written.
    fn room(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Accepts the datagram just written at `room()`.
    fn commit(&mut self, n: usize, udp: &Udp, ep: Option<SocketAddr>, offload: bool) {
        if !offload {
            if let Some(ep) = ep {
                let _ = udp.send_to(&self.buf[self.len..self.len + n], ep);
            }
            return;
        }
        if self.count > 0 && (self.closed || n > self.seg) {
            // It cannot join this run: send the run, move it to the front.
            let start = self.len;
            self.flush(udp, ep, offload);
            self.buf.copy_within(start..start + n, 0);
        }
        if self.count == 0 {
            self.seg = n;
        } else if n < self.seg {
            self.closed = true; // a shorter datagram ends the run
        }
        self.len += n;
        self.count += 1;
    }

    fn flush(&mut self, udp: &Udp, ep: Option<SocketAddr>, offload: bool) {
        if self.count > 0 && offload {
            match ep {
                Some(ep) if self.count > 1 => {
                    if let Err(e) = udp.send_gso(&self.buf[..self.len], self.seg as u16, ep) {
                        tracing::debug!(error = %e, "UDP GSO send");
                    }
                }
                Some(ep) => {
                    for chunk in self.buf[..self.len].chunks(self.seg) {
                        let _ = udp.send_to(chunk, ep);
                    }
                }
                None => {}
            }
        }
        self.len = 0;
        self.count = 0;
        self.seg = 0;
        self.closed = false;
    }
}

/// UDP → TUN: find the peer (receiver index, or the static key of a
/// handshake initiation), decrypt, check the inner source against its
/// AllowedIPs, write to the TUN.
fn udp_loop(s: &Shared, q: usize) {
    let tun = s.tuns[q].as_raw_fd();
    let udp = &s.udps[q];
    let mut buf = vec![0u8; MAX_PACKET];
    let mut inbound = Inbound {
        buf: vec![0u8; 4 * MAX_PACKET],
        ranges: Vec::with_capacity(128),
        pos: 0,
        scratch: Vec::with_capacity(2 * MAX_PACKET),
    };
    while !s.is_stopping() {
        let (n, src, seg) = match sys::recv_gro(udp.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sys::wait_readable(udp.as_raw_fd(), POLL_MS);
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        for datagram in buf[..n].chunks(seg.unwrap_or(n).max(1)) {
            handle_datagram(s, udp, tun, datagram, src, &mut inbound);
        }
        inbound.flush(tun, s.offload);
    }
}

/// Decrypted packets of one UDP read, written to the TUN together (merged
/// into GSO packets when offload is on).
struct Inbound {
    buf: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    pos: usize,
    scratch: Vec<u8>,
}

impl Inbound {
    fn flush(&mut self, tun: std::os::fd::RawFd, offload: bool) {
        if self.ranges.is_empty() {
            return;
        }
        if offload {
            let packets: Vec<&[u8]> = self.ranges.iter().map(|r| &self.buf[r.clone()]).collect();
            coalesce_and_write(&packets, &mut self.scratch, |b| {
                if let Err(e) = sys::write(tun, b) {
                    tracing::debug!(error = %e, len = b.len(), "TUN write");
                }
            });
        } else {
            for r in &self.ranges {
                let _ = sys::write(tun, &self.buf[r.clone()]);
            }
        }
        self.ranges.clear();
        self.pos = 0;
    }
}

fn find_peer(s: &Shared, udp: &Udp, datagram: &[u8], src: SocketAddr) -> Option<Arc<Peer>> {
    let packet = Tunn::parse_incoming_packet(datagram).ok()?;
    let idx = match packet {
        Packet::HandshakeInit(ref p) => {
            let ks = s.key.read();
            // Check mac1 (and under load the cookie) before spending a
            // Diffie-Hellman on an unauthenticated packet.
            let mut cookie = [0u8; 64];
            match ks
                .rate_limiter
                .verify_packet(Some(src.ip()), datagram, &mut cookie)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    let _ = udp.send_to(reply, src);
                    return None;
                }
                Err(_) => return None,
            }
            let half = parse_handshake_anon(&ks.secret, &ks.public, p).ok()?;
            return s.table.read().by_key.get(&half.peer_static_public).cloned();
        }
        Packet::HandshakeResponse(p) => p.receiver_idx,
        Packet::PacketCookieReply(p) => p.receiver_idx,
        Packet::PacketData(p) => p.receiver_idx,
    };
    s.table.read().by_index.get(&(idx >> 8)).cloned()
}

fn handle_datagram(
    s: &Shared,
    udp: &Udp,
    tun: std::os::fd::RawFd,
    datagram: &[u8],
    src: SocketAddr,
    inb: &mut Inbound,
) {
    let Some(peer) = find_peer(s, udp, datagram, src) else {
        return;
    };
    if inb.pos + datagram.len() + 64 > inb.buf.len() {
        inb.flush(tun, s.offload);
    }
    let mut st = peer.state.lock();
    let mut first = true;
    loop {
        let room = &mut inb.buf[inb.pos..];
        let res = if first {
            st.tunn.decapsulate(Some(src.ip()), datagram, room)
        } else {
            st.tunn.decapsulate(None, &[], room)
        };
        let mut again = false;
        let mut accepted = None;
        match res {
            TunnResult::WriteToNetwork(p) => {
                let _ = udp.send_to(p, src);
                again = true;
            }
            TunnResult::WriteToTunnelV4(p, from) => {
                accepted = Some((p.len(), IpAddr::V4(from)));
            }
            TunnResult::WriteToTunnelV6(p, from) => {
                accepted = Some((p.len(), IpAddr::V6(from)));
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => {
                tracing::debug!(error = ?e, %src, "decapsulate");
                return;
            }
        }
        if let Some((len, from)) = accepted
            && source_allowed(s, &peer, from)
        {
            inb.ranges.push(inb.pos..inb.pos + len);
            inb.pos += len;
        }
        if first {
            // Authenticated: the peer is where this came from (roaming).
            st.endpoint = Some(src);
            first = false;
        }
        // After WriteToNetwork, boringtun wants empty calls until Done to
        // flush packets queued while the handshake was in flight.
        if !again {
            break;
        }
        if inb.pos + MAX_PACKET > inb.buf.len() {
            inb.flush(tun, s.offload);
        }
    }
}

fn source_allowed(s: &Shared, peer: &Arc<Peer>, from: IpAddr) -> bool {
    let ok = s
        .table
        .read()
        .allowed
        .lookup(from)
        .is_some_and(|p| Arc::ptr_eq(p, peer));
    if !ok {
        tracing::debug!(%from, "dropping inbound packet: source not in the peer's AllowedIPs");
    }
    ok
}

/// Drives boringtun's timers (handshake retries, rekey, keepalives) and
/// resets the handshake rate limiter every second.
fn timer_loop(s: &Shared) {
    let mut out = vec![0u8; MAX_PACKET];
    let mut last_reset = Instant::now();
    while !s.is_stopping() {
        std::thread::sleep(TIMER_TICK);
        if last_reset.elapsed() >= Duration::from_secs(1) {
            s.key.read().rate_limiter.reset_count();
            last_reset = Instant::now();
        }
        let peers: Vec<Arc<Peer>> = s.table.read().by_key.values().cloned().collect();
        for p in peers {
            let mut st = p.state.lock();
            let ep = st.endpoint;
            match st.tunn.update_timers(&mut out) {
                TunnResult::WriteToNetwork(pkt) => {
                    if let Some(ep) = ep {
                        let _ = s.udps[0].send_to(pkt, ep);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(error = ?e, "timers"),
                _ => {}
            }
        }
    }
}
