//! The seam between the agent's logic and the kernel: [`Datapath`].
//!
//! The real implementation drives the pinned eBPF maps of crate mesh-bpf
//! (endpoints, services/backends, ipcache, policy). Its methods are map-level
//! operations: an upsert of an entry that is already there unchanged must be
//! harmless, removals of absent entries succeed, and the dump methods return
//! what the maps hold, so that a restarted agent can diff and update in place
//! instead of flushing ([`crate::reconcile`]).
//!
//! [`MemoryDatapath`] keeps the same state in memory; the unit tests use it to
//! check the reconciler's logic. The agent runs on
//! [`crate::bpf_datapath::BpfDatapath`] (`/v1/status` says "ebpf").

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use mesh_api::Identity;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The entries the datapath holds are the local API's types (`/v1/services`,
/// `/v1/ipcache`, `/v1/policies` serve them as they are).
pub use mesh_agent_api::datapath::{
    BackendAddr, Direction, EndpointId, EndpointPolicy, Frontend, FrontendKind, HostPolicy,
    ICMP_TYPE_PORT_BASE, IpcacheEntry, PolicyMatch, ServiceEntry,
};

/// What the datapath needs to know about a local pod endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathEndpoint {
    /// Its node-local id.
    pub id: EndpointId,
    /// Interface index of the host side of its veth (where TC programs attach).
    pub host_ifindex: u32,
    /// Name of the host-side veth.
    pub host_ifname: String,
    /// The pod's MAC address (pod side of the veth), when known.
    pub pod_mac: Option<String>,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
    /// Its security identity (reserved `init` until resolved).
    pub identity: Identity,
}

/// The datapath, as the agent's logic sees it. Implemented over the pinned
/// eBPF maps by mesh-bpf; [`MemoryDatapath`] for tests.
///
/// Errors are [`crate::Error::Datapath`] carrying the implementation's error.
pub trait Datapath: Send + 'static {
    /// A short name for status output ("ebpf", "memory").
    fn kind(&self) -> &'static str;

    /// Installs or updates a local endpoint (attach programs to its host
    /// veth, endpoint map entry).
    fn upsert_endpoint(&mut self, endpoint: &DatapathEndpoint) -> Result<()>;
    /// Removes a local endpoint and its policy; absent is fine.
    fn remove_endpoint(&mut self, id: EndpointId) -> Result<()>;
    /// The endpoints the datapath holds.
    fn endpoints(&self) -> Result<Vec<DatapathEndpoint>>;

    /// Installs or replaces a frontend with its backends.
    fn upsert_service(&mut self, service: &ServiceEntry) -> Result<()>;
    /// Removes a frontend and its backend slots; absent is fine.
    fn remove_service(&mut self, frontend: &Frontend) -> Result<()>;
    /// The services the datapath holds.
    fn services(&self) -> Result<Vec<ServiceEntry>>;

    /// Installs or updates an ipcache entry.
    fn upsert_ipcache(&mut self, entry: &IpcacheEntry) -> Result<()>;
    /// Removes an ipcache entry; absent is fine.
    fn remove_ipcache(&mut self, cidr: &IpNet) -> Result<()>;
    /// The ipcache entries the datapath holds.
    fn ipcache(&self) -> Result<Vec<IpcacheEntry>>;

    /// Replaces the policy of an endpoint.
    fn set_policy(&mut self, endpoint: EndpointId, policy: &EndpointPolicy) -> Result<()>;
    /// The policies the datapath holds, per endpoint.
    fn policies(&self) -> Result<BTreeMap<EndpointId, EndpointPolicy>>;

    /// Installs the host firewall (`None`: no host policy selects this
    /// node, whose traffic is then not judged). `node_ip` is the node's
    /// address: its interface gets the programs that judge the traffic.
    fn set_host_policy(
        &mut self,
        node_ip: Option<std::net::Ipv4Addr>,
        policy: Option<&HostPolicy>,
    ) -> Result<()>;
    /// The host firewall installed.
    fn host_policy(&self) -> Result<Option<HostPolicy>>;

    /// How full each map is: (map name, entries, capacity); empty when the
    /// datapath has no bounded maps.
    fn map_usage(&self) -> Result<Vec<(String, u64, u64)>> {
        Ok(Vec::new())
    }

    /// Periodic upkeep after a reconcile pass (the eBPF datapath frees
    /// backend entries no service has used for a grace period).
    fn housekeeping(&mut self) -> Result<()> {
        Ok(())
    }

    /// Packet counters by verdict or drop reason (name, packets, bytes),
    /// summed over CPUs; empty when the datapath keeps none.
    fn packet_counters(&self) -> Result<Vec<PacketCounter>> {
        Ok(Vec::new())
    }
}

/// One datapath counter: packets and bytes for a verdict or drop reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketCounter {
    /// `forwarded` or the drop reason (`policy_default_deny`, ...).
    pub reason: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A boxed datapath is a datapath (the agent picks the implementation at start-up).
impl<T: Datapath + ?Sized> Datapath for Box<T> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn upsert_endpoint(&mut self, e: &DatapathEndpoint) -> Result<()> {
        (**self).upsert_endpoint(e)
    }
    fn remove_endpoint(&mut self, id: EndpointId) -> Result<()> {
        (**self).remove_endpoint(id)
    }
    fn endpoints(&self) -> Result<Vec<DatapathEndpoint>> {
        (**self).endpoints()
    }
    fn upsert_service(&mut self, s: &ServiceEntry) -> Result<()> {
        (**self).upsert_service(s)
    }
    fn remove_service(&mut self, f: &Frontend) -> Result<()> {
        (**self).remove_service(f)
    }
    fn services(&self) -> Result<Vec<ServiceEntry>> {
        (**self).services()
    }
    fn upsert_ipcache(&mut self, e: &IpcacheEntry) -> Result<()> {
        (**self).upsert_ipcache(e)
    }
    fn remove_ipcache(&mut self, c: &IpNet) -> Result<()> {
        (**self).remove_ipcache(c)
    }
    fn ipcache(&self) -> Result<Vec<IpcacheEntry>> {
        (**self).ipcache()
    }
    fn set_policy(&mut self, id: EndpointId, p: &EndpointPolicy) -> Result<()> {
        (**self).set_policy(id, p)
    }
    fn policies(&self) -> Result<std::collections::BTreeMap<EndpointId, EndpointPolicy>> {
        (**self).policies()
    }
    fn set_host_policy(
        &mut self,
        node_ip: Option<std::net::Ipv4Addr>,
        policy: Option<&HostPolicy>,
    ) -> Result<()> {
        (**self).set_host_policy(node_ip, policy)
    }
    fn host_policy(&self) -> Result<Option<HostPolicy>> {
        (**self).host_policy()
    }
    fn packet_counters(&self) -> Result<Vec<PacketCounter>> {
        (**self).packet_counters()
    }
    fn housekeeping(&mut self) -> Result<()> {
        (**self).housekeeping()
    }
    fn map_usage(&self) -> Result<Vec<(String, u64, u64)>> {
        (**self).map_usage()
    }
}

/// A [`Datapath`] in memory: the same operations on plain maps, with a count
/// of the write operations so tests can tell "updated in place" from
/// "flushed and re-added".
#[derive(Debug, Default, Clone)]
pub struct MemoryDatapath {
    /// Endpoints by id.
    pub endpoints: BTreeMap<EndpointId, DatapathEndpoint>,
    /// Services by frontend.
    pub services: BTreeMap<Frontend, ServiceEntry>,
    /// ipcache by range.
    pub ipcache: BTreeMap<IpNet, IpcacheEntry>,
    /// Policies by endpoint.
    pub policies: BTreeMap<EndpointId, EndpointPolicy>,
    /// The host firewall.
    pub host: Option<HostPolicy>,
    /// Number of write operations performed (upserts, removals, set_policy).
    pub writes: u64,
}

impl Datapath for MemoryDatapath {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn upsert_endpoint(&mut self, endpoint: &DatapathEndpoint) -> Result<()> {
        self.writes += 1;
        self.endpoints.insert(endpoint.id, endpoint.clone());
        Ok(())
    }

    fn remove_endpoint(&mut self, id: EndpointId) -> Result<()> {
        self.writes += 1;
        self.endpoints.remove(&id);
        self.policies.remove(&id);
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<DatapathEndpoint>> {
        Ok(self.endpoints.values().cloned().collect())
    }

    fn upsert_service(&mut self, service: &ServiceEntry) -> Result<()> {
        self.writes += 1;
        self.services.insert(service.frontend, service.clone());
        Ok(())
    }

    fn remove_service(&mut self, frontend: &Frontend) -> Result<()> {
        self.writes += 1;
        self.services.remove(frontend);
        Ok(())
    }

    fn services(&self) -> Result<Vec<ServiceEntry>> {
        Ok(self.services.values().cloned().collect())
    }

    fn upsert_ipcache(&mut self, entry: &IpcacheEntry) -> Result<()> {
        self.writes += 1;
        self.ipcache.insert(entry.cidr, entry.clone());
        Ok(())
    }

    fn remove_ipcache(&mut self, cidr: &IpNet) -> Result<()> {
        self.writes += 1;
        self.ipcache.remove(cidr);
        Ok(())
    }

    fn ipcache(&self) -> Result<Vec<IpcacheEntry>> {
        Ok(self.ipcache.values().cloned().collect())
    }

    fn set_policy(&mut self, endpoint: EndpointId, policy: &EndpointPolicy) -> Result<()> {
        self.writes += 1;
        self.policies.insert(endpoint, policy.clone());
        Ok(())
    }

    fn policies(&self) -> Result<BTreeMap<EndpointId, EndpointPolicy>> {
        Ok(self.policies.clone())
    }

    fn set_host_policy(
        &mut self,
        _node_ip: Option<std::net::Ipv4Addr>,
        policy: Option<&HostPolicy>,
    ) -> Result<()> {
        self.writes += 1;
        self.host = policy.cloned();
        Ok(())
    }

    fn host_policy(&self) -> Result<Option<HostPolicy>> {
        Ok(self.host.clone())
    }
}

/// A [`MemoryDatapath`] that fails chosen operations, for tests of what the
/// logic does when the kernel refuses an update.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct FaultyDatapath {
    /// The state.
    pub inner: MemoryDatapath,
    /// Upserts of this endpoint fail.
    pub fail_endpoint: Option<EndpointId>,
    /// Every dump fails.
    pub fail_dumps: bool,
}

#[cfg(test)]
impl FaultyDatapath {
    fn fault(what: &str) -> crate::Error {
        crate::Error::Datapath {
            op: "test fault",
            target: what.to_string(),
            source: "injected failure".into(),
        }
    }

    fn dump<T>(&self, f: impl FnOnce(&MemoryDatapath) -> Result<T>) -> Result<T> {
        if self.fail_dumps {
            return Err(Self::fault("dump"));
        }
        f(&self.inner)
    }
}

#[cfg(test)]
impl Datapath for FaultyDatapath {
    fn kind(&self) -> &'static str {
        "faulty"
    }
    fn upsert_endpoint(&mut self, endpoint: &DatapathEndpoint) -> Result<()> {
        if self.fail_endpoint == Some(endpoint.id) {
            return Err(Self::fault("endpoint"));
        }
        self.inner.upsert_endpoint(endpoint)
    }
    fn remove_endpoint(&mut self, id: EndpointId) -> Result<()> {
        self.inner.remove_endpoint(id)
    }
    fn endpoints(&self) -> Result<Vec<DatapathEndpoint>> {
        self.dump(|d| d.endpoints())
    }
    fn upsert_service(&mut self, service: &ServiceEntry) -> Result<()> {
        self.inner.upsert_service(service)
    }
    fn remove_service(&mut self, frontend: &Frontend) -> Result<()> {
        self.inner.remove_service(frontend)
    }
    fn services(&self) -> Result<Vec<ServiceEntry>> {
        self.dump(|d| d.services())
    }
    fn upsert_ipcache(&mut self, entry: &IpcacheEntry) -> Result<()> {
        self.inner.upsert_ipcache(entry)
    }
    fn remove_ipcache(&mut self, cidr: &IpNet) -> Result<()> {
        self.inner.remove_ipcache(cidr)
    }
    fn ipcache(&self) -> Result<Vec<IpcacheEntry>> {
        self.dump(|d| d.ipcache())
    }
    fn set_policy(&mut self, endpoint: EndpointId, policy: &EndpointPolicy) -> Result<()> {
        self.inner.set_policy(endpoint, policy)
    }
    fn policies(&self) -> Result<BTreeMap<EndpointId, EndpointPolicy>> {
        self.dump(|d| d.policies())
    }
    fn set_host_policy(
        &mut self,
        node_ip: Option<std::net::Ipv4Addr>,
        policy: Option<&HostPolicy>,
    ) -> Result<()> {
        self.inner.set_host_policy(node_ip, policy)
    }
    fn host_policy(&self) -> Result<Option<HostPolicy>> {
        self.dump(|d| d.host_policy())
    }
}
