use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use ipnet::IpNet;

use crate::allowed_ips::{AllowedIps, overlaps};
use crate::key::{KeyStore, PrivateKey};
use crate::uapi::{
    DeviceInfo, PeerInfo, PeerUpdate, SetRequest, format_get, format_set, hex_key, parse_answer,
    parse_get, parse_hex_key, parse_set,
};
use crate::{Error, PeerStatus, WireGuardKey};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allowed_ips_longest_prefix_wins() {
    let mut t = AllowedIps::new();
    t.insert(net("10.0.0.0/8"), "wide");
    t.insert(net("10.1.0.0/16"), "mid");
    t.insert(net("10.1.2.3/32"), "host");
    t.insert(net("fd00::/64"), "v6");
    assert_eq!(t.lookup(ip("10.1.2.3")), Some(&"host"));
    assert_eq!(t.lookup(ip("10.1.2.4")), Some(&"mid"));
    assert_eq!(t.lookup(ip("10.200.0.1")), Some(&"wide"));
    assert_eq!(t.lookup(ip("11.0.0.1")), None);
    assert_eq!(t.lookup(ip("fd00::5")), Some(&"v6"));
    assert_eq!(t.lookup(ip("fd01::5")), None);
    // Host bits are ignored on insert and remove.
    assert_eq!(t.remove(net("10.1.9.9/16")), Some("mid"));
    assert_eq!(t.lookup(ip("10.1.2.4")), Some(&"wide"));
    t.retain(|_, v| *v != "wide");
    assert_eq!(t.lookup(ip("10.1.2.4")), None);
    assert_eq!(t.len(), 2);
}

#[test]
fn overlap_detection() {
    assert!(overlaps(&net("10.0.0.0/8"), &net("10.3.0.0/16")));
    assert!(overlaps(&net("10.3.0.0/16"), &net("10.0.0.0/8")));
    assert!(!overlaps(&net("10.3.0.0/16"), &net("10.4.0.0/16")));
    assert!(!overlaps(&net("10.3.0.0/16"), &net("fd00::/8")));
}

#[test]
fn uapi_set_parses_device_and_peer_sections() {
    let k1 = [1u8; 32];
    let k2 = [2u8; 32];
    let text = format!(
        "private_key={}\nlisten_port=51871\nfwmark=7\nreplace_peers=true\npublic_key={}\nendpoint=192.0.2.1:51871\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.1.0.0/16\nallowed_ip=fd00::/64\nprotocol_version=1\npublic_key={}\nremove=true",
        hex_key(&k1),
        hex_key(&k2),
        hex_key(&k1)
    );
    let req = parse_set(text.lines()).unwrap();
    assert_eq!(req.private_key, Some(k1));
    assert_eq!(req.listen_port, Some(51871));
    assert_eq!(req.fwmark, Some(7));
    assert!(req.replace_peers);
    assert_eq!(req.peers.len(), 2);
    assert_eq!(req.peers[0].public_key, k2);
    assert_eq!(
        req.peers[0].endpoint,
        Some("192.0.2.1:51871".parse().unwrap())
    );
    assert_eq!(req.peers[0].persistent_keepalive, Some(25));
    assert!(req.peers[0].replace_allowed_ips);
    assert_eq!(
        req.peers[0].allowed_ips,
        vec![net("10.1.0.0/16"), net("fd00::/64")]
    );
    assert!(req.peers[1].remove);
}

#[test]
fn uapi_set_refuses_bad_lines_with_the_line_named() {
    for (line, errno) in [
        ("public_key=not-hex", libc::EINVAL),
        ("public_key=zz", libc::EINVAL),
        ("endpoint=192.0.2.1:51871", libc::EINVAL), // peer key before public_key
        ("listen_port=70000", libc::EINVAL),
        ("frobnicate=1", libc::EINVAL),
        ("no equals sign", libc::EINVAL),
    ] {
        let e = parse_set([line]).unwrap_err();
        assert_eq!(e.errno(), errno, "{line}");
        assert!(e.to_string().contains(line), "{e} should name {line:?}");
    }
    let k = hex_key(&[3; 32]);
    let e = parse_set([format!("public_key={k}").as_str(), "allowed_ip=10.0.0.0/33"]).unwrap_err();
    assert!(e.to_string().contains("allowed_ip=10.0.0.0/33"), "{e}");
    let e = parse_set([format!("public_key={k}").as_str(), "listen_port=1"]).unwrap_err();
    assert!(
        e.to_string().contains("device key after a peer section"),
        "{e}"
    );
}

#[test]
fn hex_keys_round_trip() {
    let k: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
    let h = hex_key(&k);
    assert_eq!(h.len(), 64);
    assert_eq!(parse_hex_key("x", &h).unwrap(), k);
}

#[test]
fn uapi_get_format_matches_the_protocol() {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
    let s = format_get(&DeviceInfo {
        private_key: Some([1; 32]),
        listen_port: 51871,
        fwmark: 0,
        peers: vec![PeerInfo {
            status: PeerStatus {
                public_key: WireGuardKey::from_bytes([2; 32]),
                endpoint: Some("192.0.2.9:51871".parse().unwrap()),
                allowed_ips: vec![net("10.2.0.0/16")],
                persistent_keepalive: Some(25),
                last_handshake: Some(t),
                rx_bytes: 10,
                tx_bytes: 20,
            },
            preshared_key: None,
        }],
    });
    let expected = format!(
        "private_key={}\nlisten_port=51871\npublic_key={}\nprotocol_version=1\nendpoint=192.0.2.9:51871\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=25\nallowed_ip=10.2.0.0/16\nerrno=0\n\n",
        "01".repeat(32),
        "02".repeat(32)
    );
    assert_eq!(s, expected);
}

/// What the client writes, the server parses back to the same request;
/// what the server answers, the client parses back to the same state.
#[test]
fn uapi_client_side_round_trips_through_the_server_side() {
    let mut add = PeerUpdate::new([3; 32]);
    add.endpoint = Some("[2001:db8::1]:51871".parse().unwrap());
    add.persistent_keepalive = Some(0);
    add.replace_allowed_ips = true;
    add.allowed_ips = vec![net("10.3.0.0/24"), net("192.0.2.4/32")];
    add.preshared_key = Some([9; 32]);
    let mut gone = PeerUpdate::new([4; 32]);
    gone.remove = true;
    let req = SetRequest {
        private_key: Some([1; 32]),
        listen_port: Some(51871),
        fwmark: Some(7),
        replace_peers: true,
        peers: vec![add, gone],
    };
    let text = format_set(&req);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("set=1"));
    assert!(text.ends_with("\n\n"), "{text:?}");
    let body: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    assert_eq!(parse_set(body).unwrap(), req);

    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
    let info = DeviceInfo {
        private_key: Some([1; 32]),
        listen_port: 51871,
        fwmark: 3,
        peers: vec![
            PeerInfo {
                status: PeerStatus {
                    public_key: WireGuardKey::from_bytes([2; 32]),
                    endpoint: Some("192.0.2.9:51871".parse().unwrap()),
                    allowed_ips: vec![net("10.2.0.0/16"), net("192.0.2.9/32")],
                    persistent_keepalive: Some(25),
                    last_handshake: Some(t),
                    rx_bytes: 10,
                    tx_bytes: 20,
                },
                preshared_key: Some([8; 32]),
            },
            PeerInfo {
                status: PeerStatus {
                    public_key: WireGuardKey::from_bytes([5; 32]),
                    endpoint: None,
                    allowed_ips: vec![],
                    persistent_keepalive: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
                preshared_key: None,
            },
        ],
    };
    let answer = parse_answer(&format_get(&info)).unwrap();
    assert_eq!(answer.errno, 0);
    let back = parse_get(answer.lines.iter().map(String::as_str)).unwrap();
    assert_eq!(back, info);
    assert_eq!(parse_answer("errno=98\n\n").unwrap().errno, 98);
    assert!(parse_answer("listen_port=1\n").is_err(), "no errno line");
}

#[test]
fn key_store_generates_persists_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::in_state_dir(dir.path());
    assert!(store.load().unwrap().is_none());
    let k = store.load_or_generate().unwrap();
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = store.load_or_generate().unwrap();
    assert_eq!(k.as_bytes(), again.as_bytes(), "the key persists");
    let rotated = store.rotate().unwrap();
    assert_ne!(rotated.public_key(), k.public_key());
    assert_eq!(
        store.load().unwrap().unwrap().as_bytes(),
        rotated.as_bytes()
    );
    // Only the key file is left: no temp files.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(crate::KEY_FILE_NAME)]);
}

#[test]
fn key_file_readable_by_others_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::in_state_dir(dir.path());
    store.load_or_generate().unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = store.load_or_generate().unwrap_err();
    assert!(matches!(e, Error::KeyFileMode { mode: 0o644, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&store.path().display().to_string()), "{msg}");
    assert!(msg.contains("chmod 600"), "{msg}");
}

#[test]
fn key_file_with_bad_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::in_state_dir(dir.path());
    for (content, reason) in [("not base64!!\n", "not base64"), ("AAAA\n", "32 bytes")] {
        std::fs::write(store.path(), content).unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = store.load_or_generate().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::KeyFileContent { .. }), "{e:?}");
        assert!(
            msg.contains(reason) && msg.contains(&store.path().display().to_string()),
            "{msg}"
        );
    }
}

#[test]
fn private_key_matches_wg_pubkey_derivation() {
    // Test vector from RFC 7748 §6.1 (Alice).
    let sk = PrivateKey::from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").unwrap();
    let expected: WireGuardKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        .parse()
        .unwrap();
    assert_eq!(sk.public_key(), expected);
    assert!(
        !format!("{sk:?}").contains("dwdtCnMYpX08"),
        "Debug must not leak the secret"
    );
}

mod offload {
    use crate::offload::{
        VNET_HDR_LEN, VnetHdr, coalesce_and_write, csum_add, csum_fold, ipv4_header_checksum,
        segment,
    };

    /// A TCP/IPv4 packet with a timestamp option and correct checksums.
    fn tcp_packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20 + 32];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((52 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 90, 0, 1]);
        p[16..20].copy_from_slice(&[10, 90, 0, 2]);
        let c = ipv4_header_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&99u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        let c = tcp_checksum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_checksum(p: &[u8]) -> u16 {
        let mut q = p.to_vec();
        q[36..38].copy_from_slice(&[0, 0]);
        let len = q.len() - 20;
        let sum = csum_add(0, &q[12..20]) + 6 + len as u32;
        !csum_fold(csum_add(sum, &q[20..]))
    }

    fn valid(p: &[u8]) -> bool {
        csum_fold(csum_add(0, &p[..20])) == 0xffff
            && tcp_checksum(p) == u16::from_be_bytes([p[36], p[37]])
    }

    #[test]
    fn tso_packet_is_cut_into_mss_segments_with_valid_headers() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let big = tcp_packet(1000, 0x18, &payload); // ACK|PSH
        let hdr = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 52,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        segment(&hdr, &big, &mut out, &mut ranges).unwrap();
        assert_eq!(ranges.len(), 3);
        let segs: Vec<&[u8]> = ranges.iter().map(|r| &out[r.clone()]).collect();
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(valid(s), "segment {i} checksums");
            let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + 1400 * i as u32);
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                7 + i as u16,
                "IP id increments"
            );
            let psh = s[33] & 0x08 != 0;
            assert_eq!(psh, i == 2, "PSH only on the last segment");
            joined.extend_from_slice(&s[52..]);
        }
        assert_eq!(segs[2].len(), 52 + 200);
        assert_eq!(joined, payload);
    }

    #[test]
    fn partial_checksum_is_completed_for_non_gso_packets() {
        let mut p = tcp_packet(5, 0x10, b"hello");
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
        let pseudo = csum_fold(csum_add(0, &p[12..20]) + 6 + (p.len() - 20) as u32);
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr::parse(&[1, 0, 0, 0, 0, 0, 20, 0, 16, 0]).unwrap();
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        segment(&hdr, &p, &mut out, &mut ranges).unwrap();
        assert!(valid(&out[ranges[0].clone()]));
    }

    #[test]
    fn unsupported_or_malformed_gso_is_refused() {
        let p = tcp_packet(5, 0x10, b"hello");
        let udp_gso = VnetHdr::parse(&[1, 5, 0, 0, 100, 0, 20, 0, 6, 0]).unwrap();
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        assert!(segment(&udp_gso, &p, &mut out, &mut ranges).is_err());
        let tso = VnetHdr::parse(&[1, 1, 52, 0, 100, 0, 20, 0, 16, 0]).unwrap();
        assert!(segment(&tso, &p[..30], &mut out, &mut ranges).is_err());
    }

    #[test]
    fn in_order_segments_merge_into_one_gso_write_and_others_stay_alone() {
        let a = tcp_packet(1, 0x10, &[1; 1000]);
        let b = tcp_packet(1001, 0x10, &[2; 1000]);
        let c = tcp_packet(2001, 0x18, &[3; 500]); // PSH, short: ends the run
        let d = tcp_packet(9999, 0x10, &[4; 1000]); // out of order
        let syn = tcp_packet(0, 0x02, &[]);
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let mut scratch = Vec::new();
        coalesce_and_write(&[&a, &b, &c, &d, &syn], &mut scratch, |w| {
            writes.push(w.to_vec())
        });
        assert_eq!(writes.len(), 3, "a+b+c merged, d and the SYN alone");
        let merged = &writes[0];
        let h = VnetHdr::parse(merged).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.gso_size, h.hdr_len),
            (1, 1, 1000, 52)
        );
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        let ip = &merged[VNET_HDR_LEN..];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert_eq!(ip.len(), 52 + 2500);
        assert_eq!(
            csum_fold(csum_add(0, &ip[..20])),
            0xffff,
            "IP header checksum"
        );
        assert_eq!(ip[33], 0x18, "the run keeps the last segment's PSH");
        assert_eq!(&ip[52..1052], &[1; 1000][..]);
        assert_eq!(&ip[2052..], &[3; 500][..]);
        // Cutting the merged packet again gives back the original segments.
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        segment(&h, ip, &mut out, &mut ranges).unwrap();
        let again: Vec<&[u8]> = ranges.iter().map(|r| &out[r.clone()]).collect();
        assert_eq!(again[0][52..], a[52..]);
        assert_eq!(again[2][52..], c[52..]);
        assert!(again.iter().all(|s| valid(s)));
        for single in &writes[1..] {
            assert_eq!(&single[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        }
    }
}
