//! Desired datapath state from every source, reconciled into a [`Datapath`].
//!
//! Sources (the endpoint manager today; the Kubernetes and mesh feeds later)
//! replace *their* part of the desired state; [`Reconciler::reconcile`] reads
//! what the datapath holds, and applies only the difference: entries that are
//! already right are not touched, so a restarted agent converges in place on
//! pinned maps without a flush. The result is a value
//! ([`ReconcileReport`]): what changed and what failed, per object, so the
//! caller decides what to retry or report.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;

use crate::datapath::{
    Datapath, DatapathEndpoint, EndpointId, EndpointPolicy, Frontend, IpcacheEntry, ServiceEntry,
};
use crate::error::Result;

/// The ipcache/service source name of the local endpoint manager; its
/// entries win over any other source's for the same key.
pub const LOCAL_SOURCE: &str = "local-endpoints";

/// A datapath object, as named in reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectRef {
    /// A local endpoint.
    Endpoint(EndpointId),
    /// A service frontend.
    Service(Frontend),
    /// An ipcache range.
    Ipcache(IpNet),
    /// The policy of an endpoint.
    Policy(EndpointId),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Endpoint(id) => write!(f, "endpoint {id}"),
            ObjectRef::Service(fe) => write!(f, "service {}:{}/{}", fe.ip, fe.port, fe.protocol),
            ObjectRef::Ipcache(net) => write!(f, "ipcache {net}"),
            ObjectRef::Policy(id) => write!(f, "policy of endpoint {id}"),
        }
    }
}

/// What one reconcile pass did.
#[must_use = "a reconcile report says what failed and must be looked at"]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Objects written (added or changed).
    pub upserted: Vec<ObjectRef>,
    /// Objects removed.
    pub removed: Vec<ObjectRef>,
    /// Objects that could not be written or removed, with the error text.
    pub failed: Vec<(ObjectRef, String)>,
}

impl ReconcileReport {
    /// Whether nothing failed.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// The error for `object`, if its update failed.
    pub fn failure(&self, object: &ObjectRef) -> Option<&str> {
        self.failed
            .iter()
            .find(|(o, _)| o == object)
            .map(|(_, e)| e.as_str())
    }

    /// Whether the pass changed nothing and nothing failed.
    pub fn is_noop(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

/// Desired state plus the datapath it is reconciled into.
#[derive(Debug)]
pub struct Reconciler<D> {
    datapath: D,
    endpoints: BTreeMap<EndpointId, DatapathEndpoint>,
    services: BTreeMap<String, BTreeMap<Frontend, ServiceEntry>>,
    ipcache: BTreeMap<String, BTreeMap<IpNet, IpcacheEntry>>,
    policies: BTreeMap<EndpointId, EndpointPolicy>,
    pending: std::collections::BTreeSet<String>,
}

impl<D: Datapath> Reconciler<D> {
    /// A reconciler with empty desired state (nothing is written until
    /// [`Reconciler::reconcile`]).
    pub fn new(datapath: D) -> Self {
        Reconciler {
            datapath,
            endpoints: BTreeMap::new(),
            services: BTreeMap::new(),
            ipcache: BTreeMap::new(),
            policies: BTreeMap::new(),
            pending: std::collections::BTreeSet::new(),
        }
    }

    /// Declares a source that will deliver services or ipcache entries but
    /// has not yet (a feed still syncing after a restart). Until every
    /// declared source has delivered once, reconciling adds and updates but
    /// removes no service and no ipcache entry, so a restarted agent never
    /// withdraws what a feed is about to confirm.
    pub fn expect_source(&mut self, source: &str) {
        self.pending.insert(source.to_string());
    }

    /// The datapath (for status and dumps).
    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    /// Mutable access to the datapath (tests inject faults through it).
    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
    }

    /// Sets the desired state of a local endpoint.
    pub fn set_endpoint(&mut self, endpoint: DatapathEndpoint) {
        self.endpoints.insert(endpoint.id, endpoint);
    }

    /// Drops a local endpoint (and its policy) from the desired state.
    pub fn remove_endpoint(&mut self, id: EndpointId) {
        self.endpoints.remove(&id);
        self.policies.remove(&id);
    }

    /// Replaces everything `source` wants in the service maps.
    pub fn set_services(&mut self, source: &str, services: Vec<ServiceEntry>) {
        let map = services.into_iter().map(|s| (s.frontend, s)).collect();
        self.services.insert(source.to_string(), map);
        self.pending.remove(source);
    }

    /// Replaces everything `source` wants in the ipcache.
    pub fn set_ipcache(&mut self, source: &str, entries: Vec<IpcacheEntry>) {
        let map = entries.into_iter().map(|e| (e.cidr, e)).collect();
        self.ipcache.insert(source.to_string(), map);
        self.pending.remove(source);
    }

    /// Sets the policy of an endpoint (replaced as a whole).
    pub fn set_policy(&mut self, id: EndpointId, policy: EndpointPolicy) {
        self.policies.insert(id, policy);
    }

    /// Whether `id` has a policy in the desired state (else it gets the
    /// default).
    pub fn has_policy(&self, id: EndpointId) -> bool {
        self.policies.contains_key(&id)
    }

    /// Replaces the policies of every endpoint: endpoints missing from
    /// `policies` get the default (allow all).
    pub fn set_policies(&mut self, policies: BTreeMap<EndpointId, EndpointPolicy>) {
        self.policies = policies;
    }

    /// The merged desired services: the local source first, then the others
    /// in name order; the first claim of a frontend wins.
    pub fn desired_services(&self) -> BTreeMap<Frontend, ServiceEntry> {
        merge_sources(&self.services)
    }

    /// The merged desired ipcache (same precedence as services).
    pub fn desired_ipcache(&self) -> BTreeMap<IpNet, IpcacheEntry> {
        merge_sources(&self.ipcache)
    }

    /// The desired policy of every desired endpoint (allow-all when no
    /// policy selects it).
    pub fn desired_policies(&self) -> BTreeMap<EndpointId, EndpointPolicy> {
        self.endpoints
            .keys()
            .map(|id| (*id, self.policies.get(id).cloned().unwrap_or_default()))
            .collect()
    }

    /// Makes the datapath hold exactly the desired state, touching only what
    /// differs. A dump that fails is reported as a failure of every desired
    /// object of that kind (nothing is written blindly).
    #[tracing::instrument(
        name = "reconcile",
        skip_all,
        fields(endpoints = self.endpoints.len())
    )]
    pub fn reconcile(&mut self) -> ReconcileReport {
        let mut report = ReconcileReport::default();

        let desired = self.endpoints.clone();
        diff_apply(
            &mut report,
            self.datapath
                .endpoints()
                .map(|v| v.into_iter().map(|e| (e.id, e)).collect()),
            &desired,
            ObjectRef::Endpoint,
            |dp: &mut D, e| dp.upsert_endpoint(e),
            |dp: &mut D, id| dp.remove_endpoint(*id),
            &mut self.datapath,
            true,
        );

        let may_remove = self.pending.is_empty();
        let desired = self.desired_services();
        diff_apply(
            &mut report,
            self.datapath
                .services()
                .map(|v| v.into_iter().map(|s| (s.frontend, s)).collect()),
            &desired,
            ObjectRef::Service,
            |dp: &mut D, s| dp.upsert_service(s),
            |dp: &mut D, fe| dp.remove_service(fe),
            &mut self.datapath,
            may_remove,
        );

        let desired = self.desired_ipcache();
        diff_apply(
            &mut report,
            self.datapath
                .ipcache()
                .map(|v| v.into_iter().map(|e| (e.cidr, e)).collect()),
            &desired,
            ObjectRef::Ipcache,
            |dp: &mut D, e| dp.upsert_ipcache(e),
            |dp: &mut D, net| dp.remove_ipcache(net),
            &mut self.datapath,
            may_remove,
        );

        // Policies of removed endpoints went with them; only write changes.
        let desired = self.desired_policies();
        match self.datapath.policies() {
            Ok(installed) => {
                for (id, policy) in &desired {
                    if report.failure(&ObjectRef::Endpoint(*id)).is_some() {
                        continue;
                    }
                    if installed.get(id) != Some(policy) {
                        match self.datapath.set_policy(*id, policy) {
                            Ok(()) => report.upserted.push(ObjectRef::Policy(*id)),
                            Err(e) => report.failed.push((ObjectRef::Policy(*id), e.to_string())),
                        }
                    }
                }
            }
            Err(e) => {
                for id in desired.keys() {
                    report.failed.push((ObjectRef::Policy(*id), e.to_string()));
                }
            }
        }
        if let Err(e) = self.datapath.housekeeping() {
            tracing::warn!(error = %e, "datapath housekeeping failed; will retry");
        }
        report
    }
}

fn merge_sources<K: Ord + Clone, V: Clone>(
    sources: &BTreeMap<String, BTreeMap<K, V>>,
) -> BTreeMap<K, V> {
    let mut merged = BTreeMap::new();
    let local = sources.get(LOCAL_SOURCE).into_iter();
    let others = sources
        .iter()
        .filter(|(name, _)| name.as_str() != LOCAL_SOURCE)
        .map(|(_, m)| m);
    for map in local.chain(others) {
        for (k, v) in map {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    merged
}

#[allow(clippy::too_many_arguments)]
fn diff_apply<D, K: Ord + Clone, V: PartialEq>(
    report: &mut ReconcileReport,
    installed: Result<BTreeMap<K, V>>,
    desired: &BTreeMap<K, V>,
    name: fn(K) -> ObjectRef,
    upsert: impl Fn(&mut D, &V) -> Result<()>,
    remove: impl Fn(&mut D, &K) -> Result<()>,
    datapath: &mut D,
    may_remove: bool,
) {
    let installed = match installed {
        Ok(i) => i,
        Err(e) => {
            for k in desired.keys() {
                report
                    .failed
                    .push((name(k.clone()), format!("dump failed: {e}")));
            }
            return;
        }
    };
    for (k, want) in desired {
        if installed.get(k) == Some(want) {
            continue;
        }
        match upsert(datapath, want) {
            Ok(()) => report.upserted.push(name(k.clone())),
            Err(e) => report.failed.push((name(k.clone()), e.to_string())),
        }
    }
    for k in installed.keys() {
        if !may_remove || desired.contains_key(k) {
            continue;
        }
        match remove(datapath, k) {
            Ok(()) => report.removed.push(name(k.clone())),
            Err(e) => report.failed.push((name(k.clone()), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
