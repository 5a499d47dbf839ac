//! Shared harness for the root integration tests: two "node" namespaces on a
//! bridge underlay, devices started inside them, TCP helpers that run inside
//! a namespace, and a capture on the underlay bridge.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_testbed::{Bridge, Capture, NetNs, Wait, unique_name};
use mesh_wireguard::{Device, DeviceConfig, KeyStore, PeerConfig, WireGuardKey, netns};

/// The marker string tests send through the tunnel; it must never be seen
/// in clear on the underlay.
pub const MARKER: &str = "MESHWORK-PLAINTEXT-MARKER-7f3a";

/// The WireGuard port inside the node namespaces (the DESIGN default; each
/// node has its own namespace, so no host port is used).
pub const PORT: u16 = 51871;

/// One node: a namespace on the underlay with a state dir.
pub struct Node {
    /// The device (dropped first: it closes the TUN and removes the socket).
    pub dev: Option<Device>,
    /// Or a wireguard-go process.
    pub go: Option<WireguardGo>,
    pub ns: NetNs,
    pub underlay: Ipv4Addr,
    pub tunnel: Ipv4Addr,
    pub ifname: String,
    pub state: tempfile::TempDir,
    /// Its port on the underlay bridge (in the bridge's namespace).
    pub bridge_port: String,
}

impl Node {
    pub fn netns_path(&self) -> PathBuf {
        netns::named(self.ns.name())
    }

    pub fn store(&self) -> KeyStore {
        KeyStore::in_state_dir(self.state.path())
    }

    /// Starts our device in the node's namespace and puts the tunnel address on it.
    /// Starts our device with the default queues and offload.
    pub fn start_ours(&mut self) {
        let d = DeviceConfig::default();
        self.start_ours_with(d.queues, d.offload);
    }

    /// Starts our device with `queues` TUN queues, offload on or off.
    pub fn start_ours_with(&mut self, queues: usize, offload: bool) {
        let store = self.store();
        let cfg = DeviceConfig {
            ifname: self.ifname.clone(),
            listen_port: PORT,
            queues,
            offload,
            ..DeviceConfig::default()
        };
        let dev = netns::run_in(&self.netns_path(), move || {
            let key = store.load_or_generate()?;
            Device::start(&cfg, key)
        })
        .unwrap_or_else(|e| panic!("start device in {}: {e}", self.ns.name()));
        self.ns.addr(&self.ifname, &format!("{}/24", self.tunnel));
        self.dev = Some(dev);
    }

    pub fn dev(&self) -> &Device {
        self.dev.as_ref().expect("device started")
    }

    pub fn public_key(&self) -> WireGuardKey {
        match &self.go {
            Some(go) => go.public_key,
            None => self.dev().public_key(),
        }
    }

    /// Starts wireguard-go (the reference userspace implementation) in the
    /// node's namespace, with a key and the WireGuard port set by `wg set`.
    pub fn start_wireguard_go(&mut self) {
        let sock =
            PathBuf::from(mesh_wireguard::DEFAULT_UAPI_DIR).join(format!("{}.sock", self.ifname));
        let child = self
            .ns
            .command("wireguard-go")
            .args(["-f", &self.ifname])
            // wireguard-go refuses to run on Linux without this.
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wireguard-go");
        let key = mesh_wireguard::PrivateKey::generate().unwrap();
        let key_file = self.state.path().join("go.key");
        self.store().store(&key).unwrap();
        std::fs::rename(self.store().path(), &key_file).unwrap();
        let go = WireguardGo {
            child,
            sock: sock.clone(),
            public_key: key.public_key(),
        };
        Wait::new(format!("wireguard-go creating {}", sock.display()))
            .timeout(Duration::from_secs(10))
            .interval(Duration::from_millis(50))
            .until(|| sock.exists());
        self.go = Some(go);
        self.ns.run_ok(
            "wg",
            &[
                "set",
                &self.ifname,
                "private-key",
                key_file.to_str().unwrap(),
                "listen-port",
                &PORT.to_string(),
            ],
        );
        self.ns.addr(&self.ifname, &format!("{}/24", self.tunnel));
    }

    /// Adds `peer` to this node's device with the stock `wg` tool.
    pub fn wg_set_peer(&self, peer: &Node) {
        self.ns.run_ok(
            "wg",
            &[
                "set",
                &self.ifname,
                "peer",
                &peer.public_key().to_string(),
                "endpoint",
                &format!("{}:{PORT}", peer.underlay),
                "allowed-ips",
                &format!("{}/32", peer.tunnel),
            ],
        );
    }

    /// This node as a peer of another node.
    pub fn as_peer(&self, key: WireGuardKey) -> PeerConfig {
        PeerConfig {
            public_key: key,
            endpoint: Some(SocketAddr::from((self.underlay, PORT))),
            allowed_ips: vec![format!("{}/32", self.tunnel).parse().unwrap()],
            persistent_keepalive: None,
        }
    }

    /// Pings `to` from this node: 3 packets, all must come back.
    pub fn ping(&self, to: Ipv4Addr) {
        let out = self.ns.run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "3", &to.to_string()],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(" 0% packet loss"),
            "ping {to} from {}: {text}{}",
            self.ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A wireguard-go process, stopped (and its socket removed) on drop.
pub struct WireguardGo {
    child: Child,
    sock: PathBuf,
    pub public_key: WireGuardKey,
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// Two nodes on one bridge underlay 192.168.90.0/24, tunnel net 10.90.0.0/24.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub bridge: Bridge,
}

impl Pair {
    /// The namespaces and underlay only (no devices).
    pub fn new() -> Pair {
        Pair::build(false)
    }

    /// Like [`Pair::new`], with IPv6 on the underlay too: node i also has
    /// fd90::i/64 on u0.
    pub fn with_ipv6_underlay() -> Pair {
        Pair::build(true)
    }

    fn build(ipv6: bool) -> Pair {
        mesh_testbed::require_root();
        let bridge = Bridge::new();
        if !ipv6 {
            disable_ipv6(bridge.ns());
        }
        let mk = |i: u8| {
            let ns = NetNs::new("wg");
            if !ipv6 {
                disable_ipv6(&ns);
            }
            let bridge_port = bridge.attach(&ns, "u0", &format!("192.168.90.{i}/24"));
            if ipv6 {
                ns.run_ok(
                    "ip",
                    &[
                        "-6",
                        "addr",
                        "add",
                        &format!("fd90::{i}/64"),
                        "dev",
                        "u0",
                        "nodad",
                    ],
                );
            }
            Node {
                dev: None,
                go: None,
                ns,
                underlay: Ipv4Addr::new(192, 168, 90, i),
                tunnel: Ipv4Addr::new(10, 90, 0, i),
                ifname: unique_name("mwg"),
                state: tempfile::tempdir().expect("state dir"),
                bridge_port,
            }
        };
        let a = mk(1);
        let b = mk(2);
        Pair { a, b, bridge }
    }

    /// Both nodes running our device, peered with each other.
    pub fn ours() -> Pair {
        let mut p = Pair::new();
        p.a.start_ours();
        p.b.start_ours();
        p.peer_ours();
        p
    }

    /// (Re)applies each node as the other's only peer.
    pub fn peer_ours(&self) {
        let sync = self
            .a
            .dev()
            .apply_peers(&[self.b.as_peer(self.b.public_key())]);
        assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
        let sync = self
            .b
            .dev()
            .apply_peers(&[self.a.as_peer(self.a.public_key())]);
        assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    }
}

/// No IPv6 on the test links, so the capture holds only what the test sends
/// (plus ARP).
pub fn disable_ipv6(ns: &NetNs) {
    ns.run_ok("sysctl", &["-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.run_ok(
        "sysctl",
        &["-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"],
    );
}

/// A TCP server in `node`'s namespace on `ip`: accepts one connection,
/// reads everything, answers with the same bytes. Returns its address and
/// the thread handle (yielding the bytes read).
pub fn echo_server(node: &Node, ip: Ipv4Addr) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = netns::spawn_in(&node.netns_path(), move || {
        let l = TcpListener::bind((ip, 0)).expect("bind echo server");
        tx.send(l.local_addr().unwrap()).unwrap();
        let (mut c, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read request");
        c.write_all(&got).expect("echo");
        Ok(got)
    })
    .expect("spawn server thread");
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server address");
    (addr, std::thread::spawn(move || h.join().unwrap().unwrap()))
}

/// Sends `payload` from `node`'s namespace to an echo server and checks the
/// echo.
pub fn tcp_roundtrip(node: &Node, to: SocketAddr, payload: Vec<u8>) {
    let expect = payload.clone();
    let got = netns::run_in(&node.netns_path(), move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(&payload).expect("send");
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).expect("read echo");
        Ok(back)
    })
    .unwrap();
    assert!(
        got == expect,
        "echo from {to} differs: {} bytes back, {} sent",
        got.len(),
        expect.len()
    );
}

/// TCP both ways between the nodes' tunnel addresses with a payload that
/// carries the marker.
pub fn tcp_both_ways(a: &Node, b: &Node) {
    for (from, to) in [(a, b), (b, a)] {
        let payload: Vec<u8> = MARKER.repeat(2000).into_bytes();
        let (addr, server) = echo_server(to, to.tunnel);
        tcp_roundtrip(from, addr, payload.clone());
        assert_eq!(server.join().unwrap(), payload);
    }
}

/// A capture (tcpdump, full packets) on `node`'s port of the underlay
/// bridge. Not on `br0` itself: the bridge device only sees frames addressed
/// to it (or flooded), not those it forwards between ports once MACs are
/// learned.
pub fn capture(bridge: &Bridge, node: &Node) -> Capture {
    Capture::start(bridge.ns(), &node.bridge_port)
}

/// What a capture holds, by kind.
#[derive(Debug, Default)]
pub struct WireSummary {
    /// IPv4 UDP frames with the WireGuard port as source or destination.
    pub wireguard_udp: usize,
    /// ARP frames.
    pub arp: usize,
    /// IGMP membership reports the kernel sends on its own (no payload).
    pub igmp: usize,
    /// Anything else, described.
    pub other: Vec<String>,
    /// Frames containing the marker.
    pub marker_frames: usize,
}

pub fn summarize(frames: &[Vec<u8>], port: u16) -> WireSummary {
    let mut s = WireSummary::default();
    for f in frames {
        if f.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
            s.marker_frames += 1;
        }
        if f.len() < 14 {
            s.other.push("runt frame".into());
            continue;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        match ethertype {
            0x0806 => s.arp += 1,
            0x0800 => {
                let ip = &f[14..];
                let ihl = ((ip[0] & 0x0f) as usize) * 4;
                let proto = ip[9];
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                if proto == 2 {
                    s.igmp += 1;
                    continue;
                }
                if proto == 17 {
                    let sp = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
                    let dp = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
                    if sp == port || dp == port {
                        s.wireguard_udp += 1;
                        continue;
                    }
                }
                s.other.push(format!("IPv4 proto {proto} {src} -> {dst}"));
            }
            t => s.other.push(format!("ethertype {t:#06x}")),
        }
    }
    s
}
