//! Our device against itself between two real network namespaces (root).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{MARKER, PORT, Pair, capture, summarize, tcp_both_ways};
use mesh_wireguard::{Error, PeerConfig, WireGuardKey, netns};

#[test]
fn ours_to_ours_ping_and_tcp_both_ways() {
    let p = Pair::ours();
    p.a.ping(p.b.tunnel);
    p.b.ping(p.a.tunnel);
    tcp_both_ways(&p.a, &p.b);
    // Both sides saw a handshake and counted bytes.
    for n in [&p.a, &p.b] {
        let peers = n.dev().peers();
        assert_eq!(peers.len(), 1);
        assert!(peers[0].last_handshake.is_some(), "{peers:?}");
        assert!(
            peers[0].rx_bytes > 60_000 && peers[0].tx_bytes > 60_000,
            "{peers:?}"
        );
    }
}

#[test]
fn two_queues_with_offload_talk_to_one_queue_without_offload() {
    let mut p = Pair::new();
    p.a.start_ours_with(2, true);
    p.b.start_ours_with(1, false);
    p.peer_ours();
    p.a.ping(p.b.tunnel);
    p.b.ping(p.a.tunnel);
    // Large transfers both ways: TSO/GSO/GRO on A, one packet per syscall on B.
    for _ in 0..3 {
        tcp_both_ways(&p.a, &p.b);
    }
}

#[test]
fn ipv6_underlay_endpoints_carry_the_tunnel() {
    let mut p = Pair::with_ipv6_underlay();
    p.a.start_ours();
    p.b.start_ours();
    for (me, other, ep) in [
        (&p.a, &p.b, "[fd90::2]:51871"),
        (&p.b, &p.a, "[fd90::1]:51871"),
    ] {
        let mut peer = other.as_peer(other.public_key());
        peer.endpoint = Some(ep.parse().unwrap());
        let sync = me.dev().apply_peers(&[peer]);
        assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    }
    p.a.ping(p.b.tunnel);
    p.b.ping(p.a.tunnel);
    tcp_both_ways(&p.a, &p.b);
    let dump = p.a.ns.run_ok("wg", &["show", &p.a.ifname, "endpoints"]);
    assert!(dump.contains("[fd90::2]:51871"), "{dump}");
}

#[test]
fn wire_carries_only_wireguard_and_the_plaintext_control_shows_the_marker() {
    let p = Pair::ours();
    // Through the tunnel: only UDP to/from the WireGuard port (and ARP).
    let cap = capture(&p.bridge, &p.a);
    p.a.ping(p.b.tunnel);
    tcp_both_ways(&p.a, &p.b);
    let wire = summarize(&cap.stop().frames(), PORT);
    assert!(
        wire.wireguard_udp > 20,
        "expected WireGuard packets on the wire: {wire:?}"
    );
    assert!(
        wire.other.is_empty(),
        "non-WireGuard traffic on the wire: {wire:?}"
    );
    assert_eq!(
        wire.marker_frames, 0,
        "plaintext marker seen on the wire: {wire:?}"
    );

    // Control: the same exchange over the underlay addresses (no tunnel)
    // must show the marker, or the check above proves nothing.
    let cap = capture(&p.bridge, &p.a);
    let payload = MARKER.repeat(10).into_bytes();
    let (addr, server) = common::echo_server(&p.b, p.b.underlay);
    common::tcp_roundtrip(&p.a, addr, payload.clone());
    assert_eq!(server.join().unwrap(), payload);
    let plain = summarize(&cap.stop().frames(), PORT);
    assert!(
        plain.marker_frames > 0,
        "the capture cannot see plaintext: {plain:?}"
    );
}

#[test]
fn wg_show_dump_reports_our_key_peers_and_a_handshake_time() {
    let p = Pair::ours();
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    p.a.ping(p.b.tunnel);
    let dump = p.a.ns.run_ok("wg", &["show", &p.a.ifname, "dump"]);
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines.len(),
        2,
        "one interface line and one peer line: {dump}"
    );
    let dev = &lines[0];
    assert_eq!(dev[1], p.a.public_key().to_string(), "{dump}");
    assert_eq!(dev[2], PORT.to_string(), "{dump}");
    // The private key shown is the one in the state dir.
    let stored = std::fs::read_to_string(p.a.store().path()).unwrap();
    assert_eq!(dev[0], stored.trim());
    let peer = &lines[1];
    assert_eq!(peer[0], p.b.public_key().to_string(), "{dump}");
    assert_eq!(peer[2], format!("{}:{PORT}", p.b.underlay), "{dump}");
    assert_eq!(peer[3], format!("{}/32", p.b.tunnel), "{dump}");
    let handshake: u64 = peer[4].parse().unwrap();
    assert!(
        handshake >= before && handshake <= before + 30,
        "latest handshake {handshake}, test started {before}"
    );
    let rx: u64 = peer[5].parse().unwrap();
    let tx: u64 = peer[6].parse().unwrap();
    assert!(rx > 0 && tx > 0, "{dump}");
    // The human form works too.
    let show = p.a.ns.run_ok("wg", &["show", &p.a.ifname]);
    assert!(show.contains("latest handshake:"), "{show}");
}

#[test]
fn wg_set_adds_and_removes_peers_on_our_device() {
    let p = Pair::new();
    let mut a = p.a;
    let mut b = p.b;
    a.start_ours();
    b.start_ours();
    // Configure both sides with the stock tool only.
    for (me, other) in [(&a, &b), (&b, &a)] {
        me.ns.run_ok(
            "wg",
            &[
                "set",
                &me.ifname,
                "peer",
                &other.public_key().to_string(),
                "endpoint",
                &format!("{}:{PORT}", other.underlay),
                "allowed-ips",
                &format!("{}/32", other.tunnel),
                "persistent-keepalive",
                "25",
            ],
        );
    }
    a.ping(b.tunnel);
    let peers = a.dev().peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].persistent_keepalive, Some(25));
    a.ns.run_ok(
        "wg",
        &[
            "set",
            &a.ifname,
            "peer",
            &b.public_key().to_string(),
            "remove",
        ],
    );
    assert!(a.dev().peers().is_empty());
    let out =
        a.ns.run("ping", &["-c", "1", "-W", "1", &b.tunnel.to_string()]);
    assert!(
        !out.status.success(),
        "ping must fail once the peer is removed"
    );
}

/// A client streams chunks containing the marker to a server through the
/// tunnel; the server records when each chunk arrives.
struct Stream {
    stop: Arc<AtomicBool>,
    client: std::thread::JoinHandle<u64>,
    server: std::thread::JoinHandle<(u64, Duration)>,
    arrivals: Arc<parking_lot::Mutex<Vec<Instant>>>,
}

fn start_stream(p: &Pair) -> Stream {
    let arrivals = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let ip = p.b.tunnel;
    let arr = arrivals.clone();
    let server = netns::spawn_in(&p.b.netns_path(), move || {
        let l = TcpListener::bind((ip, 0)).unwrap();
        tx.send(l.local_addr().unwrap()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        let mut max_gap = Duration::ZERO;
        let mut last = Instant::now();
        loop {
            let n = c.read(&mut buf).expect("stream read (connection broken?)");
            if n == 0 {
                break;
            }
            let now = Instant::now();
            max_gap = max_gap.max(now - last);
            last = now;
            arr.lock().push(now);
            total += n as u64;
        }
        Ok((total, max_gap))
    })
    .unwrap();
    let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let st = stop.clone();
    let client = netns::spawn_in(&p.a.netns_path(), move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        let chunk = MARKER.repeat(30).into_bytes();
        let mut sent = 0u64;
        while !st.load(Ordering::Relaxed) {
            c.write_all(&chunk)
                .expect("stream write (connection broken?)");
            sent += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(sent)
    })
    .unwrap();
    Stream {
        stop,
        client: std::thread::spawn(move || client.join().unwrap().unwrap()),
        server: std::thread::spawn(move || server.join().unwrap().unwrap()),
        arrivals,
    }
}

/// The bound this test asserts for traffic to resume after the peer learns
/// the new key.
const ROTATION_RECOVERY_BOUND: Duration = Duration::from_secs(3);
/// How long the new key takes to reach the other node in this test.
const PROPAGATION: Duration = Duration::from_secs(1);

#[test]
fn key_rotation_under_a_tcp_stream_recovers_with_no_plaintext_on_the_wire() {
    let p = Pair::ours();
    p.a.ping(p.b.tunnel);
    let cap = capture(&p.bridge, &p.a);
    let stream = start_stream(&p);
    std::thread::sleep(Duration::from_secs(1));

    let old = p.a.public_key();
    let new = p.a.dev().rotate_key(&p.a.store()).unwrap();
    assert_ne!(old, new);
    assert_eq!(p.a.public_key(), new);
    // The agent publishes the new key; B's agent applies it after the
    // annotation has propagated (PROPAGATION later).
    std::thread::sleep(PROPAGATION);
    let sync = p.b.dev().apply_peers(&[p.a.as_peer(new)]);
    assert_eq!((sync.added.len(), sync.removed.len()), (1, 1), "{sync:?}");
    let applied_at = Instant::now();

    // Wait until data flows again after the rotation.
    let deadline = applied_at + ROTATION_RECOVERY_BOUND;
    let resumed = loop {
        let after: Vec<Instant> = stream
            .arrivals
            .lock()
            .iter()
            .copied()
            .filter(|t| *t > applied_at)
            .collect();
        if after.len() > 20 {
            break after[0] - applied_at;
        }
        assert!(
            Instant::now() < deadline,
            "stream did not recover within {ROTATION_RECOVERY_BOUND:?} of the rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(1));
    stream.stop.store(true, Ordering::Relaxed);
    let sent = stream.client.join().unwrap();
    let (received, max_gap) = stream.server.join().unwrap();
    assert_eq!(
        sent, received,
        "every byte arrived over the same connection"
    );
    eprintln!(
        "key rotation: first data {resumed:?} after the peer update, longest gap between reads {max_gap:?}"
    );
    assert!(
        max_gap < PROPAGATION + ROTATION_RECOVERY_BOUND,
        "gap {max_gap:?}"
    );

    // The stored key is the new one, and B only knows the new key.
    assert_eq!(p.a.store().load().unwrap().unwrap().public_key(), new);
    let b_peers: Vec<WireGuardKey> = p.b.dev().peers().iter().map(|s| s.public_key).collect();
    assert_eq!(b_peers, vec![new]);

    let wire = summarize(&cap.stop().frames(), PORT);
    assert!(
        wire.other.is_empty(),
        "non-WireGuard traffic during rotation: {wire:?}"
    );
    assert_eq!(wire.marker_frames, 0, "plaintext during rotation: {wire:?}");
    assert!(wire.wireguard_udp > 100, "{wire:?}");
}

#[test]
fn restart_keeps_the_key_removes_tun_and_socket_and_traffic_resumes() {
    let mut p = Pair::ours();
    p.a.ping(p.b.tunnel);
    let key_before = p.a.public_key();
    let sock = p.a.dev().uapi_path().to_path_buf();
    p.a.dev.take().unwrap().shutdown();
    assert!(!sock.exists(), "UAPI socket {} left behind", sock.display());
    let link = p.a.ns.run("ip", &["link", "show", &p.a.ifname]);
    assert!(
        !link.status.success(),
        "TUN {} left behind after shutdown",
        p.a.ifname
    );

    p.a.start_ours();
    assert_eq!(
        p.a.public_key(),
        key_before,
        "the key persists across restarts"
    );
    let sync = p.a.dev().apply_peers(&[p.b.as_peer(p.b.public_key())]);
    assert_eq!(sync.added.len(), 1);
    p.a.ping(p.b.tunnel);
    p.b.ping(p.a.tunnel);
    tcp_both_ways(&p.a, &p.b);
}

fn uapi(path: &std::path::Path, request: &str) -> String {
    let mut c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while !out.ends_with(b"\n\n") {
        let n = c.read(&mut b).unwrap();
        assert!(
            n > 0,
            "UAPI closed early: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn uapi_set_with_an_invalid_key_gets_errno_and_the_device_keeps_serving() {
    let p = Pair::ours();
    p.a.ping(p.b.tunnel);
    let sock = p.a.dev().uapi_path().to_path_buf();
    let before = uapi(&sock, "get=1\n\n");
    for bad in [
        "set=1\npublic_key=this-is-not-a-hex-key\nallowed_ip=10.0.0.0/8\n\n",
        "set=1\nprivate_key=zz\n\n",
        "set=1\nbogus_key=1\n\n",
    ] {
        let answer = uapi(&sock, bad);
        assert_eq!(answer, "errno=22\n\n", "request {bad:?}");
    }
    // Invalid requests are all-or-nothing: a valid peer line before a bad one
    // is not applied either.
    let k = "ab".repeat(32);
    let answer = uapi(
        &sock,
        &format!("set=1\npublic_key={k}\nallowed_ip=10.77.0.0/16\nallowed_ip=nonsense\n\n"),
    );
    assert_eq!(answer, "errno=22\n\n");
    assert_eq!(
        uapi(&sock, "get=1\n\n")
            .lines()
            .filter(|l| l.starts_with("public_key="))
            .count(),
        1
    );
    assert_eq!(
        before.lines().find(|l| l.starts_with("private_key=")),
        uapi(&sock, "get=1\n\n")
            .lines()
            .find(|l| l.starts_with("private_key="))
    );
    // The stock tool refuses a bad base64 key itself; our device is still fine.
    let out =
        p.a.ns
            .run("wg", &["set", &p.a.ifname, "peer", "not-base64!", "remove"]);
    assert!(!out.status.success());
    p.a.ping(p.b.tunnel);
}

#[test]
fn overlapping_allowed_ips_are_refused_naming_both_peers_and_valid_peers_are_kept() {
    let p = Pair::ours();
    let good = p.b.as_peer(p.b.public_key());
    let k1: WireGuardKey = mesh_wireguard::PrivateKey::generate().unwrap().public_key();
    let k2: WireGuardKey = mesh_wireguard::PrivateKey::generate().unwrap().public_key();
    let other = PeerConfig {
        public_key: k1,
        endpoint: Some("192.168.90.50:51871".parse().unwrap()),
        allowed_ips: vec!["10.50.0.0/16".parse().unwrap()],
        persistent_keepalive: Some(25),
    };
    let overlapping = PeerConfig {
        public_key: k2,
        endpoint: Some("192.168.90.51:51871".parse().unwrap()),
        allowed_ips: vec!["10.50.3.0/24".parse().unwrap()],
        persistent_keepalive: None,
    };
    let own = PeerConfig {
        public_key: p.a.public_key(),
        ..good.clone()
    };
    let sync =
        p.a.dev()
            .apply_peers(&[good.clone(), other.clone(), overlapping, own]);
    assert_eq!(sync.rejected.len(), 2, "{:?}", sync.rejected);
    let msg = sync.rejected[0].to_string();
    assert!(
        matches!(&sync.rejected[0], Error::AllowedIpsOverlap { peer, other, .. } if *peer == k2 && *other == k1),
        "{msg}"
    );
    assert!(
        msg.contains(&k1.to_string())
            && msg.contains(&k2.to_string())
            && msg.contains("10.50.3.0/24")
            && msg.contains("10.50.0.0/16"),
        "{msg}"
    );
    assert!(matches!(sync.rejected[1], Error::SelfPeer { .. }));
    let keys: Vec<WireGuardKey> = p.a.dev().peers().iter().map(|s| s.public_key).collect();
    let mut expect = vec![p.b.public_key(), k1];
    expect.sort();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(keys_sorted, expect);
    // The valid peer still carries traffic.
    p.a.ping(p.b.tunnel);

    // Applying the same set again changes nothing; dropping a peer removes it.
    let sync = p.a.dev().apply_peers(&[good.clone(), other]);
    assert!(
        sync.added.is_empty() && sync.updated.is_empty() && sync.removed.is_empty(),
        "{sync:?}"
    );
    let sync = p.a.dev().apply_peers(&[good]);
    assert_eq!(sync.removed, vec![k1]);
}

#[test]
fn inbound_packets_from_outside_the_peers_allowed_ips_are_dropped() {
    let p = Pair::ours();
    // B accepts only 10.90.0.99 from A, so A's packets (from 10.90.0.1)
    // decrypt fine but must not reach B's stack.
    let mut wrong = p.a.as_peer(p.a.public_key());
    wrong.allowed_ips = vec!["10.90.0.99/32".parse().unwrap()];
    let sync = p.b.dev().apply_peers(&[wrong]);
    assert_eq!(sync.updated.len(), 1, "{sync:?}");
    // What B's device delivered to B's stack: a TUN counts packets written
    // into it by the device as received.
    let delivered = || -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", p.b.ifname);
        p.b.ns.run_ok("cat", &[&path]).trim().parse().unwrap()
    };
    let delivered_before = delivered();
    let rx_before = p.b.dev().peers()[0].rx_bytes;
    let out = p.a.ns.run(
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "1", &p.b.tunnel.to_string()],
    );
    assert!(
        !out.status.success(),
        "ping must fail: B drops A's source address"
    );
    let b_view = &p.b.dev().peers()[0];
    assert!(
        b_view.rx_bytes >= rx_before + 3 * 84,
        "the pings did arrive and decrypt: {b_view:?}"
    );
    assert_eq!(
        delivered(),
        delivered_before,
        "no packet from a foreign source reached B's stack"
    );
    // With the right AllowedIPs the same packets pass.
    p.peer_ours();
    p.a.ping(p.b.tunnel);
}

#[test]
fn wg_showconf_then_setconf_round_trips_on_our_device() {
    let p = Pair::ours();
    p.a.ping(p.b.tunnel);
    let conf = p.a.ns.run_ok("wg", &["showconf", &p.a.ifname]);
    assert!(
        conf.contains(&format!("PublicKey = {}", p.b.public_key())),
        "{conf}"
    );
    assert!(conf.contains(&format!("ListenPort = {PORT}")), "{conf}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &conf).unwrap();
    // setconf replaces all peers with the file's (replace_peers=true).
    p.a.ns.run_ok(
        "wg",
        &["setconf", &p.a.ifname, file.path().to_str().unwrap()],
    );
    assert_eq!(p.a.ns.run_ok("wg", &["showconf", &p.a.ifname]), conf);
    p.a.ping(p.b.tunnel);
    // A listen port change on a running device is refused with errno, and
    // nothing changes.
    let out =
        p.a.ns
            .run("wg", &["set", &p.a.ifname, "listen-port", "40000"]);
    assert!(!out.status.success());
    assert_eq!(p.a.dev().listen_port(), PORT);
}
