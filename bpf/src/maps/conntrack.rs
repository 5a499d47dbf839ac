//! Connection tracking (read-only view for dumps and tests; the datapath owns
//! its entries and the LRU evicts them).

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashMap, MapData};

use super::raw::{CtKey, CtVal};
use super::{CONNTRACK, CONNTRACK_NEW, Protocol, dump_err, ip_from_be, open, port_from_be, typed};
use crate::error::Result;

/// Which entry kind (see conntrack.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CtDirection {
    /// A flow the pod opened (post-DNAT tuple).
    Out,
    /// A flow opened towards the pod.
    In,
    /// The pre-DNAT tuple of a service flow; remembers the backend.
    Service,
    /// The backend-side tuple of a NodePort flow (replies are reverse-translated).
    NodePort,
}

impl CtDirection {
    /// Every entry kind (checked against `conntrack.h` by the C twin test).
    pub const ALL: [CtDirection; 4] = [
        CtDirection::Out,
        CtDirection::In,
        CtDirection::Service,
        CtDirection::NodePort,
    ];

    /// The code in `ct_key.dir` (`CT_DIR_*`).
    pub fn code(self) -> u8 {
        match self {
            CtDirection::Out => 0,
            CtDirection::In => 1,
            CtDirection::Service => 2,
            CtDirection::NodePort => 3,
        }
    }
}

/// One conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CtEntry {
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: Protocol,
    /// Entry kind.
    pub direction: CtDirection,
    /// Backend chosen (service entries), 0 otherwise.
    pub backend_id: u32,
    /// Service id whose reverse NAT applies to replies, 0 none.
    pub rev_nat_id: u32,
    /// Packets seen.
    pub packets: u32,
    /// Last packet (CLOCK_MONOTONIC ns).
    pub last_seen_ns: u64,
    /// Whether a reply was seen (the entry lives in `mw_ct`; unanswered
    /// ones live in `mw_ct_new`, which a flood cannot grow past).
    pub replied: bool,
}

/// The conntrack tables: answered flows, and those not answered yet.
#[derive(Debug)]
pub struct ConntrackMap {
    map: HashMap<MapData, CtKey, CtVal>,
    new: HashMap<MapData, CtKey, CtVal>,
}

impl ConntrackMap {
    /// Opens the pinned maps under `pin_root` (checking their layout).
    pub fn open(pin_root: &Path) -> Result<ConntrackMap> {
        let (m, _) = open(pin_root, &CONNTRACK)?;
        let (n, _) = open(pin_root, &CONNTRACK_NEW)?;
        Ok(ConntrackMap {
            map: typed(&CONNTRACK, HashMap::try_from(m))?,
            new: typed(&CONNTRACK_NEW, HashMap::try_from(n))?,
        })
    }

    /// Every entry of both tables.
    pub fn dump(&self) -> Result<Vec<CtEntry>> {
        let mut out = Vec::new();
        let tables = [
            (&self.map, &CONNTRACK, true),
            (&self.new, &CONNTRACK_NEW, false),
        ];
        for (item, spec, replied) in tables
            .into_iter()
            .flat_map(|(m, spec, replied)| m.iter().map(move |i| (i, spec, replied)))
        {
            let (k, v) = item.map_err(|e| dump_err(spec, e))?;
            out.push(CtEntry {
                saddr: ip_from_be(k.saddr),
                daddr: ip_from_be(k.daddr),
                sport: port_from_be(k.sport),
                dport: port_from_be(k.dport),
                proto: Protocol::from_number(k.proto),
                direction: CtDirection::ALL
                    .into_iter()
                    .find(|d| d.code() == k.dir)
                    .unwrap_or(CtDirection::NodePort),
                backend_id: v.backend_id,
                rev_nat_id: v.rev_nat_id,
                packets: v.packets,
                last_seen_ns: v.last_seen_ns,
                replied,
            });
        }
        Ok(out)
    }
}
