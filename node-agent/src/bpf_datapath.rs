//! [`BpfDatapath`]: the [`Datapath`] trait over the pinned eBPF maps of
//! crate mesh-bpf — the implementation the node-agent runs with.
//!
//! What it is for: turning the reconciler's map-level operations into map
//! writes and TC/cgroup attachments, and reading the maps back (the dump
//! methods) so a restarted agent diffs against what the kernel really holds
//! and writes nothing when nothing changed.
//!
//! - endpoints: TC programs attached to the host veth (pinned links) plus a
//!   record in the endpoint map (keyed by the veth's ifindex, carrying the
//!   node-local endpoint id, address, MAC and identity). An endpoint whose
//!   links are missing is dumped with `host_ifindex` 0 so the reconciler
//!   re-attaches it (or removes it when it is no longer wanted);
//! - services: [`mesh_bpf::LoadBalancer`] (random or Maglev, from the flag).
//!   The maps do not know whether a frontend is a ClusterIP or a NodePort, so
//!   the kinds of the other frontends (NodePort, external IP, LoadBalancer)
//!   are recorded in `<state-dir>/datapath/frontends.json` (written
//!   atomically; `nodeports.json` of earlier versions is read once);
//!   everything else reads back as ClusterIP;
//! - ipcache: [`mesh_bpf::IpcacheMap`]; policy: [`mesh_bpf::PolicyMap`].
//!
//! - ClientIP session affinity: per service, in `mw_affinity_svc` (timeout)
//!   with the clients' choices in the LRU map `mw_affinity`.
//!
//! What it is not for: deciding desired state, IPv6 (the datapath is IPv4
//! only: IPv6 inputs are refused with an error naming them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use mesh_api::{Identity, Protocol};
use mesh_bpf::{Direction as BpfDirection, PolicyAction, PolicyEntry, PolicyKey};

use crate::datapath::{
    BackendAddr, Datapath, DatapathEndpoint, Direction, EndpointId, EndpointPolicy, Frontend,
    FrontendKind, HostPolicy, IpcacheEntry, PolicyMatch, ServiceEntry,
};
use crate::error::{Error, Result};

/// How long a backend entry no service references is kept before it is
/// freed: flows still on a withdrawn backend drain meanwhile.
pub const BACKEND_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// The eBPF datapath (see the module docs).
#[derive(Debug)]
pub struct BpfDatapath {
    dp: mesh_bpf::Datapath,
    lb: mesh_bpf::LoadBalancer,
    ipcache: mesh_bpf::IpcacheMap,
    policy: mesh_bpf::PolicyMap,
    algorithm: mesh_bpf::LbAlgorithm,
    kinds_file: PathBuf,
    /// Frontends that are not ClusterIPs, with their kind.
    kinds: BTreeMap<(Ipv4Addr, u16, Protocol), FrontendKind>,
    node_interfaces: BTreeSet<String>,
}

/// What [`BpfDatapath::open`] needs.
#[derive(Debug, Clone)]
pub struct BpfDatapathConfig {
    /// bpffs directory the maps and links are pinned under.
    pub bpf_root: PathBuf,
    /// cgroup v2 directory the socket LB is attached to (None: no socket LB).
    pub cgroup_root: Option<PathBuf>,
    /// The agent's state directory (NodePort bookkeeping lives below it).
    pub state_dir: PathBuf,
    /// Backend selection for every service.
    pub maglev: bool,
    /// Maglev's flow hash seed (`--bpf-lb-maglev-hash-seed`).
    pub maglev_seed: u32,
    /// The node address whose interface gets the node programs at once
    /// (masquerade needs them whether or not a NodePort exists); None:
    /// only when a NodePort or host policy needs them.
    pub node_address: Option<Ipv4Addr>,
}

fn bpf_err(op: &'static str, target: impl Into<String>) -> impl FnOnce(mesh_bpf::Error) -> Error {
    let target = target.into();
    move |e| Error::Datapath {
        op,
        target,
        source: Box::new(e),
    }
}

fn refuse(op: &'static str, target: impl Into<String>, why: String) -> Error {
    Error::Datapath {
        op,
        target: target.into(),
        source: why.into(),
    }
}

impl BpfDatapath {
    /// Loads the programs (reusing maps pinned under `bpf_root`, never
    /// flushing them), attaches the socket LB to the cgroup, re-points
    /// services written with another LB algorithm, and removes pinned links
    /// of interfaces that vanished while the agent was down.
    pub fn open(config: &BpfDatapathConfig) -> Result<BpfDatapath> {
        let root = &config.bpf_root;
        let target = root.display().to_string();
        // A fresh machine has neither mounted: prepare them, as Cilium's
        // agent does (the chart's init container normally has already).
        mesh_bpf::mounts::ensure_bpffs(root).map_err(bpf_err("prepare bpffs", &target))?;
        if let Some(cgroup) = &config.cgroup_root {
            mesh_bpf::mounts::ensure_cgroup2(cgroup)
                .map_err(bpf_err("prepare cgroup v2", cgroup.display().to_string()))?;
        }
        let mut dp = mesh_bpf::Datapath::load(root).map_err(bpf_err("load datapath", &target))?;
        if let Some(cgroup) = &config.cgroup_root {
            dp.attach_cgroup(cgroup)
                .map_err(bpf_err("attach socket LB", cgroup.display().to_string()))?;
        }
        let pruned = dp
            .prune_stale_interfaces()
            .map_err(bpf_err("prune stale links", &target))?;
        if !pruned.is_empty() {
            tracing::info!(?pruned, "removed TC links of interfaces that are gone");
        }
        dp.services()
            .and_then(|mut s| s.set_maglev_seed(config.maglev_seed))
            .map_err(bpf_err("set the Maglev hash seed", &target))?;
        let lb = dp
            .load_balancer()
            .map_err(bpf_err("open service maps", &target))?;
        let ipcache = dp.ipcache().map_err(bpf_err("open ipcache", &target))?;
        let policy = dp.policy().map_err(bpf_err("open policy maps", &target))?;
        let dir = config.state_dir.join("datapath");
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let kinds_file = dir.join("frontends.json");
        let kinds = read_kinds(&kinds_file, &dir.join("nodeports.json"))?;
        let mut this = BpfDatapath {
            dp,
            lb,
            ipcache,
            policy,
            algorithm: if config.maglev {
                mesh_bpf::LbAlgorithm::Maglev
            } else {
                mesh_bpf::LbAlgorithm::Random
            },
            kinds_file,
            kinds,
            node_interfaces: BTreeSet::new(),
        };
        this.migrate_algorithm()?;
        let addrs: BTreeSet<Ipv4Addr> = this
            .kinds
            .iter()
            .filter(|(_, k)| **k == FrontendKind::NodePort)
            .map(|((a, _, _), _)| *a)
            .collect();
        for addr in addrs.into_iter().chain(config.node_address) {
            this.serve_node_address(addr)?;
        }
        Ok(this)
    }

    /// The underlying loaded datapath (flows, counters, node interface).
    pub fn inner(&mut self) -> &mut mesh_bpf::Datapath {
        &mut self.dp
    }

    /// Services written under another algorithm (the flag changed) are
    /// rewritten in place: same id, same backends.
    fn migrate_algorithm(&mut self) -> Result<()> {
        let views = self
            .lb
            .dump()
            .map_err(bpf_err("dump services", "load balancer"))?;
        for v in views {
            if v.algorithm != self.algorithm {
                self.lb
                    .upsert(v.frontend, &v.backends, self.algorithm)
                    .map_err(bpf_err("change LB algorithm", fe_text(&v.frontend)))?;
            }
        }
        Ok(())
    }

    /// Attaches the NodePort programs to the interface holding the node
    /// address `addr` (once per interface per process; re-attaching after a
    /// restart swaps the pinned links' programs in place).
    fn serve_node_address(&mut self, addr: Ipv4Addr) -> Result<()> {
        let target = format!("NodePort address {addr}");
        let Some(ifname) = crate::netdev::interface_with_address(addr)?.map(|i| i.name) else {
            return Err(refuse(
                "attach NodePort programs",
                &target,
                "no interface of the agent's network namespace has this address".into(),
            ));
        };
        if self.node_interfaces.insert(ifname.clone()) {
            self.dp.attach_node_interface(&ifname).map_err(bpf_err(
                "attach NodePort programs",
                format!("{target} ({ifname})"),
            ))?;
            tracing::info!(%addr, ifname, "NodePort programs attached");
        }
        Ok(())
    }

    fn save_kinds(&self) -> Result<()> {
        let tmp = self.kinds_file.with_extension("json.tmp");
        let list: Vec<_> = self.kinds.iter().collect();
        let body = serde_json::to_vec(&list).expect("frontend kinds serialize");
        std::fs::write(&tmp, body).map_err(Error::io("write", &tmp))?;
        std::fs::rename(&tmp, &self.kinds_file).map_err(Error::io("rename", &tmp))
    }

    fn links_present(&self, ifindex: u32, ifname: &str) -> bool {
        let dir = self.dp.pin_root().join("links");
        ["ingress", "egress"]
            .iter()
            .all(|s| dir.join(format!("tc-{ifindex}-{ifname}-{s}")).exists())
    }

    /// (ifindex, record, enforcement) of every endpoint with this id.
    fn records_of(
        &self,
        id: EndpointId,
    ) -> Result<Vec<(u32, mesh_bpf::EndpointInfo, mesh_bpf::EndpointPolicy)>> {
        Ok(self
            .policy
            .endpoint_records()
            .map_err(bpf_err("dump endpoints", format!("endpoint {id}")))?
            .into_iter()
            .filter(|(_, info, _)| info.endpoint_id == id)
            .collect())
    }
}

/// The recorded frontend kinds: `frontends.json`, or, from an agent of an
/// earlier version, its `nodeports.json` (every entry a NodePort).
fn read_kinds(
    file: &std::path::Path,
    legacy: &std::path::Path,
) -> Result<BTreeMap<(Ipv4Addr, u16, Protocol), FrontendKind>> {
    let corrupt = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::StateCorrupt { path, source }
    };
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let list: Vec<((Ipv4Addr, u16, Protocol), FrontendKind)> =
                serde_json::from_str(&text).map_err(corrupt(file))?;
            return Ok(list.into_iter().collect());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", file)(e)),
    }
    match std::fs::read_to_string(legacy) {
        Ok(text) => {
            let set: BTreeSet<(Ipv4Addr, u16, Protocol)> =
                serde_json::from_str(&text).map_err(corrupt(legacy))?;
            Ok(set
                .into_iter()
                .map(|k| (k, FrontendKind::NodePort))
                .collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io("read", legacy)(e)),
    }
}

fn fe_text(f: &mesh_bpf::Frontend) -> String {
    format!("{}:{}/{}", f.addr, f.port, f.proto)
}

fn v4(ip: IpAddr, what: &str) -> Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(refuse(
            "convert address",
            format!("{what} {ip}"),
            "the eBPF datapath is IPv4-only; IPv6 addresses cannot be installed".into(),
        )),
    }
}

/// The policy map entries of the endpoint with host-side ifindex `ifindex`
/// for `p`: allows, then denies (a deny with the key of an allow replaces
/// it: a deny wins). `target` names the endpoint in errors.
pub fn policy_entries(
    ifindex: u32,
    p: &EndpointPolicy,
    target: &str,
) -> Result<Vec<(PolicyKey, PolicyEntry)>> {
    let entries = p
        .allow
        .iter()
        .map(|a| (a, PolicyAction::Allow))
        .chain(p.deny.iter().map(|a| (a, PolicyAction::Deny)))
        .map(|(a, action)| {
            Ok((
                PolicyKey {
                    endpoint: ifindex,
                    identity: a.identity.map(Identity::get).unwrap_or(0),
                    port: a.port,
                    proto: a.protocol.map(|p| to_bpf_proto(p, target)).transpose()?,
                    direction: match a.direction {
                        Direction::Ingress => BpfDirection::Ingress,
                        Direction::Egress => BpfDirection::Egress,
                    },
                },
                PolicyEntry {
                    action,
                    rule_id: a.rule,
                },
            ))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(entries.into_iter().collect())
}

/// The API's form of a policy map key.
fn policy_match(k: &PolicyKey, rule: u32) -> PolicyMatch {
    PolicyMatch {
        direction: match k.direction {
            BpfDirection::Ingress => Direction::Ingress,
            BpfDirection::Egress => Direction::Egress,
        },
        identity: (k.identity != 0)
            .then(|| Identity::from_u32(k.identity).ok())
            .flatten(),
        port: k.port,
        protocol: k.proto.and_then(from_bpf_proto),
        rule,
    }
}

fn to_bpf_proto(p: Protocol, what: &str) -> Result<mesh_bpf::Protocol> {
    match p {
        Protocol::Tcp => Ok(mesh_bpf::Protocol::Tcp),
        Protocol::Udp => Ok(mesh_bpf::Protocol::Udp),
        Protocol::Icmp => Ok(mesh_bpf::Protocol::Icmp),
        Protocol::Sctp => Err(refuse(
            "convert protocol",
            what.to_string(),
            "SCTP is not supported by the eBPF datapath; use TCP or UDP".into(),
        )),
    }
}

fn from_bpf_proto(p: mesh_bpf::Protocol) -> Option<Protocol> {
    match p {
        mesh_bpf::Protocol::Tcp => Some(Protocol::Tcp),
        mesh_bpf::Protocol::Udp => Some(Protocol::Udp),
        mesh_bpf::Protocol::Icmp => Some(Protocol::Icmp),
        _ => None,
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

impl Datapath for BpfDatapath {
    fn kind(&self) -> &'static str {
        "ebpf"
    }

    fn upsert_endpoint(&mut self, e: &DatapathEndpoint) -> Result<()> {
        let target = format!("endpoint {} ({})", e.id, e.host_ifname);
        let ipv4 = e
            .ips
            .iter()
            .find_map(|ip| match ip {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| {
                refuse(
                    "upsert endpoint",
                    &target,
                    "the endpoint has no IPv4 address".into(),
                )
            })?;
        let now = mesh_bpf::netns::ifindex(&e.host_ifname)
            .map_err(bpf_err("look up host veth", &target))?;
        if now != e.host_ifindex {
            return Err(refuse(
                "upsert endpoint",
                &target,
                format!(
                    "interface {} has ifindex {now}, the endpoint says {}; it was recreated",
                    e.host_ifname, e.host_ifindex
                ),
            ));
        }
        // A reused id at another interface: drop the old record first.
        for (ifindex, info, _) in self.records_of(e.id)? {
            if ifindex != e.host_ifindex {
                self.dp
                    .detach_interface(&info.ifname)
                    .map_err(bpf_err("detach old interface", &target))?;
                self.policy
                    .remove_endpoint(ifindex)
                    .map_err(bpf_err("remove old endpoint record", &target))?;
            }
        }
        let enforcement = self
            .policy
            .endpoint(e.host_ifindex)
            .map_err(bpf_err("read endpoint", &target))?
            .unwrap_or_default();
        let info = mesh_bpf::EndpointInfo {
            endpoint_id: e.id,
            ipv4: Some(ipv4),
            mac: e.pod_mac.as_deref().and_then(parse_mac),
            ifname: e.host_ifname.clone(),
        };
        // Record first (policy lookups find the endpoint), then the programs.
        self.policy
            .upsert_endpoint(
                e.host_ifindex,
                &info,
                mesh_bpf::EndpointPolicy {
                    identity: e.identity.get(),
                    ..enforcement
                },
            )
            .map_err(bpf_err("write endpoint record", &target))?;
        self.dp
            .attach_interface(&e.host_ifname)
            .map_err(bpf_err("attach TC programs", &target))
    }

    fn remove_endpoint(&mut self, id: EndpointId) -> Result<()> {
        for (ifindex, info, _) in self.records_of(id)? {
            let target = format!("endpoint {id} ({})", info.ifname);
            self.dp
                .detach_interface(&info.ifname)
                .map_err(bpf_err("detach TC programs", &target))?;
            self.policy
                .remove_endpoint(ifindex)
                .map_err(bpf_err("remove endpoint record", &target))?;
        }
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<DatapathEndpoint>> {
        let records = self
            .policy
            .endpoint_records()
            .map_err(bpf_err("dump endpoints", "endpoint map"))?;
        Ok(records
            .into_iter()
            .filter_map(|(ifindex, info, p)| {
                let identity = Identity::from_u32(p.identity).ok()?;
                Some(DatapathEndpoint {
                    id: info.endpoint_id,
                    host_ifindex: if self.links_present(ifindex, &info.ifname) {
                        ifindex
                    } else {
                        0
                    },
                    host_ifname: info.ifname,
                    pod_mac: info.mac.map(mac_text),
                    ips: info.ipv4.into_iter().map(IpAddr::V4).collect(),
                    identity,
                })
            })
            .collect())
    }

    fn upsert_service(&mut self, s: &ServiceEntry) -> Result<()> {
        let f = &s.frontend;
        let target = format!("service {}:{}/{}", f.ip, f.port, f.protocol);
        let proto = to_bpf_proto(f.protocol, &target)?;
        let frontend = mesh_bpf::Frontend {
            addr: v4(f.ip, "frontend")?,
            port: f.port,
            proto,
        };
        let backends = s
            .backends
            .iter()
            .map(|b| {
                Ok(mesh_bpf::Backend {
                    addr: v4(b.ip, "backend")?,
                    port: b.port,
                    proto,
                    cluster_id: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if f.kind == FrontendKind::NodePort {
            self.serve_node_address(frontend.addr)?;
        }
        self.lb
            .upsert(frontend, &backends, self.algorithm)
            .map_err(bpf_err("upsert service", &target))?;
        self.lb
            .set_affinity(frontend, s.affinity_timeout)
            .map_err(bpf_err("set session affinity", &target))?;
        let key = (frontend.addr, f.port, f.protocol);
        let changed = match f.kind {
            FrontendKind::ClusterIp => self.kinds.remove(&key).is_some(),
            kind => self.kinds.insert(key, kind) != Some(kind),
        };
        if changed {
            self.save_kinds()?;
        }
        Ok(())
    }

    fn remove_service(&mut self, f: &Frontend) -> Result<()> {
        let target = format!("service {}:{}/{}", f.ip, f.port, f.protocol);
        let frontend = mesh_bpf::Frontend {
            addr: v4(f.ip, "frontend")?,
            port: f.port,
            proto: to_bpf_proto(f.protocol, &target)?,
        };
        self.lb
            .delete(frontend)
            .map_err(bpf_err("remove service", &target))?;
        if self
            .kinds
            .remove(&(frontend.addr, f.port, f.protocol))
            .is_some()
        {
            self.save_kinds()?;
        }
        Ok(())
    }

    fn services(&self) -> Result<Vec<ServiceEntry>> {
        let views = self
            .lb
            .dump()
            .map_err(bpf_err("dump services", "load balancer"))?;
        Ok(views
            .into_iter()
            .filter_map(|v| {
                let protocol = from_bpf_proto(v.frontend.proto)?;
                let key = (v.frontend.addr, v.frontend.port, protocol);
                Some(ServiceEntry {
                    frontend: Frontend {
                        ip: IpAddr::V4(v.frontend.addr),
                        port: v.frontend.port,
                        protocol,
                        kind: self
                            .kinds
                            .get(&key)
                            .copied()
                            .unwrap_or(FrontendKind::ClusterIp),
                    },
                    backends: v
                        .backends
                        .iter()
                        .map(|b| BackendAddr {
                            ip: IpAddr::V4(b.addr),
                            port: b.port,
                        })
                        .collect(),
                    affinity_timeout: v.affinity_timeout,
                })
            })
            .collect())
    }

    fn upsert_ipcache(&mut self, e: &IpcacheEntry) -> Result<()> {
        let target = format!("ipcache {}", e.cidr);
        let IpNet::V4(net) = e.cidr else {
            return Err(refuse(
                "upsert ipcache",
                &target,
                "the eBPF datapath is IPv4-only".into(),
            ));
        };
        let id = e.identity.get();
        self.ipcache
            .upsert(
                net.network(),
                net.prefix_len(),
                mesh_bpf::IpcacheEntry {
                    identity: id,
                    tunnel_endpoint: e.node_ip,
                    encrypt: e.encrypt,
                    cluster_id: if e.identity.is_reserved() {
                        0
                    } else {
                        ((id >> 16) & 0xff) as u8
                    },
                },
            )
            .map_err(bpf_err("upsert ipcache", &target))
    }

    fn remove_ipcache(&mut self, cidr: &IpNet) -> Result<()> {
        let target = format!("ipcache {cidr}");
        let IpNet::V4(net) = cidr else {
            return Ok(()); // never installed
        };
        self.ipcache
            .delete(net.network(), net.prefix_len())
            .map_err(bpf_err("remove ipcache", &target))
    }

    fn ipcache(&self) -> Result<Vec<IpcacheEntry>> {
        let entries = self
            .ipcache
            .dump()
            .map_err(bpf_err("dump ipcache", "ipcache"))?;
        Ok(entries
            .into_iter()
            .filter_map(|(addr, len, e)| {
                Some(IpcacheEntry {
                    cidr: IpNet::V4(Ipv4Net::new(addr, len).ok()?),
                    identity: Identity::from_u32(e.identity).ok()?,
                    node_ip: e.tunnel_endpoint,
                    encrypt: e.encrypt,
                })
            })
            .collect())
    }

    fn set_policy(&mut self, id: EndpointId, p: &EndpointPolicy) -> Result<()> {
        let target = format!("policy of endpoint {id}");
        let records = self.records_of(id)?;
        let Some((ifindex, _, current)) = records.into_iter().next() else {
            return Err(refuse(
                "set policy",
                &target,
                "the endpoint is not in the datapath".into(),
            ));
        };
        let entries = policy_entries(ifindex, p, &target)?;
        self.policy
            .sync_endpoint(
                ifindex,
                mesh_bpf::EndpointPolicy {
                    identity: current.identity,
                    ingress_enforced: p.ingress_enforced,
                    egress_enforced: p.egress_enforced,
                },
                &entries,
            )
            .map_err(bpf_err("write policy", &target))?;
        Ok(())
    }

    fn set_host_policy(
        &mut self,
        node_ip: Option<Ipv4Addr>,
        hp: Option<&HostPolicy>,
    ) -> Result<()> {
        let target = "host firewall";
        let Some(hp) = hp else {
            if self
                .policy
                .host()
                .map_err(bpf_err("read host policy", target))?
                .is_some()
            {
                self.policy
                    .remove_endpoint(mesh_bpf::HOST_ENDPOINT)
                    .map_err(bpf_err("remove host policy", target))?;
                tracing::info!("host firewall off: no host policy selects this node");
            }
            return Ok(());
        };
        // The programs that judge the node's traffic sit on its interface.
        let Some(addr) = node_ip else {
            return Err(refuse(
                "set host policy",
                target,
                "the node's address is not known yet".into(),
            ));
        };
        self.serve_node_address(addr)?;
        let entries = policy_entries(mesh_bpf::HOST_ENDPOINT, &hp.policy, target)?;
        self.policy
            .sync_host(
                mesh_bpf::EndpointPolicy {
                    identity: mesh_api::ReservedIdentity::Host.identity().get(),
                    ingress_enforced: hp.policy.ingress_enforced,
                    egress_enforced: hp.policy.egress_enforced,
                },
                hp.audit,
                &entries,
            )
            .map_err(bpf_err("write host policy", target))?;
        Ok(())
    }

    fn host_policy(&self) -> Result<Option<HostPolicy>> {
        let Some((p, audit)) = self
            .policy
            .host()
            .map_err(bpf_err("read host policy", "host firewall"))?
        else {
            return Ok(None);
        };
        let entries = self
            .policy
            .dump()
            .map_err(bpf_err("dump policy", "policy map"))?;
        let of = |action: PolicyAction| {
            entries
                .iter()
                .filter(|(k, v)| k.endpoint == mesh_bpf::HOST_ENDPOINT && v.action == action)
                .map(|(k, v)| policy_match(k, v.rule_id))
                .collect()
        };
        Ok(Some(HostPolicy {
            policy: EndpointPolicy {
                ingress_enforced: p.ingress_enforced,
                egress_enforced: p.egress_enforced,
                allow: of(PolicyAction::Allow),
                deny: of(PolicyAction::Deny),
            },
            audit,
        }))
    }

    fn map_usage(&self) -> Result<Vec<(String, u64, u64)>> {
        let root = self.dp.pin_root();
        Ok(mesh_bpf::usage(root)
            .map_err(bpf_err("count map entries", &root.display().to_string()))?
            .into_iter()
            .map(|u| (u.name.to_string(), u.entries, u64::from(u.max_entries)))
            .collect())
    }

    fn housekeeping(&mut self) -> Result<()> {
        let freed = self
            .lb
            .prune_backends_unused_for(BACKEND_GRACE)
            .map_err(bpf_err("prune backends", "backend map"))?;
        if freed > 0 {
            tracing::info!(freed, grace = ?BACKEND_GRACE, "backend entries no service uses were freed");
        }
        Ok(())
    }

    fn packet_counters(&self) -> Result<Vec<crate::datapath::PacketCounter>> {
        let root = self.dp.pin_root();
        let reader = mesh_bpf::MetricsReader::open(root)
            .map_err(bpf_err("open counters", &root.display().to_string()))?;
        let m = reader
            .read()
            .map_err(bpf_err("read counters", &root.display().to_string()))?;
        Ok(m.by_reason
            .into_iter()
            .map(|(reason, packets, bytes)| crate::datapath::PacketCounter {
                reason: reason.name().to_string(),
                packets,
                bytes,
            })
            .collect())
    }

    fn policies(&self) -> Result<BTreeMap<EndpointId, EndpointPolicy>> {
        let records = self
            .policy
            .endpoint_records()
            .map_err(bpf_err("dump endpoints", "endpoint map"))?;
        let entries = self
            .policy
            .dump()
            .map_err(bpf_err("dump policy", "policy map"))?;
        let mut out = BTreeMap::new();
        for (ifindex, info, p) in records {
            let of = |action: PolicyAction| {
                entries
                    .iter()
                    .filter(move |(k, v)| k.endpoint == ifindex && v.action == action)
                    .map(|(k, v)| policy_match(k, v.rule_id))
                    .collect()
            };
            out.insert(
                info.endpoint_id,
                EndpointPolicy {
                    ingress_enforced: p.ingress_enforced,
                    egress_enforced: p.egress_enforced,
                    allow: of(PolicyAction::Allow),
                    deny: of(PolicyAction::Deny),
                },
            );
        }
        Ok(out)
    }
}

impl BpfDatapathConfig {
    /// The datapath settings of the agent's flags: socket LB on
    /// `--cgroup-root` only with `--kube-proxy-replacement`.
    pub fn from_agent(config: &crate::config::AgentConfig) -> Self {
        BpfDatapathConfig {
            bpf_root: config.bpf_root.clone(),
            cgroup_root: config
                .kube_proxy_replacement
                .then(|| config.cgroup_root.clone()),
            state_dir: config.state_dir.clone(),
            maglev: config.lb_algorithm == crate::config::LbAlgorithm::Maglev,
            maglev_seed: mesh_bpf::maglev::seed_of(&config.bpf_lb_maglev_hash_seed),
            node_address: None,
        }
    }
}

#[cfg(test)]
mod tests;
