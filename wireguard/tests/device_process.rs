//! The device in its own process (`mesh-wg`), as the node-agent runs it:
//! started when none answers, left running when its driver goes, attached
//! to again with its key, peers, sessions and counters, stopped on request.
//! Real process, real TUN and UDP in namespaces, real handshakes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_wireguard::{DeviceConfig, DeviceProcess, KeyStore, Origin, ProcessConfig, netns};

fn config(node: &common::Node, port: u16) -> ProcessConfig {
    ProcessConfig {
        device: DeviceConfig {
            ifname: node.ifname.clone(),
            listen_port: port,
            ..DeviceConfig::default()
        },
        program: PathBuf::from(env!("CARGO_BIN_EXE_mesh-wg")),
        state_dir: node.state.path().to_path_buf(),
        log: node.state.path().join("mesh-wg.log"),
        start: true,
    }
}

/// Attaches to (or starts) `node`'s device from inside its namespace.
fn attach(node: &common::Node, port: u16) -> DeviceProcess {
    let cfg = config(node, port);
    let store = node.store();
    netns::run_in(&node.netns_path(), move || {
        let key = store.load_or_generate()?;
        DeviceProcess::attach_or_start(&cfg, &key)
    })
    .unwrap_or_else(|e| panic!("device process in {}: {e}", node.ns.name()))
}

fn proc_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
}

#[test]
fn the_device_outlives_its_driver_and_keeps_key_peers_sessions_and_counters() {
    let mut p = common::Pair::new();
    p.b.start_ours();
    let a = attach(&p.a, common::PORT);
    assert_eq!(a.origin(), Origin::Started);
    let pid = a.pid().expect("the started process is visible");
    assert_eq!(
        a.public_key(),
        p.a.store().load().unwrap().unwrap().public_key()
    );
    p.a.ns.addr(&p.a.ifname, &format!("{}/24", p.a.tunnel));
    let sync = a.apply_peers(&[p.b.as_peer(p.b.public_key())]).unwrap();
    assert_eq!(sync.added.len(), 1, "{sync:?}");
    let sync = p.b.dev().apply_peers(&[p.a.as_peer(a.public_key())]);
    assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    p.a.ping(p.b.tunnel);
    common::tcp_both_ways(&p.a, &p.b);
    let before = a.peers().unwrap();
    assert!(
        before[0].last_handshake.is_some() && before[0].tx_bytes > 0,
        "{before:?}"
    );

    // The driver goes away (an agent killed): the device keeps carrying.
    drop(a);
    assert!(proc_alive(pid), "the device process died with its driver");
    p.b.ping(p.a.tunnel);

    // The next driver attaches: same process, key and session; counters
    // continued; the same peers are no change at all.
    let a = attach(&p.a, common::PORT);
    assert_eq!(a.origin(), Origin::Attached);
    assert_eq!(a.pid(), Some(pid));
    let after = a.peers().unwrap();
    // The handshake time is reported as "now minus its age": equal to
    // within the jitter of two reads, not to the nanosecond.
    let (t0, t1) = (
        before[0].last_handshake.unwrap(),
        after[0].last_handshake.unwrap(),
    );
    let drift = t1.duration_since(t0).unwrap_or_else(|e| e.duration());
    assert!(
        drift < Duration::from_millis(100),
        "the session was kept: {t0:?} → {t1:?}"
    );
    assert!(
        after[0].rx_bytes > before[0].rx_bytes,
        "{before:?} → {after:?}"
    );
    let sync = a.apply_peers(&[p.b.as_peer(p.b.public_key())]).unwrap();
    assert!(
        sync.added.is_empty() && sync.updated.is_empty() && sync.removed.is_empty(),
        "{sync:?}"
    );

    // Rotation: persisted first, then on the device; the peer follows.
    let old = a.public_key();
    let new = a.rotate_key(&p.a.store()).unwrap();
    assert_ne!(new, old);
    assert_eq!(p.a.store().load().unwrap().unwrap().public_key(), new);
    let sync = p.b.dev().apply_peers(&[p.a.as_peer(new)]);
    assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    p.a.ping(p.b.tunnel);

    // A device that kept another port is restarted on the configured one.
    drop(a);
    let moved = attach(&p.a, common::PORT + 1);
    assert_eq!(moved.origin(), Origin::Started);
    assert_eq!(moved.listen_port(), common::PORT + 1);
    assert_ne!(moved.pid(), Some(pid));
    assert!(!proc_alive(pid), "the old device was stopped");
    assert_eq!(moved.public_key(), new, "the key store's key");

    // The interface deleted under the device: the process ends (instead of
    // spinning on a dead TUN), so its driver sees it gone and starts anew.
    let lost_pid = moved.pid().unwrap();
    p.a.ns.run_ok("ip", &["link", "del", &p.a.ifname]);
    mesh_testbed::Wait::new("the device process to end after its TUN was deleted")
        .timeout(Duration::from_secs(5))
        .until(|| !moved.alive() && !proc_alive(lost_pid));
    drop(moved);
    let moved = attach(&p.a, common::PORT + 1);
    assert_eq!(moved.origin(), Origin::Started);
    assert_ne!(moved.pid(), Some(lost_pid));

    // Stopped: the process, its TUN and its socket are gone.
    let (pid, sock) = (moved.pid().unwrap(), moved.uapi_path().to_path_buf());
    moved.stop().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proc_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!proc_alive(pid), "the device process is still running");
    assert!(!sock.exists(), "{} is left", sock.display());
    let link = p.a.ns.run("ip", &["link", "show", &p.a.ifname]);
    assert!(!link.status.success(), "the TUN is left");
}

#[test]
fn a_missing_or_failing_program_is_a_clear_error() {
    let p = common::Pair::new();
    let mut cfg = config(&p.a, common::PORT);
    cfg.program = PathBuf::from("/nonexistent/mesh-wg");
    let key = KeyStore::in_state_dir(p.a.state.path())
        .load_or_generate()
        .unwrap();
    let err = DeviceProcess::attach_or_start(&cfg, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("--wireguard-device-program"),
        "{err}"
    );

    // Attach-only (the device runs elsewhere) and none answers.
    cfg.start = false;
    let err = DeviceProcess::attach_or_start(&cfg, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no device answers") && err.contains("run elsewhere"),
        "{err}"
    );
    cfg.start = true;

    // A program that exits at once: its exit status and log are reported.
    cfg.program = PathBuf::from("/bin/false");
    let err = DeviceProcess::attach_or_start(&cfg, &key)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exited") && err.contains("before answering"),
        "{err}"
    );
}
