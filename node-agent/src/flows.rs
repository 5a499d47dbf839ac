//! Flow observation: the datapath's flow events (mesh-bpf's ring buffer),
//! named and kept in a bounded in-memory log that `GET /v1/flows` serves
//! (filtered, or followed as newline-delimited JSON) and `meshctl observe`
//! reads.
//!
//! What it is for: turning a kernel [`mesh_bpf::FlowEvent`] (addresses,
//! identities, verdict, drop reason) into a [`FlowRecord`] a person can read
//! — which pod (for the node's own pods), which cluster and node (for any
//! address in a known pod CIDR) — and answering "what happened recently".
//! [`FlowFilter`] and [`Resolver`] are pure and unit-tested.
//!
//! What it is not for: long-term storage (the log keeps the last
//! [`DEFAULT_CAPACITY`] flows; older ones are gone), metrics (per-reason
//! counters are the datapath's per-CPU map), or naming pods of other nodes
//! (the agent does not know them; `meshctl` may).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::SystemTime;

use ipnet::IpNet;
use tokio::sync::broadcast;

use crate::error::{Error, Result};

/// The records and the filter are the local API's types (`/v1/flows`).
pub use mesh_agent_api::flows::{FlowFilter, FlowPeer, FlowRecord, Verdict, unix_ms};

/// How many flows the log keeps.
pub const DEFAULT_CAPACITY: usize = 8192;

/// The API's verdict of a kernel verdict.
fn verdict(v: mesh_bpf::FlowVerdict) -> Verdict {
    match v {
        mesh_bpf::FlowVerdict::Forwarded => Verdict::Forwarded,
        mesh_bpf::FlowVerdict::Dropped => Verdict::Dropped,
        mesh_bpf::FlowVerdict::Translated => Verdict::Translated,
        mesh_bpf::FlowVerdict::Audit => Verdict::Audit,
        mesh_bpf::FlowVerdict::Unknown(_) => Verdict::Unknown,
    }
}

/// Names addresses: the node's own pods (endpoint manager) and every known
/// node's pod CIDR (mesh feed, and this node's own CIDR).
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// This node.
    pub node: String,
    /// This cluster.
    pub cluster: String,
    /// (address, namespace, pod) of local pods.
    pub pods: Vec<(IpAddr, Option<String>, Option<String>)>,
    /// (pod CIDR, cluster, node) of every known node, this one included.
    pub cidrs: Vec<(IpNet, String, String)>,
}

impl Resolver {
    /// A peer named as far as the resolver knows.
    pub fn peer(&self, ip: Ipv4Addr, port: u16, identity: u32) -> FlowPeer {
        let ip = (!ip.is_unspecified()).then_some(IpAddr::V4(ip));
        let mut peer = FlowPeer {
            ip,
            port,
            identity,
            ..FlowPeer::default()
        };
        let Some(ip) = ip else { return peer };
        if let Some((_, ns, pod)) = self.pods.iter().find(|(a, _, _)| *a == ip) {
            peer.namespace = ns.clone();
            peer.pod = pod.clone();
            peer.cluster = Some(self.cluster.clone());
            peer.node = Some(self.node.clone());
        }
        if peer.cluster.is_none()
            && let Some((_, cluster, node)) = self
                .cidrs
                .iter()
                .filter(|(net, _, _)| net.contains(&ip))
                .max_by_key(|(net, _, _)| net.prefix_len())
        {
            peer.cluster = Some(cluster.clone());
            peer.node = Some(node.clone());
        }
        peer
    }

    /// The record of a kernel event, read at `now`.
    pub fn record(&self, ev: &mesh_bpf::FlowEvent, now: SystemTime) -> FlowRecord {
        let verdict = verdict(ev.verdict);
        FlowRecord {
            time_unix_ms: unix_ms(now),
            kernel_ns: ev.ts_ns,
            node: self.node.clone(),
            cluster: self.cluster.clone(),
            verdict,
            drop_reason: (verdict == Verdict::Dropped
                || ev.reason != mesh_bpf::DropReason::Forwarded)
                .then(|| match ev.reason {
                    mesh_bpf::DropReason::Unknown(c) => format!("unknown_{c}"),
                    r => r.name().to_string(),
                }),
            observation: match ev.observation {
                mesh_bpf::FlowObservation::FromPod => "from-pod".into(),
                mesh_bpf::FlowObservation::ToPod => "to-pod".into(),
                mesh_bpf::FlowObservation::Socket => "socket".into(),
                mesh_bpf::FlowObservation::FromNetdev => "from-netdev".into(),
                mesh_bpf::FlowObservation::ToNetdev => "to-netdev".into(),
                mesh_bpf::FlowObservation::Unknown(c) => format!("unknown-{c}"),
            },
            protocol: match ev.proto {
                mesh_bpf::Protocol::Tcp => "tcp".into(),
                mesh_bpf::Protocol::Udp => "udp".into(),
                mesh_bpf::Protocol::Icmp => "icmp".into(),
                mesh_bpf::Protocol::Other(n) => n.to_string(),
            },
            source: self.peer(ev.saddr, ev.sport, ev.src_identity),
            destination: self.peer(ev.daddr, ev.dport, ev.dst_identity),
            service_id: (ev.svc_id != 0).then_some(ev.svc_id),
            rule_id: (ev.rule_id != 0).then_some(ev.rule_id),
        }
    }
}

/// The bounded log of recent flows, and a channel for followers.
#[derive(Debug)]
pub struct FlowLog {
    ring: Mutex<VecDeque<FlowRecord>>,
    capacity: usize,
    live: broadcast::Sender<FlowRecord>,
    total: std::sync::atomic::AtomicU64,
}

impl FlowLog {
    /// An empty log keeping the last `capacity` flows.
    pub fn new(capacity: usize) -> FlowLog {
        FlowLog {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            live: broadcast::channel(1024).0,
            total: Default::default(),
        }
    }

    /// Appends a flow (dropping the oldest beyond the capacity) and hands
    /// it to followers.
    pub fn push(&self, f: FlowRecord) {
        {
            let mut ring = self.ring.lock().expect("flow log lock");
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(f.clone());
        }
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // No follower is not an error.
        let _ = self.live.send(f);
    }

    /// The matching flows held, oldest first, the last `filter.last` of them.
    pub fn query(&self, filter: &FlowFilter) -> Vec<FlowRecord> {
        let ring = self.ring.lock().expect("flow log lock");
        let mut out: Vec<FlowRecord> = ring.iter().filter(|f| filter.matches(f)).cloned().collect();
        if let Some(n) = filter.last
            && out.len() > n
        {
            out.drain(..out.len() - n);
        }
        out
    }

    /// A receiver of every flow pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FlowRecord> {
        self.live.subscribe()
    }

    /// Flows pushed since start (also those the log no longer holds).
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The reader thread; stops when dropped.
#[derive(Debug)]
pub struct ReaderTask {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ReaderTask {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often the reader looks at the ring buffer when it was empty: the
/// precision of [`FlowRecord::time_unix_ms`].
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Opens the flow ring buffer pinned under `bpf_root` and starts the
/// thread that moves its events into `log`, named by `resolver()` (called
/// once per batch). The agent is the ring's only reader.
pub fn spawn_reader(
    bpf_root: &Path,
    log: Arc<FlowLog>,
    resolver: impl Fn() -> Resolver + Send + 'static,
) -> Result<ReaderTask> {
    let mut reader = mesh_bpf::FlowReader::open(bpf_root).map_err(|e| Error::Datapath {
        op: "open flow ring buffer",
        target: bpf_root.display().to_string(),
        source: Box::new(e),
    })?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("flow-reader".into())
        .spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let events = reader.drain();
                if events.is_empty() {
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
                let r = resolver();
                let now = SystemTime::now();
                for ev in &events {
                    log.push(r.record(ev, now));
                }
            }
        })
        .map_err(|source| Error::Datapath {
            op: "start the flow reader thread",
            target: bpf_root.display().to_string(),
            source: Box::new(source),
        })?;
    Ok(ReaderTask { stop })
}

#[cfg(test)]
mod tests;
