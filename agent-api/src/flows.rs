//! Flow records as `GET /v1/flows` returns them, and the filter its query
//! parameters spell ([`FlowFilter::matches`], [`FlowFilter::query`]).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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
    /// Policy would have dropped it (see the drop reason); audit mode let
    /// it pass (Hubble's AUDIT).
    Audit,
    /// A code this build does not know.
    Unknown,
}

impl Verdict {
    /// All verdicts, for error messages.
    pub const ALL: [Verdict; 5] = [
        Verdict::Forwarded,
        Verdict::Dropped,
        Verdict::Translated,
        Verdict::Audit,
        Verdict::Unknown,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped => "dropped",
            Verdict::Translated => "translated",
            Verdict::Audit => "audit",
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
