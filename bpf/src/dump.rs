//! A snapshot of every map, for `meshctl` and the agent's local API (and for
//! comparing state before and after a restart).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::Result;
use crate::maps::{
    Backend, BackendId, BackendMap, ConntrackMap, EndpointPolicy, IpcacheEntry, IpcacheMap,
    Metrics, MetricsReader, PolicyEntry, PolicyKey, PolicyMap, ServiceEntry, ServiceMap,
};

/// Contents of the pinned maps under one pin root (conntrack as a count:
/// it is large and changes with every packet).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dump {
    /// Services with their backend ids in slot order.
    pub services: Vec<ServiceEntry>,
    /// Backends by id.
    pub backends: Vec<(BackendId, Backend)>,
    /// ipcache entries (network, prefix length, entry).
    pub ipcache: Vec<(Ipv4Addr, u8, IpcacheEntry)>,
    /// Per-endpoint enforcement.
    pub endpoints: Vec<(u32, EndpointPolicy)>,
    /// Policy verdict entries.
    pub policy: Vec<(PolicyKey, PolicyEntry)>,
    /// Number of conntrack entries.
    pub conntrack_entries: usize,
    /// Counters by reason.
    pub metrics: Metrics,
}

/// Reads every map under `pin_root` (the datapath must have been loaded
/// there once; nothing needs to be running).
pub fn dump(pin_root: &Path) -> Result<Dump> {
    let policy = PolicyMap::open(pin_root)?;
    Ok(Dump {
        services: ServiceMap::open(pin_root)?.dump()?,
        backends: BackendMap::open(pin_root)?.dump()?,
        ipcache: IpcacheMap::open(pin_root)?.dump()?,
        endpoints: policy.endpoints()?,
        policy: policy.dump()?,
        conntrack_entries: ConntrackMap::open(pin_root)?.dump()?.len(),
        metrics: MetricsReader::open(pin_root)?.read()?,
    })
}
