//! The node controller's seams as the agent runs them: the boringtun
//! device ([`Encryption`]), netlink routes and the pinned strict-mode maps
//! ([`KernelRoutes`]), and the mesh feed as the source of nodes.
//!
//! What it is for: thin adapters from the traits of
//! [`crate::node_controller`] to the real things; the logic is in the
//! controller and in [`crate::node_sync::sync_nodes`].

use std::future::Future;
use std::path::PathBuf;

use mesh_api::{NodeRecord, WireGuardKey};
use tokio::sync::watch;

use super::{DeviceStarter, NodeRoutes, NodeSource, WireguardDevice};
use crate::encryption::{DeviceSpec, Encryption, PeerOptions};
use crate::feed::mesh::MeshFeed;
use crate::masquerade::{BpfMasqueradeTable, MasqueradeSettings, MasqueradeStatus};
use crate::node_sync::{BpfEncryptionMap, EncryptionMap, RoutingStatus, Targets};
use crate::routes::{LocalNode, NetlinkRoutes, NodeEncryptionTable};

impl WireguardDevice for Encryption {
    fn ifname(&self) -> &str {
        Encryption::ifname(self)
    }

    fn public_key(&self) -> WireGuardKey {
        Encryption::public_key(self)
    }

    fn set_published(&self) {
        Encryption::set_published(self);
    }

    fn key_rotated(&self) -> impl Future<Output = ()> + Send {
        Encryption::key_rotated(self)
    }

    fn shutdown(&self) {
        Encryption::shutdown(self);
    }

    fn alive(&self) -> bool {
        Encryption::alive(self)
    }
}

/// Starts (or attaches to) the WireGuard device: key under the state dir,
/// interface, UDP port and program from the flags.
#[derive(Debug, Clone)]
pub struct EncryptionStarter(pub DeviceSpec);

impl DeviceStarter for EncryptionStarter {
    type Device = Encryption;

    fn start(&self) -> crate::Result<Encryption> {
        Encryption::start(&self.0)
    }
}

impl NodeSource for MeshFeed {
    fn nodes(&self) -> Vec<NodeRecord> {
        MeshFeed::nodes(self)
    }

    fn synced(&self) -> bool {
        self.status().synced
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        MeshFeed::subscribe(self)
    }

    fn remote_pod_cidrs(&self) -> Vec<ipnet::Ipv4Net> {
        MeshFeed::remote_pod_cidrs(self)
    }
}

/// Netlink routes and the strict-mode maps under `bpf_root`, opened on
/// first use (the maps appear once the datapath has pinned them).
#[derive(Debug)]
pub struct KernelRoutes {
    local: LocalNode,
    bpf_root: PathBuf,
    routes: Option<NetlinkRoutes>,
    /// Node encryption's table and rule.
    node_table: Option<NetlinkRoutes>,
    strict: Option<BpfEncryptionMap>,
    /// BPF masquerade (None: off by flag).
    masquerade: Option<MasqueradeSettings>,
    masq_table: Option<BpfMasqueradeTable>,
}

impl KernelRoutes {
    /// Routes for the node `local`, strict-mode maps under `bpf_root`.
    pub fn new(local: LocalNode, bpf_root: PathBuf) -> KernelRoutes {
        KernelRoutes {
            local,
            bpf_root,
            routes: None,
            node_table: None,
            strict: None,
            masquerade: None,
            masq_table: None,
        }
    }

    /// Also keeps BPF masquerade's exempt set and switch, each pass.
    pub fn with_masquerade(mut self, settings: MasqueradeSettings) -> KernelRoutes {
        self.masquerade = Some(settings);
        self
    }

    fn open(&mut self) {
        if self.routes.is_none() {
            match NetlinkRoutes::new() {
                Ok(t) => self.routes = Some(t),
                Err(e) => tracing::warn!(error = %e, "cannot open netlink"),
            }
        }
        if self.node_table.is_none() {
            match NetlinkRoutes::in_table(crate::routes::NODE_ENCRYPTION_TABLE) {
                Ok(t) => self.node_table = Some(t),
                Err(e) => tracing::warn!(error = %e, "cannot open netlink"),
            }
        }
        if self.strict.is_none() {
            match BpfEncryptionMap::open(&self.bpf_root) {
                Ok(m) => self.strict = Some(m),
                Err(e) => tracing::warn!(error = %e, "cannot open the strict-mode maps yet"),
            }
        }
        if self.masquerade.is_some() && self.masq_table.is_none() {
            match BpfMasqueradeTable::open(&self.bpf_root) {
                Ok(m) => self.masq_table = Some(m),
                Err(e) => tracing::warn!(error = %e, "cannot open the masquerade maps yet"),
            }
        }
    }
}

impl NodeRoutes<Encryption> for KernelRoutes {
    fn prepare(&mut self) {
        if let Err(e) = crate::routes::enable_forwarding() {
            tracing::warn!(error = %e, "cannot enable IPv4 forwarding; pod traffic between nodes will not flow");
        }
    }

    fn sync(
        &mut self,
        nodes: &[NodeRecord],
        remote_cidrs: &[ipnet::Ipv4Net],
        device: Option<&Encryption>,
        opts: &PeerOptions,
        strict: bool,
        status: &mut RoutingStatus,
    ) {
        self.open();
        let KernelRoutes {
            local,
            routes: Some(table),
            strict: strict_map,
            node_table,
            masquerade,
            masq_table,
            ..
        } = self
        else {
            return;
        };
        crate::node_sync::sync_nodes(
            nodes,
            local,
            device,
            opts,
            Targets {
                routes: table,
                strict_map: strict_map.as_mut().map(|m| m as &mut dyn EncryptionMap),
                node_encryption: node_table
                    .as_mut()
                    .map(|t| t as &mut dyn NodeEncryptionTable),
            },
            strict,
            remote_cidrs,
            status,
        );
        if let Some(settings) = masquerade {
            let mut changes = Vec::new();
            let mut failures = Vec::new();
            let masq = match masq_table {
                Some(t) => crate::masquerade::sync(
                    settings,
                    nodes,
                    local,
                    remote_cidrs,
                    t,
                    &mut changes,
                    &mut failures,
                ),
                None => MasqueradeStatus {
                    reason: Some("the masquerade maps are not pinned yet".into()),
                    ..Default::default()
                },
            };
            let was_active = status.masquerade.as_ref().map(|m| m.active);
            if !masq.active && was_active != Some(false) {
                tracing::warn!(
                    reason = masq.reason.as_deref().unwrap_or("unknown"),
                    "BPF masquerade is not active: pods leave with their own address"
                );
            }
            for f in &failures {
                tracing::warn!(failure = %f, "masquerade");
            }
            if !changes.is_empty() {
                tracing::info!(changes = ?changes, "nodes → masquerade exempt set");
                status.last_changes.extend(changes);
            }
            status.failures.extend(failures);
            status.masquerade = Some(masq);
        }
    }
}
