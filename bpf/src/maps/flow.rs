//! Flow events (ring buffer) and per-reason counters (per-CPU array).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};

use super::raw::{FlowEventRaw, MetricVal};
use super::{FLOWS, METRICS, Protocol, dump_err, ip_from_be, open, port_from_be, typed};
use crate::error::Result;

/// Why a packet was dropped (or `Forwarded`). Same codes as `bpf/include/drop.h`
/// (the C twin test, `maps/c_twins.rs`, compares them both ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum DropReason {
    /// Not a drop.
    Forwarded,
    /// An explicit deny rule matched.
    PolicyDenied,
    /// The endpoint is policy-enforced and no rule allowed the flow.
    PolicyDefaultDeny,
    /// The service has no backends.
    NoServiceBackend,
    /// A slot or Maglev entry points at an unknown backend.
    BackendMissing,
    /// The conntrack map refused an insert.
    CtMapFull,
    /// Truncated or malformed headers.
    InvalidPacket,
    /// Address/checksum rewrite failed.
    NatFailed,
    /// Strict-mode encryption: traffic to another node's pods would have
    /// left the node outside the WireGuard device (no peer, or a route that
    /// bypasses the tunnel).
    EncryptionRequired,
    /// A pod sent a packet whose source address is not its own (or from a
    /// veth with no registered endpoint).
    SourceSpoofed,
    /// A later IPv4 fragment whose first fragment was not seen (lost,
    /// reordered, evicted): it cannot be classified.
    FragmentUnknown,
    /// Neither IPv4 nor ARP, from or to a pod (IPv6 is not supported yet):
    /// it would skip policy and strict mode.
    UnsupportedL3,
    /// Masquerade: every port tried towards this destination (address,
    /// port, protocol) was taken; the flow cannot leave the node.
    SnatPortsExhausted,
    /// A NodePort flow whose backend is on another node and reached
    /// through a device the node programs do not SNAT on (the WireGuard
    /// device): its replies could not come back, so it is dropped.
    NodePortNoSnatPath,
    /// A code this build does not know.
    Unknown(u32),
}

impl DropReason {
    /// Every known reason (checked against `drop.h` by the C twin test).
    pub const ALL: [DropReason; 14] = [
        DropReason::Forwarded,
        DropReason::PolicyDenied,
        DropReason::PolicyDefaultDeny,
        DropReason::NoServiceBackend,
        DropReason::BackendMissing,
        DropReason::CtMapFull,
        DropReason::InvalidPacket,
        DropReason::NatFailed,
        DropReason::EncryptionRequired,
        DropReason::SourceSpoofed,
        DropReason::FragmentUnknown,
        DropReason::UnsupportedL3,
        DropReason::SnatPortsExhausted,
        DropReason::NodePortNoSnatPath,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            DropReason::Forwarded => 0,
            DropReason::PolicyDenied => 1,
            DropReason::PolicyDefaultDeny => 2,
            DropReason::NoServiceBackend => 3,
            DropReason::BackendMissing => 4,
            DropReason::CtMapFull => 5,
            DropReason::InvalidPacket => 6,
            DropReason::NatFailed => 7,
            DropReason::EncryptionRequired => 8,
            DropReason::SourceSpoofed => 9,
            DropReason::FragmentUnknown => 10,
            DropReason::UnsupportedL3 => 11,
            DropReason::SnatPortsExhausted => 12,
            DropReason::NodePortNoSnatPath => 13,
            DropReason::Unknown(c) => c,
        }
    }

    /// From the numeric code.
    pub fn from_code(c: u32) -> DropReason {
        DropReason::ALL
            .into_iter()
            .find(|r| r.code() == c)
            .unwrap_or(DropReason::Unknown(c))
    }

    /// A stable snake_case name (for metrics labels and `meshctl`).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Forwarded => "forwarded",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::PolicyDefaultDeny => "policy_default_deny",
            DropReason::NoServiceBackend => "no_service_backend",
            DropReason::BackendMissing => "backend_missing",
            DropReason::CtMapFull => "ct_map_full",
            DropReason::InvalidPacket => "invalid_packet",
            DropReason::NatFailed => "nat_failed",
            DropReason::EncryptionRequired => "encryption_required",
            DropReason::SourceSpoofed => "source_spoofed",
            DropReason::FragmentUnknown => "fragment_unknown",
            DropReason::UnsupportedL3 => "unsupported_l3_protocol",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::NodePortNoSnatPath => "nodeport_no_snat_path",
            DropReason::Unknown(_) => "unknown",
        }
    }
}

/// Verdict of a flow event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FlowVerdict {
    /// A new flow passed.
    Forwarded,
    /// The packet was dropped.
    Dropped,
    /// The socket LB translated a connect to a backend.
    Translated,
    /// Policy would have dropped it; audit mode let it pass.
    Audit,
    /// Unknown code.
    Unknown(u8),
}

impl FlowVerdict {
    /// Every known verdict (checked against `flow.h` by the C twin test).
    pub const ALL: [FlowVerdict; 4] = [
        FlowVerdict::Forwarded,
        FlowVerdict::Dropped,
        FlowVerdict::Translated,
        FlowVerdict::Audit,
    ];

    /// The code in a flow event (`FLOW_VERDICT_*`).
    pub fn code(self) -> u8 {
        match self {
            FlowVerdict::Forwarded => 1,
            FlowVerdict::Dropped => 2,
            FlowVerdict::Translated => 3,
            FlowVerdict::Audit => 4,
            FlowVerdict::Unknown(c) => c,
        }
    }

    /// From the code in a flow event.
    pub fn from_code(c: u8) -> FlowVerdict {
        FlowVerdict::ALL
            .into_iter()
            .find(|v| v.code() == c)
            .unwrap_or(FlowVerdict::Unknown(c))
    }
}

/// Where the event was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FlowObservation {
    /// TC ingress of the pod's host veth (traffic from the pod).
    FromPod,
    /// TC egress of the pod's host veth (traffic to the pod).
    ToPod,
    /// A cgroup socket hook.
    Socket,
    /// TC ingress of the node's interface (NodePort, host firewall).
    FromNetdev,
    /// TC egress of the node's interface (host firewall).
    ToNetdev,
    /// Unknown code.
    Unknown(u8),
}

impl FlowObservation {
    /// Every known observation point (checked against `flow.h` by the C
    /// twin test).
    pub const ALL: [FlowObservation; 5] = [
        FlowObservation::FromPod,
        FlowObservation::ToPod,
        FlowObservation::Socket,
        FlowObservation::FromNetdev,
        FlowObservation::ToNetdev,
    ];

    /// The code in a flow event (`FLOW_OBS_*`).
    pub fn code(self) -> u8 {
        match self {
            FlowObservation::FromPod => 0,
            FlowObservation::ToPod => 1,
            FlowObservation::Socket => 2,
            FlowObservation::FromNetdev => 3,
            FlowObservation::ToNetdev => 4,
            FlowObservation::Unknown(c) => c,
        }
    }

    /// From the code in a flow event.
    pub fn from_code(c: u8) -> FlowObservation {
        FlowObservation::ALL
            .into_iter()
            .find(|o| o.code() == c)
            .unwrap_or(FlowObservation::Unknown(c))
    }
}

/// One flow event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FlowEvent {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// Source address (0.0.0.0 for socket events).
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: Protocol,
    /// Verdict.
    pub verdict: FlowVerdict,
    /// Observation point.
    pub observation: FlowObservation,
    /// Drop reason (`Forwarded` when not dropped).
    pub reason: DropReason,
    /// Source identity (from the ipcache).
    pub src_identity: u32,
    /// Destination identity (from the ipcache).
    pub dst_identity: u32,
    /// Interface (endpoint) the packet was seen on.
    pub ifindex: u32,
    /// Service the flow was translated for, 0 none.
    pub svc_id: u32,
    /// Policy rule that decided, 0 none.
    pub rule_id: u32,
}

impl FlowEvent {
    fn from_raw(r: &FlowEventRaw) -> FlowEvent {
        FlowEvent {
            ts_ns: r.ts_ns,
            saddr: ip_from_be(r.saddr),
            daddr: ip_from_be(r.daddr),
            sport: port_from_be(r.sport),
            dport: port_from_be(r.dport),
            proto: Protocol::from_number(r.proto),
            verdict: FlowVerdict::from_code(r.verdict),
            observation: FlowObservation::from_code(r.observation),
            reason: DropReason::from_code(r.reason),
            src_identity: r.src_identity,
            dst_identity: r.dst_identity,
            ifindex: r.ifindex,
            svc_id: r.svc_id,
            rule_id: r.rule_id,
        }
    }
}

/// Reads flow events from the pinned ring buffer. One reader at a time per
/// pin root consumes the events.
pub struct FlowReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for FlowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReader").finish_non_exhaustive()
    }
}

/// The ring buffer's fd, for readiness polling (e.g. tokio `AsyncFd`):
/// readable when events are pending.
impl std::os::fd::AsFd for FlowReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl FlowReader {
    /// Opens the pinned ring buffer under `pin_root`.
    pub fn open(pin_root: &Path) -> Result<FlowReader> {
        let (m, _) = open(pin_root, &FLOWS)?;
        Ok(FlowReader {
            ring: typed(&FLOWS, RingBuf::try_from(m))?,
        })
    }

    /// The next pending event, without waiting.
    pub fn next_event(&mut self) -> Option<FlowEvent> {
        loop {
            let item = self.ring.next()?;
            if item.len() < std::mem::size_of::<FlowEventRaw>() {
                continue;
            }
            let mut raw = FlowEventRaw::default();
            // Copy field by field from bytes: the ring buffer gives no alignment guarantee
            // we want to rely on.
            let b = &item[..];
            raw.ts_ns = u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes"));
            raw.saddr = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
            raw.daddr = u32::from_ne_bytes(b[12..16].try_into().expect("4 bytes"));
            raw.sport = u16::from_ne_bytes(b[16..18].try_into().expect("2 bytes"));
            raw.dport = u16::from_ne_bytes(b[18..20].try_into().expect("2 bytes"));
            raw.proto = b[20];
            raw.verdict = b[21];
            raw.observation = b[22];
            raw.reason = u32::from_ne_bytes(b[24..28].try_into().expect("4 bytes"));
            raw.src_identity = u32::from_ne_bytes(b[28..32].try_into().expect("4 bytes"));
            raw.dst_identity = u32::from_ne_bytes(b[32..36].try_into().expect("4 bytes"));
            raw.ifindex = u32::from_ne_bytes(b[36..40].try_into().expect("4 bytes"));
            raw.svc_id = u32::from_ne_bytes(b[40..44].try_into().expect("4 bytes"));
            raw.rule_id = u32::from_ne_bytes(b[44..48].try_into().expect("4 bytes"));
            return Some(FlowEvent::from_raw(&raw));
        }
    }

    /// Every pending event.
    pub fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// Reads events until one satisfies `pred` or `timeout` passes; returns
    /// the matching event and everything read before it.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&FlowEvent) -> bool,
    ) -> (Option<FlowEvent>, Vec<FlowEvent>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            while let Some(ev) = self.next_event() {
                if pred(&ev) {
                    return (Some(ev), seen);
                }
                seen.push(ev);
            }
            if Instant::now() >= deadline {
                return (None, seen);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Counters per reason, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// (reason, packets, bytes) for every reason with a non-zero count.
    pub by_reason: Vec<(DropReason, u64, u64)>,
}

impl Metrics {
    /// Packets counted for `reason`.
    pub fn packets(&self, reason: DropReason) -> u64 {
        self.by_reason
            .iter()
            .find(|(r, _, _)| *r == reason)
            .map(|(_, p, _)| *p)
            .unwrap_or(0)
    }
}

/// Reads the per-CPU counters.
pub struct MetricsReader {
    map: PerCpuArray<MapData, MetricVal>,
}

impl std::fmt::Debug for MetricsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsReader").finish_non_exhaustive()
    }
}

impl MetricsReader {
    /// Opens the pinned map under `pin_root`.
    pub fn open(pin_root: &Path) -> Result<MetricsReader> {
        let (m, _) = open(pin_root, &METRICS)?;
        Ok(MetricsReader {
            map: typed(&METRICS, PerCpuArray::try_from(m))?,
        })
    }

    /// Current totals.
    pub fn read(&self) -> Result<Metrics> {
        let mut by_reason = Vec::new();
        for (code, item) in self.map.iter().enumerate() {
            let values = item.map_err(|e| dump_err(&METRICS, e))?;
            let (p, b) = values
                .iter()
                .fold((0u64, 0u64), |(p, b), v| (p + v.packets, b + v.bytes));
            if p != 0 {
                by_reason.push((DropReason::from_code(code as u32), p, b));
            }
        }
        Ok(Metrics { by_reason })
    }
}
