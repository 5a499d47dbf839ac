//! State shared by the device's threads (TUN, UDP, timer and UAPI loops):
//! the key, the peer table and the sockets, and the configuration changes
//! on them (peer upsert/remove, key replacement, UAPI `set=1`).
//!
//! Lock order: key before table before a peer's state; the receive path
//! takes them in that order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::SystemTime;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use mesh_api::WireGuardKey;
use parking_lot::{Mutex, RwLock};

use crate::allowed_ips::AllowedIps;
use crate::error::{Error, Result};
use crate::key::PrivateKey;
use crate::peers::PeerStatus;
use crate::sys;
use crate::uapi::{DeviceInfo, PeerInfo, PeerUpdate, SetRequest};
use crate::uapi_server::UapiDevice;
use crate::udp_socket::Udp;

const HANDSHAKES_PER_SEC_BEFORE_COOKIES: u64 = 100;
/// How long a loop blocks waiting for its fd before checking for stop.
pub(crate) const POLL_MS: i32 = 200;
/// The largest packet read from the TUN or the socket.
pub(crate) const MAX_PACKET: usize = 65536;

pub(crate) struct Peer {
    pub(crate) public: [u8; 32],
    pub(crate) index: u32,
    pub(crate) state: Mutex<PeerState>,
}

pub(crate) struct PeerState {
    pub(crate) tunn: Tunn,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) allowed_ips: Vec<IpNet>,
    pub(crate) keepalive: Option<u16>,
    pub(crate) preshared: Option<[u8; 32]>,
    /// Counters of tunnels replaced by a new one (keepalive/psk change).
    pub(crate) rx_base: u64,
    pub(crate) tx_base: u64,
    /// A handshake was sent unprompted (peer just added) and not answered:
    /// the other side may not have known us yet. The first packet to send
    /// starts a fresh handshake instead of waiting the 5 s retry behind it.
    pub(crate) speculative: bool,
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) by_key: HashMap<[u8; 32], Arc<Peer>>,
    pub(crate) by_index: HashMap<u32, Arc<Peer>>,
    pub(crate) allowed: AllowedIps<Arc<Peer>>,
}

pub(crate) struct KeyState {
    pub(crate) private: PrivateKey,
    pub(crate) secret: StaticSecret,
    pub(crate) public: PublicKey,
    pub(crate) rate_limiter: Arc<RateLimiter>,
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
    pub(crate) ifname: String,
    pub(crate) listen_port: u16,
    pub(crate) key: RwLock<KeyState>,
    pub(crate) table: RwLock<Table>,
    pub(crate) tuns: Vec<OwnedFd>,
    pub(crate) udps: Vec<Udp>,
    pub(crate) fwmark: AtomicU32,
    pub(crate) offload: bool,
    pub(crate) next_index: AtomicU32,
    pub(crate) stop: AtomicBool,
    /// Set when the TUN interface was deleted under the device.
    lost: AtomicBool,
    /// Serialises configuration changes (UAPI set, apply_peers, rotation).
    pub(crate) config_lock: Mutex<()>,
}

impl Shared {
    pub(crate) fn new(
        ifname: String,
        listen_port: u16,
        key: PrivateKey,
        tuns: Vec<OwnedFd>,
        udps: Vec<Udp>,
        fwmark: u32,
        offload: bool,
    ) -> Shared {
        Shared {
            ifname,
            listen_port,
            key: RwLock::new(KeyState::new(key)),
            table: RwLock::new(Table::default()),
            tuns,
            udps,
            fwmark: AtomicU32::new(fwmark),
            offload,
            next_index: AtomicU32::new(1),
            stop: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            config_lock: Mutex::new(()),
        }
    }

    /// Tells every loop to return at its next poll.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The TUN interface was deleted: every loop stops, and
    /// [`Shared::lost`] says why.
    pub(crate) fn interface_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.request_stop();
    }

    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn set_private_key(&self, key: PrivateKey) {
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

    pub(crate) fn remove_peer(&self, key: &[u8; 32]) {
        let mut t = self.table.write();
        if let Some(p) = t.by_key.remove(key) {
            t.by_index.remove(&p.index);
            t.allowed.retain(|_, v| !Arc::ptr_eq(v, &p));
        }
    }

    /// Applies one UAPI peer section (also used by apply_peers).
    pub(crate) fn upsert_peer(&self, up: &PeerUpdate) {
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
                        speculative: false,
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
            st.speculative = true;
        }
    }

    /// Every peer's state, sorted by public key.
    pub(crate) fn peer_infos(&self) -> Vec<PeerInfo> {
        let table = self.table.read();
        let now = SystemTime::now();
        let mut out: Vec<PeerInfo> = table
            .by_key
            .values()
            .map(|p| {
                let st = p.state.lock();
                let (since, tx, rx, _, _) = st.tunn.stats();
                PeerInfo {
                    status: PeerStatus {
                        public_key: WireGuardKey::from_bytes(p.public),
                        endpoint: st.endpoint,
                        allowed_ips: st.allowed_ips.clone(),
                        persistent_keepalive: st.keepalive,
                        last_handshake: since.and_then(|d| now.checked_sub(d)),
                        rx_bytes: st.rx_base + rx as u64,
                        tx_bytes: st.tx_base + tx as u64,
                    },
                    preshared_key: st.preshared,
                }
            })
            .collect();
        out.sort_by_key(|p| *p.status.public_key.as_bytes());
        out
    }
}

/// The UAPI server's view of the device: `get=1` reads this state, `set=1`
/// changes it.
impl UapiDevice for Shared {
    fn is_stopping(&self) -> bool {
        Shared::is_stopping(self)
    }

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            private_key: Some(*self.key.read().private.as_bytes()),
            listen_port: self.listen_port,
            fwmark: self.fwmark.load(Ordering::Relaxed),
            peers: self.peer_infos(),
        }
    }

    fn apply_set(&self, req: &SetRequest) -> Result<()> {
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
}
