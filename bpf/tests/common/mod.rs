//! A "node" network namespace with "pod" namespaces wired like a CNI plugin
//! would: a veth per pod (host side in the node, `eth0` in the pod), the pod's
//! /32 address, a gateway 169.254.1.1 (static neighbour = the host veth's
//! MAC), routes for 10.0.0.0/8 only (pod and service ranges; no default
//! route anywhere), /32 routes on the node. The datapath's TC programs attach
//! to the host sides from a thread inside the node namespace.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mesh_bpf::{Datapath, IpcacheEntry, netns::in_netns};
use mesh_testbed::{NetNs, veth};

pub struct Node {
    pub ns: NetNs,
}

pub struct Pod {
    pub ns: NetNs,
    pub name: String,
    pub ip: Ipv4Addr,
    pub host_if: String,
    pub ifindex: u32,
    pub identity: u32,
}

impl Node {
    pub fn new() -> Node {
        let ns = NetNs::new("nd");
        for s in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            ns.run_ok("sysctl", &["-qw", s]);
        }
        ns.run_ok("ip", &["addr", "add", "10.244.1.1/32", "dev", "lo"]);
        Node { ns }
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(self.ns.name())
    }

    /// Creates pod `idx` (address 10.244.1.<10+idx>) with identity `identity`.
    pub fn add_pod(&self, idx: u8, name: &str, identity: u32) -> Pod {
        let ns = NetNs::new("pd");
        let host_if = format!("lxc{idx}");
        veth(&ns, "eth0", &self.ns, &host_if);
        let ip = Ipv4Addr::new(10, 244, 1, 10 + idx);
        ns.run_ok("ip", &["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.run_ok(
            "ip",
            &[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        );
        ns.run_ok(
            "ip",
            &[
                "route",
                "add",
                "10.0.0.0/8",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        );
        let host_mac = self
            .ns
            .run_ok("cat", &[&format!("/sys/class/net/{host_if}/address")])
            .trim()
            .to_string();
        ns.run_ok(
            "ip",
            &[
                "neigh",
                "add",
                "169.254.1.1",
                "lladdr",
                &host_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        let pod_mac = ns
            .run_ok("cat", &["/sys/class/net/eth0/address"])
            .trim()
            .to_string();
        self.ns.run_ok(
            "ip",
            &["route", "add", &format!("{ip}/32"), "dev", &host_if],
        );
        self.ns.run_ok(
            "ip",
            &[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &pod_mac,
                "dev",
                &host_if,
                "nud",
                "permanent",
            ],
        );
        self.ns.run_ok(
            "sysctl",
            &["-qw", &format!("net.ipv4.conf.{host_if}.rp_filter=0")],
        );
        let ifindex = self
            .ns
            .run_ok("cat", &[&format!("/sys/class/net/{host_if}/ifindex")])
            .trim()
            .parse()
            .expect("ifindex");
        Pod {
            ns,
            name: name.to_string(),
            ip,
            host_if,
            ifindex,
            identity,
        }
    }

    /// Registers every pod's endpoint (its address: anti-spoofing), attaches
    /// the TC programs to its host veth, and puts the pods in the ipcache;
    /// in the agent's order.
    pub fn attach(&self, dp: &mut Datapath, pods: &[&Pod]) {
        let mut policy = dp.policy().expect("policy maps");
        for p in pods {
            let enforcement = policy
                .endpoint(p.ifindex)
                .expect("read endpoint")
                .unwrap_or_default();
            policy
                .upsert_endpoint(
                    p.ifindex,
                    &mesh_bpf::EndpointInfo {
                        endpoint_id: p.ifindex as u16,
                        ipv4: Some(p.ip),
                        mac: None,
                        ifname: p.host_if.clone(),
                    },
                    mesh_bpf::EndpointPolicy {
                        identity: p.identity,
                        ..enforcement
                    },
                )
                .unwrap_or_else(|e| panic!("endpoint of {}: {e}", p.name));
        }
        drop(policy);
        let path = self.netns_path();
        in_netns(&path, || {
            for p in pods {
                dp.attach_interface(&p.host_if)
                    .unwrap_or_else(|e| panic!("attach {}: {e}", p.host_if));
            }
        })
        .expect("enter node netns");
        let mut ipc = dp.ipcache().expect("ipcache");
        for p in pods {
            ipc.upsert(
                p.ip,
                32,
                IpcacheEntry {
                    identity: p.identity,
                    tunnel_endpoint: None,
                    encrypt: false,
                    cluster_id: 1,
                },
            )
            .expect("ipcache upsert");
        }
    }
}

impl Pod {
    /// Starts a TCP server on `port` answering every connection with the
    /// pod's name, and a UDP one answering every datagram the same way.
    pub fn serve(&self, port: u16) {
        self.ns.spawn(
            env!("CARGO_BIN_EXE_mesh-bpf-probe"),
            &["serve", "--port", &port.to_string(), "--name", &self.name],
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = self
                .ns
                .run_ok("ss", &["-Hltn", &format!("sport = :{port}")]);
            if !out.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server on {}:{port} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the probe client inside the pod (not in any test cgroup).
    pub fn probe(&self, args: &[&str]) -> Output {
        let mut full = vec![
            "netns",
            "exec",
            self.ns.name(),
            env!("CARGO_BIN_EXE_mesh-bpf-probe"),
        ];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().expect("run probe")
    }

    /// Runs the probe client inside the pod and inside cgroup `cgroup`
    /// (where the socket LB is attached).
    pub fn probe_in_cgroup(&self, cgroup: &std::path::Path, args: &[&str]) -> Output {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {} {} \"$@\"",
            cgroup.display(),
            self.ns.name(),
            env!("CARGO_BIN_EXE_mesh-bpf-probe")
        );
        let mut full = vec!["-c", script.as_str(), "probe"];
        full.extend_from_slice(args);
        Command::new("sh")
            .args(&full)
            .output()
            .expect("run probe in cgroup")
    }
}

/// "name peer" from a successful probe, or panics with its stderr.
pub fn answer(out: &Output) -> (String, String) {
    assert!(
        out.status.success(),
        "probe failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = text.split_whitespace();
    let name = parts.next().unwrap_or_default().to_string();
    let peer = parts.next().unwrap_or_default().to_string();
    (name, peer)
}

/// A capture (tcpdump, full packets) on `br0` of the underlay namespace.
pub struct Capture {
    child: Option<std::process::Child>,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing; returns once tcpdump has written its file header.
    pub fn start(underlay: &NetNs) -> Capture {
        let file =
            std::env::temp_dir().join(format!("{}.pcap", mesh_testbed::unique_name("mwcap")));
        let child = underlay
            .command("tcpdump")
            .args(["-i", "br0", "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Capture {
            child: Some(child),
            file,
        }
    }

    /// Stops the capture; returns the raw pcap bytes (payloads included).
    pub fn stop(mut self) -> Vec<u8> {
        if let Some(mut c) = self.child.take() {
            std::thread::sleep(Duration::from_millis(300));
            mesh_testbed::run_ok("kill", &["-INT", &c.id().to_string()]);
            let _ = c.wait();
        }
        let bytes = std::fs::read(&self.file).expect("pcap file");
        assert!(bytes.len() >= 24, "tcpdump wrote no pcap header");
        bytes
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}
