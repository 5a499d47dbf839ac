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
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{Error, Result};

/// How many flows the log keeps.
pub const DEFAULT_CAPACITY: usize = 8192;

/// A flow's verdict, as the API and `meshctl` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A new flow passed.
    Forwarded,
    /// The packet was dropped (see the drop reason).
    Dropped,
    /// The socket load balancer translated a connect to a backend.
    Translated,
    /// A code this build does not know.
    Unknown,
}

impl Verdict {
    /// All verdicts, for error messages.
    pub const ALL: [Verdict; 4] = [
        Verdict::Forwarded,
        Verdict::Dropped,
        Verdict::Translated,
        Verdict::Unknown,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped => "dropped",
            Verdict::Translated => "translated",
            Verdict::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "verdict {s:?} is not one of {}",
                    Verdict::ALL.map(Verdict::name).join(", ")
                )
            })
    }
}

impl From<mesh_bpf::FlowVerdict> for Verdict {
    fn from(v: mesh_bpf::FlowVerdict) -> Verdict {
        match v {
            mesh_bpf::FlowVerdict::Forwarded => Verdict::Forwarded,
            mesh_bpf::FlowVerdict::Dropped => Verdict::Dropped,
            mesh_bpf::FlowVerdict::Translated => Verdict::Translated,
            mesh_bpf::FlowVerdict::Unknown(_) => Verdict::Unknown,
        }
    }
}

/// One side of a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPeer {
    /// Address (None for socket-hook events, which carry no source).
    pub ip: Option<IpAddr>,
    /// Port (0 for ICMP).
    pub port: u16,
    /// Security identity from the ipcache (0: unknown).
    pub identity: u32,
    /// Pod namespace, when the agent knows the pod (its own node's pods).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pod name, when the agent knows the pod.
    #[serde(default)]
    pub pod: Option<String>,
    /// Cluster of the address (its node's pod CIDR), when known.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Node whose pod CIDR holds the address, when known.
    #[serde(default)]
    pub node: Option<String>,
}

impl FlowPeer {
    /// `namespace/pod`, or the address, or `-`.
    pub fn display_name(&self) -> String {
        match (&self.namespace, &self.pod, self.ip) {
            (Some(ns), Some(pod), _) => format!("{ns}/{pod}"),
            (_, _, Some(ip)) => ip.to_string(),
            _ => "-".into(),
        }
    }
}

/// A flow event, named: what `GET /v1/flows` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Wall-clock time the agent read the event (ms since the Unix epoch;
    /// the agent reads the ring buffer as soon as it is readable).
    pub time_unix_ms: u64,
    /// Kernel time of the event (CLOCK_MONOTONIC ns).
    pub kernel_ns: u64,
    /// The node whose datapath saw it.
    pub node: String,
    /// The cluster of that node.
    pub cluster: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Why it was dropped (snake_case reason, e.g. `policy_default_deny`);
    /// None when not dropped.
    #[serde(default)]
    pub drop_reason: Option<String>,
    /// Where it was seen: `from-pod`, `to-pod`, `socket`, `from-netdev`.
    pub observation: String,
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub protocol: String,
    /// Source.
    pub source: FlowPeer,
    /// Destination (after service translation).
    pub destination: FlowPeer,
    /// Datapath service id the flow was translated for.
    #[serde(default)]
    pub service_id: Option<u32>,
    /// Policy rule that decided, when the datapath names one.
    #[serde(default)]
    pub rule_id: Option<u32>,
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
        let verdict = Verdict::from(ev.verdict);
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

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which flows to return: every given field must match (`GET /v1/flows`
/// query parameters of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Either side's pod namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Either side's pod: `name` or `namespace/name`.
    #[serde(default)]
    pub pod: Option<String>,
    /// Either side's identity.
    #[serde(default)]
    pub identity: Option<u32>,
    /// The verdict.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Either side's cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Only flows read at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since: Option<u64>,
    /// Only the last N matching flows (of the log; a follow starts with them).
    #[serde(default)]
    pub last: Option<usize>,
    /// Keep the response open and stream new flows as NDJSON.
    #[serde(default)]
    pub follow: bool,
}

impl FlowFilter {
    /// Whether `f` passes the filter (`last` and `follow` are not per-flow).
    pub fn matches(&self, f: &FlowRecord) -> bool {
        let sides = [&f.source, &f.destination];
        let either = |p: &dyn Fn(&FlowPeer) -> bool| sides.iter().any(|s| p(s));
        if let Some(ns) = &self.namespace
            && !either(&|s| s.namespace.as_deref() == Some(ns.as_str()))
        {
            return false;
        }
        if let Some(pod) = &self.pod {
            let (ns, name) = match pod.split_once('/') {
                Some((ns, name)) => (Some(ns), name),
                None => (None, pod.as_str()),
            };
            if !either(&|s| {
                s.pod.as_deref() == Some(name)
                    && ns.is_none_or(|ns| s.namespace.as_deref() == Some(ns))
            }) {
                return false;
            }
        }
        if let Some(id) = self.identity
            && !either(&|s| s.identity == id)
        {
            return false;
        }
        if let Some(v) = self.verdict
            && f.verdict != v
        {
            return false;
        }
        if let Some(c) = &self.cluster
            && !either(&|s| s.cluster.as_deref() == Some(c.as_str()))
        {
            return false;
        }
        if let Some(since) = self.since
            && f.time_unix_ms < since
        {
            return false;
        }
        true
    }

    /// The query string for `GET /v1/flows` (empty or starting with `?`).
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: String| parts.push(format!("{k}={}", encode(&v)));
        if let Some(v) = &self.namespace {
            push("namespace", v.clone());
        }
        if let Some(v) = &self.pod {
            push("pod", v.clone());
        }
        if let Some(v) = self.identity {
            push("identity", v.to_string());
        }
        if let Some(v) = self.verdict {
            push("verdict", v.name().into());
        }
        if let Some(v) = &self.cluster {
            push("cluster", v.clone());
        }
        if let Some(v) = self.since {
            push("since", v.to_string());
        }
        if let Some(v) = self.last {
            push("last", v.to_string());
        }
        if self.follow {
            push("follow", "true".into());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Percent-encodes what is not unreserved in a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
