//! Our device against wireguard-go, the reference userspace implementation,
//! configured only with the stock `wg` tool (root).

mod common;

use common::{PORT, Pair, capture, summarize, tcp_both_ways};

#[test]
fn ours_and_wireguard_go_ping_and_tcp_both_ways_with_only_wireguard_on_the_wire() {
    let mut p = Pair::new();
    p.a.start_ours();
    p.b.start_wireguard_go();
    // Ours is configured through its Rust API, wireguard-go through `wg`.
    let sync = p.a.dev().apply_peers(&[p.b.as_peer(p.b.public_key())]);
    assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    p.b.wg_set_peer(&p.a);

    let cap = capture(&p.bridge, &p.a);
    // wireguard-go initiates first this time, then ours.
    p.b.ping(p.a.tunnel);
    p.a.ping(p.b.tunnel);
    tcp_both_ways(&p.a, &p.b);
    let wire = summarize(&cap.stop().frames(), PORT);
    assert!(
        wire.wireguard_udp > 20 && wire.other.is_empty() && wire.marker_frames == 0,
        "{wire:?}"
    );

    // Both sides report the handshake: ours through `wg show` on its UAPI,
    // wireguard-go through its own.
    for n in [&p.a, &p.b] {
        let dump = n.ns.run_ok("wg", &["show", &n.ifname, "latest-handshakes"]);
        let secs: u64 = dump.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(secs > 0, "no handshake on {}: {dump}", n.ifname);
    }
}

#[test]
fn wireguard_go_then_ours_configured_by_wg_both_ways() {
    // Mirror: ours on B, configured with `wg set` only; ours initiates.
    let mut p = Pair::new();
    p.a.start_wireguard_go();
    p.b.start_ours();
    p.a.wg_set_peer(&p.b);
    p.b.wg_set_peer(&p.a);
    p.b.ping(p.a.tunnel);
    p.a.ping(p.b.tunnel);
    tcp_both_ways(&p.a, &p.b);
    let peers = p.b.dev().peers();
    assert_eq!(peers.len(), 1);
    assert!(
        peers[0].last_handshake.is_some() && peers[0].rx_bytes > 60_000,
        "{peers:?}"
    );
}

/// Who is configured with the other's key first, and who sends first.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Ours,
    Go,
}

/// Fresh devices with the agent's settings (its queues and offload:
/// `DeviceConfig::default()`, which `Encryption::start` uses), in each order
/// of configuration and of the first packet. The side configured first
/// sends its handshake to a peer that does not know it yet; the first
/// packet must still get through at once, not after the 5 s retry.
#[test]
fn fresh_devices_with_agent_settings_ping_and_carry_tcp_in_every_order() {
    let mut failed = Vec::new();
    for first_configured in [Side::Ours, Side::Go] {
        for initiator in [Side::Ours, Side::Go] {
            let mut p = common::Pair::new();
            p.a.start_ours();
            p.b.start_wireguard_go();
            let configure_ours = |p: &common::Pair| {
                let sync = p.a.dev().apply_peers(&[p.b.as_peer(p.b.public_key())]);
                assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
            };
            if first_configured == Side::Ours {
                configure_ours(&p);
                p.b.wg_set_peer(&p.a);
            } else {
                p.b.wg_set_peer(&p.a);
                configure_ours(&p);
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (from, to) = match initiator {
                    Side::Ours => (&p.a, p.b.tunnel),
                    Side::Go => (&p.b, p.a.tunnel),
                };
                from.ping(to);
                tcp_both_ways(&p.a, &p.b);
            }));
            if result.is_err() {
                failed.push((first_configured, initiator));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "orders that failed (configured first, sent first): {failed:?}"
    );
}
