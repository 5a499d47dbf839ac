//! The endpoint manager: the pods' network endpoints on this node, as the
//! CNI plugin registers them.
//!
//! Each endpoint is persisted as one JSON file under
//! `<state-dir>/endpoints/` (written to a temporary file, then renamed), so a
//! restarted agent recovers every endpoint without the CNI running again and
//! reconciles them into the datapath in place. Endpoints feed the
//! [`Reconciler`]: the endpoint itself, its policy, and one ipcache entry per
//! pod address (source [`LOCAL_SOURCE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mesh_api::{Identity, ReservedIdentity};
use sha2::{Digest, Sha256};

use crate::datapath::{Datapath, DatapathEndpoint, EndpointId, IpcacheEntry};
use crate::error::{Error, Result};
use crate::reconcile::{LOCAL_SOURCE, ObjectRef, ReconcileReport, Reconciler};

/// What the CNI registers and the API lists (crate mesh-agent-api).
pub use mesh_agent_api::endpoint::{Endpoint, EndpointRegistration};

/// An endpoint as the datapath holds it (the API's [`Endpoint`] is
/// mesh-agent-api's, so this is a local extension).
trait EndpointExt {
    fn datapath(&self) -> DatapathEndpoint;
}

impl EndpointExt for Endpoint {
    fn datapath(&self) -> DatapathEndpoint {
        DatapathEndpoint {
            id: self.id,
            host_ifindex: self.registration.host_ifindex,
            host_ifname: self.registration.host_ifname.clone(),
            pod_mac: self.registration.pod_mac.clone(),
            ips: self.registration.ips.clone(),
            identity: self.identity,
        }
    }
}

/// 11 hex characters derived from (container id, interface): the suffix of
/// the host veth name (`mw` + 11 = 13 ≤ 15 characters) and of state file
/// names. Hashing keeps names short and free of odd characters.
pub fn endpoint_hash(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}\0{ifname}").as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..11]
        .to_string()
}

/// The host-side veth name of an endpoint.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("mw{}", endpoint_hash(container_id, ifname))
}

/// Why `id` is not a CNI container id (non-empty, letters, digits, `_`, `.`,
/// `-`), or `None`.
pub fn container_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("it is empty");
    }
    if id.len() > 256 {
        return Some("it is longer than 256 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Some("it may only contain letters, digits, '_', '.' and '-'");
    }
    None
}

/// Why `name` is not a Linux interface name, or `None`.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        return Some("an interface name has 1-15 characters");
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Some("an interface name may not be '.', '..' or contain '/', ':' or whitespace");
    }
    None
}

/// Tracks, persists and reconciles the node's endpoints.
#[derive(Debug)]
pub struct EndpointManager<D> {
    dir: PathBuf,
    pod_cidr: Option<IpNet>,
    endpoints: BTreeMap<(String, String), Endpoint>,
    reconciler: Reconciler<D>,
    /// The policies a new endpoint is held by from its first packet, until
    /// the policy controller computes its own (None: none known yet).
    held_by: Option<crate::policy::compile::CompiledPolicies>,
}

impl<D: Datapath> EndpointManager<D> {
    /// Opens the state under `state_dir` (created if needed), loads every
    /// persisted endpoint and reconciles them into `datapath`.
    pub fn open(
        state_dir: &Path,
        pod_cidr: Option<IpNet>,
        datapath: D,
    ) -> Result<(Self, ReconcileReport)> {
        Self::open_expecting(state_dir, pod_cidr, datapath, &[])
    }

    /// [`EndpointManager::open`], with sources declared pending before the
    /// first reconcile ([`Reconciler::expect_source`]): what they own stays
    /// in the datapath until they deliver.
    pub fn open_expecting(
        state_dir: &Path,
        pod_cidr: Option<IpNet>,
        datapath: D,
        expected: &[&str],
    ) -> Result<(Self, ReconcileReport)> {
        let dir = state_dir.join("endpoints");
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let mut endpoints = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io("read", &dir))? {
            let path = entry.map_err(Error::io("read", &dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue; // leftovers of an interrupted write (.tmp)
            }
            let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
            let ep: Endpoint =
                serde_json::from_str(&text).map_err(|source| Error::StateCorrupt {
                    path: path.clone(),
                    source,
                })?;
            endpoints.insert(key(&ep.registration), ep);
        }
        let mut mgr = EndpointManager {
            dir,
            pod_cidr,
            endpoints,
            reconciler: Reconciler::new(datapath),
            held_by: None,
        };
        for source in expected {
            mgr.reconciler.expect_source(source);
        }
        for ep in mgr.endpoints.values() {
            mgr.reconciler.set_endpoint(ep.datapath());
        }
        // The installed policies stay what is desired until the policy
        // controller computes them again: a restarted agent neither opens
        // (allow-all) nor rewrites what it enforces.
        if let Ok(installed) = mgr.reconciler.datapath().policies() {
            let known: BTreeSet<EndpointId> = mgr.endpoints.values().map(|e| e.id).collect();
            mgr.reconciler.set_policies(
                installed
                    .into_iter()
                    .filter(|(id, _)| known.contains(id))
                    .collect(),
            );
        }
        mgr.push_ipcache();
        let report = mgr.reconciler.reconcile();
        Ok((mgr, report))
    }

    /// Sets the policies that hold a new endpoint from its registration:
    /// whatever could select a pod of its namespace makes it default-deny
    /// until the policy controller's next pass, so no pod starts unenforced
    /// (also while the mesh feed has not synced after a restart).
    pub fn hold_new_endpoints_by(&mut self, compiled: crate::policy::compile::CompiledPolicies) {
        // Endpoints registered before any policy was known, and not given
        // one since, are held now too (a CNI ADD right after a restart can
        // come before the policies are listed).
        let unheld: Vec<(EndpointId, Option<String>)> = self
            .endpoints
            .values()
            .filter(|e| !self.reconciler.has_policy(e.id))
            .map(|e| (e.id, e.registration.pod_namespace.clone()))
            .collect();
        for (id, ns) in &unheld {
            self.reconciler
                .set_policy(*id, compiled.unresolved_endpoint_policy(ns.as_deref()));
        }
        self.held_by = Some(compiled);
        if !unheld.is_empty() {
            log_failures(&self.reconciler.reconcile());
        }
    }

    /// The reconciler (other sources add services, ipcache, policies here).
    pub fn reconciler(&mut self) -> &mut Reconciler<D> {
        &mut self.reconciler
    }

    /// The datapath.
    pub fn datapath(&self) -> &D {
        self.reconciler.datapath()
    }

    /// All endpoints, by (container id, interface).
    pub fn list(&self) -> Vec<Endpoint> {
        self.endpoints.values().cloned().collect()
    }

    /// One endpoint.
    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Endpoint> {
        self.endpoints
            .get(&(container_id.to_string(), ifname.to_string()))
    }

    /// Registers (or re-registers, keeping its id) an endpoint: validated,
    /// persisted, reconciled. When the datapath refuses it, nothing is kept.
    pub fn register(&mut self, reg: EndpointRegistration) -> Result<Endpoint> {
        self.validate(&reg)?;
        let k = key(&reg);
        let previous = self.endpoints.get(&k).cloned();
        let id = match &previous {
            Some(p) => p.id,
            None => self.free_id()?,
        };
        let ep = Endpoint {
            id,
            identity: previous
                .as_ref()
                .map(|p| p.identity)
                .unwrap_or_else(|| ReservedIdentity::Init.identity()),
            registration: reg,
        };
        self.persist(&ep)?;
        self.endpoints.insert(k.clone(), ep.clone());
        if previous.is_none()
            && let Some(c) = &self.held_by
        {
            let held = c.unresolved_endpoint_policy(ep.registration.pod_namespace.as_deref());
            self.reconciler.set_policy(id, held);
        }
        self.reconciler.set_endpoint(ep.datapath());
        self.push_ipcache();
        let report = self.reconciler.reconcile();
        if let Some(err) = report.failure(&ObjectRef::Endpoint(id)) {
            let err = err.to_string();
            // Undo: back to the previous state (or none), on disk and in the datapath.
            match previous {
                Some(p) => {
                    self.persist(&p)?;
                    self.reconciler.set_endpoint(p.datapath());
                    self.endpoints.insert(k, p);
                }
                None => {
                    self.unpersist(&ep)?;
                    self.reconciler.remove_endpoint(id);
                    self.endpoints.remove(&k);
                }
            }
            self.push_ipcache();
            let _undo = self.reconciler.reconcile();
            return Err(Error::Datapath {
                op: "upsert endpoint",
                target: format!(
                    "{}/{}",
                    ep.registration.container_id, ep.registration.ifname
                ),
                source: err.into(),
            });
        }
        log_failures(&report);
        Ok(ep)
    }

    /// Removes an endpoint; `Ok(None)` when it was not registered (DEL is
    /// idempotent).
    pub fn deregister(&mut self, container_id: &str, ifname: &str) -> Result<Option<Endpoint>> {
        let k = (container_id.to_string(), ifname.to_string());
        let Some(ep) = self.endpoints.get(&k).cloned() else {
            return Ok(None);
        };
        self.unpersist(&ep)?;
        self.endpoints.remove(&k);
        self.reconciler.remove_endpoint(ep.id);
        self.push_ipcache();
        log_failures(&self.reconciler.reconcile());
        Ok(Some(ep))
    }

    /// Sets the security identity of an endpoint (once its labels resolve).
    pub fn set_identity(
        &mut self,
        container_id: &str,
        ifname: &str,
        identity: Identity,
    ) -> Result<Option<Endpoint>> {
        let k = (container_id.to_string(), ifname.to_string());
        let Some(mut ep) = self.endpoints.get(&k).cloned() else {
            return Ok(None);
        };
        ep.identity = identity;
        self.persist(&ep)?;
        self.reconciler.set_endpoint(ep.datapath());
        self.endpoints.insert(k, ep.clone());
        self.push_ipcache();
        log_failures(&self.reconciler.reconcile());
        Ok(Some(ep))
    }

    /// Sets the security identities of several endpoints at once (by
    /// endpoint id; unknown ids are ignored) and reconciles once. Returns how
    /// many changed.
    pub fn set_identities(&mut self, identities: &BTreeMap<EndpointId, Identity>) -> Result<usize> {
        let mut changed = 0;
        let keys: Vec<_> = self.endpoints.keys().cloned().collect();
        for k in keys {
            let ep = self.endpoints.get(&k).expect("key from the map");
            let Some(id) = identities.get(&ep.id) else {
                continue;
            };
            if ep.identity == *id {
                continue;
            }
            let mut ep = ep.clone();
            ep.identity = *id;
            self.persist(&ep)?;
            self.reconciler.set_endpoint(ep.datapath());
            self.endpoints.insert(k, ep);
            changed += 1;
        }
        if changed > 0 {
            self.push_ipcache();
        }
        Ok(changed)
    }

    /// Forgets the endpoints for which `alive` is false (e.g. their host
    /// veth is gone after a reboot, or was deleted while the agent was down)
    /// and returns them. The caller decides what "alive" means; the manager
    /// stays free of kernel access.
    pub fn prune(&mut self, alive: impl Fn(&Endpoint) -> bool) -> Result<Vec<Endpoint>> {
        let dead: Vec<Endpoint> = self
            .endpoints
            .values()
            .filter(|e| !alive(e))
            .cloned()
            .collect();
        for ep in &dead {
            self.unpersist(ep)?;
            self.endpoints.remove(&key(&ep.registration));
            self.reconciler.remove_endpoint(ep.id);
        }
        if !dead.is_empty() {
            self.push_ipcache();
            log_failures(&self.reconciler.reconcile());
        }
        Ok(dead)
    }

    /// One reconcile pass (periodic retry of failed updates).
    pub fn reconcile(&mut self) -> ReconcileReport {
        self.reconciler.reconcile()
    }

    fn validate(&self, reg: &EndpointRegistration) -> Result<()> {
        let bad = |reason: String| Error::InvalidEndpoint {
            container_id: reg.container_id.clone(),
            ifname: reg.ifname.clone(),
            reason,
        };
        if let Some(p) = container_id_problem(&reg.container_id) {
            return Err(bad(format!("container id: {p}")));
        }
        if let Some(p) = ifname_problem(&reg.ifname) {
            return Err(bad(format!("ifname: {p}")));
        }
        if let Some(p) = ifname_problem(&reg.host_ifname) {
            return Err(bad(format!("host_ifname: {p}")));
        }
        if reg.host_ifindex == 0 {
            return Err(bad(
                "host_ifindex must be the host veth's interface index (> 0)".into(),
            ));
        }
        if !reg.netns.starts_with('/') {
            return Err(bad(format!(
                "netns {:?} must be an absolute path",
                reg.netns
            )));
        }
        if reg.ips.is_empty() {
            return Err(bad("an endpoint needs at least one IP".into()));
        }
        for ip in &reg.ips {
            if let Some(cidr) = self.pod_cidr
                && !cidr.contains(ip)
            {
                return Err(bad(format!(
                    "IP {ip} is outside this node's pod CIDR {cidr}"
                )));
            }
            let owner = self
                .endpoints
                .values()
                .find(|e| e.registration.ips.contains(ip) && key(&e.registration) != key(reg));
            if let Some(owner) = owner {
                return Err(bad(format!(
                    "IP {ip} already belongs to endpoint {}/{}",
                    owner.registration.container_id, owner.registration.ifname
                )));
            }
        }
        Ok(())
    }

    fn free_id(&self) -> Result<EndpointId> {
        let used: std::collections::BTreeSet<EndpointId> =
            self.endpoints.values().map(|e| e.id).collect();
        (1..=EndpointId::MAX)
            .find(|id| !used.contains(id))
            .ok_or(Error::EndpointIdsExhausted {
                count: self.endpoints.len(),
            })
    }

    fn push_ipcache(&mut self) {
        let entries = self
            .endpoints
            .values()
            .flat_map(|ep| {
                ep.registration.ips.iter().map(move |ip| IpcacheEntry {
                    cidr: IpNet::from(*ip),
                    identity: ep.identity,
                    node_ip: None,
                    encrypt: false,
                })
            })
            .collect();
        self.reconciler.set_ipcache(LOCAL_SOURCE, entries);
    }

    fn file(&self, reg: &EndpointRegistration) -> PathBuf {
        self.dir.join(format!(
            "{}.json",
            endpoint_hash(&reg.container_id, &reg.ifname)
        ))
    }

    fn persist(&self, ep: &Endpoint) -> Result<()> {
        let path = self.file(&ep.registration);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(ep).expect("endpoint serializes");
        let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        f.write_all(&body).map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("rename into place", &path))
    }

    fn unpersist(&self, ep: &Endpoint) -> Result<()> {
        let path = self.file(&ep.registration);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", &path)(e))
            }
            _ => Ok(()),
        }
    }
}

fn key(reg: &EndpointRegistration) -> (String, String) {
    (reg.container_id.clone(), reg.ifname.clone())
}

fn log_failures(report: &ReconcileReport) {
    for (object, err) in &report.failed {
        tracing::warn!(%object, error = %err, "datapath update failed; retried on the next reconcile");
    }
}

#[cfg(test)]
mod tests;
