//! A snapshot of every map, for `meshctl` and the agent's local API (and for
//! comparing state before and after a restart).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::Result;
use crate::maps::{
    Backend, BackendId, BackendMap, ConntrackMap, EncryptConfig, EncryptMap, EndpointInfo,
    EndpointPolicy, IpcacheEntry, IpcacheMap, MasqueradeConfig, MasqueradeMap, Metrics,
    MetricsReader, PolicyEntry, PolicyKey, PolicyMap, ServiceEntry, ServiceMap, SnatEntry,
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
    /// Local endpoints: (host veth ifindex, record, enforcement).
    pub endpoints: Vec<(u32, EndpointInfo, EndpointPolicy)>,
    /// Policy verdict entries.
    pub policy: Vec<(PolicyKey, PolicyEntry)>,
    /// Number of conntrack entries.
    pub conntrack_entries: usize,
    /// Counters by reason.
    pub metrics: Metrics,
    /// Strict-mode encryption: CIDRs that must leave through the WireGuard
    /// device (network, prefix length, owning node IP).
    pub encrypt_cidrs: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Strict-mode enforcement and the device's ifindex.
    pub encrypt_config: EncryptConfig,
    /// How the node SNATs (masquerade, NodePort to other nodes); None: not
    /// at all.
    pub masquerade: Option<MasqueradeConfig>,
    /// Destinations that keep a pod's own address (network, prefix length).
    pub masquerade_exempt: Vec<(Ipv4Addr, u8)>,
    /// Every SNAT translation (masqueraded flows, NodePort flows to other
    /// nodes), as `cilium bpf nat list` shows them.
    pub snat: Vec<SnatEntry>,
}

/// How full one map is (for map-pressure metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MapUsage {
    /// Map name (also its pin file name).
    pub name: &'static str,
    /// Entries present.
    pub entries: u64,
    /// Capacity.
    pub max_entries: u32,
}

/// Entry counts of the maps a reconciler fills (services, slots, backends,
/// reverse NAT, Maglev, ipcache, policy, endpoints, conntrack, affinity)
/// and of the SNAT table.
pub fn usage(pin_root: &Path) -> Result<Vec<MapUsage>> {
    use crate::maps::raw::*;
    use crate::maps::{
        AFFINITY, AFFINITY_SVC, BACKENDS, CONNTRACK, CONNTRACK_NEW, ENDPOINTS, IPCACHE, MAGLEV,
        MapSpec, POLICY, REVNAT, SERVICES, SLOTS, SNAT, count_hash, count_ipcache,
    };
    let row = |spec: &MapSpec, (entries, max_entries): (u64, u32)| MapUsage {
        name: spec.name,
        entries,
        max_entries,
    };
    Ok(vec![
        row(
            &SERVICES,
            count_hash::<SvcKey, SvcVal>(pin_root, &SERVICES)?,
        ),
        row(&SLOTS, count_hash::<SlotKey, u32>(pin_root, &SLOTS)?),
        row(
            &BACKENDS,
            count_hash::<u32, BackendVal>(pin_root, &BACKENDS)?,
        ),
        row(&REVNAT, count_hash::<u32, RevNatVal>(pin_root, &REVNAT)?),
        row(&MAGLEV, count_hash::<u32, MaglevVal>(pin_root, &MAGLEV)?),
        row(&IPCACHE, count_ipcache(pin_root)?),
        row(
            &POLICY,
            count_hash::<PolicyKeyRaw, PolicyValRaw>(pin_root, &POLICY)?,
        ),
        row(
            &ENDPOINTS,
            count_hash::<u32, PolicyEndpointRaw>(pin_root, &ENDPOINTS)?,
        ),
        row(
            &CONNTRACK,
            count_hash::<CtKey, CtVal>(pin_root, &CONNTRACK)?,
        ),
        row(
            &CONNTRACK_NEW,
            count_hash::<CtKey, CtVal>(pin_root, &CONNTRACK_NEW)?,
        ),
        row(
            &AFFINITY_SVC,
            count_hash::<u32, u32>(pin_root, &AFFINITY_SVC)?,
        ),
        row(
            &AFFINITY,
            count_hash::<AffinityKey, AffinityVal>(pin_root, &AFFINITY)?,
        ),
        row(&SNAT, count_hash::<SnatKey, SnatVal>(pin_root, &SNAT)?),
    ])
}

/// Reads every map under `pin_root` (the datapath must have been loaded
/// there once; nothing needs to be running).
pub fn dump(pin_root: &Path) -> Result<Dump> {
    let policy = PolicyMap::open(pin_root)?;
    let encrypt = EncryptMap::open(pin_root)?;
    let masq = MasqueradeMap::open(pin_root)?;
    Ok(Dump {
        services: ServiceMap::open(pin_root)?.dump()?,
        backends: BackendMap::open(pin_root)?.dump()?,
        ipcache: IpcacheMap::open(pin_root)?.dump()?,
        endpoints: policy.endpoint_records()?,
        policy: policy.dump()?,
        conntrack_entries: ConntrackMap::open(pin_root)?.dump()?.len(),
        metrics: MetricsReader::open(pin_root)?.read()?,
        encrypt_cidrs: encrypt.dump()?,
        encrypt_config: encrypt.config()?,
        masquerade: masq.config()?,
        masquerade_exempt: masq.exempt()?,
        snat: masq.translations()?,
    })
}
