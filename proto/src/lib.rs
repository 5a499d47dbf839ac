//! Meshwork's wire contract: the protobuf export/watch API
//! (`meshwork/v1/export.proto`, compiled with protox, no system protoc),
//! its generated prost messages and tonic client and server stubs, and
//! lossless conversions to and from mesh-api's domain types. Conversions
//! from the wire validate every field and name it in the error (mesh-api's
//! [`Error`]); conversions to the wire cannot fail.
//!
//! What it is for: the one place both ends of `Export` (mesh-apiserver's
//! server and importer, the export client the node-agent uses) take the
//! messages and their meaning from. What it is not for: domain rules and
//! validation themselves (mesh-api, which stays free of tonic and prost),
//! or any connection handling (mesh-export-client, mesh-apiserver).

use std::net::IpAddr;

use ipnet::IpNet;
use mesh_api::cidr::parse_cidr;
use mesh_api::records;
use mesh_api::{
    Affinity, Backend, ClusterName, EndpointRecord, Error, Identity, IdentityRecord, Kind,
    LabelSet, NamedPort, NodeName, NodeRecord, Protocol, Record, Result, ServiceMeshOptions,
    ServicePort, ServiceRecord, WireGuardKey,
};

/// The generated protobuf messages and gRPC stubs (`meshwork.v1`).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("meshwork.v1");
}

/// The cluster-qualified key used on the wire (`Delete.key`, and what a
/// watcher's mirror keys records by): `<cluster>/<key>`.
pub fn wire_key(cluster: &str, key: &str) -> String {
    format!("{cluster}/{key}")
}

fn ip(what: &'static str, s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| Error::InvalidIp {
        what,
        input: s.to_string(),
    })
}

fn ips(what: &'static str, v: &[String]) -> Result<Vec<IpAddr>> {
    v.iter().map(|s| ip(what, s)).collect()
}

fn cidrs(what: &'static str, v: &[String]) -> Result<Vec<IpNet>> {
    v.iter().map(|s| parse_cidr(what, s)).collect()
}

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn wire_port(what: String, p: u32) -> Result<u16> {
    records::port(what, i64::from(p))
}

impl From<Kind> for pb::Kind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Node => pb::Kind::Node,
            Kind::Identity => pb::Kind::Identity,
            Kind::Endpoint => pb::Kind::Endpoint,
            Kind::Service => pb::Kind::Service,
        }
    }
}

/// Decodes a wire kind; `message`/`field` name it in the error.
pub fn kind_from_wire(message: &'static str, field: &'static str, v: i32) -> Result<Kind> {
    match pb::Kind::try_from(v) {
        Ok(pb::Kind::Node) => Ok(Kind::Node),
        Ok(pb::Kind::Identity) => Ok(Kind::Identity),
        Ok(pb::Kind::Endpoint) => Ok(Kind::Endpoint),
        Ok(pb::Kind::Service) => Ok(Kind::Service),
        _ => Err(Error::UnknownEnumValue {
            message,
            field,
            value: v,
        }),
    }
}

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Sctp => pb::Protocol::Sctp,
            // Never a service's; a receiver refuses an unspecified one.
            Protocol::Icmp => pb::Protocol::Unspecified,
        }
    }
}

fn protocol(message: &'static str, v: i32) -> Result<Protocol> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Sctp) => Ok(Protocol::Sctp),
        _ => Err(Error::UnknownEnumValue {
            message,
            field: "protocol",
            value: v,
        }),
    }
}

impl From<Affinity> for pb::Affinity {
    fn from(a: Affinity) -> Self {
        match a {
            Affinity::None => pb::Affinity::None,
            Affinity::Local => pb::Affinity::Local,
            Affinity::Remote => pb::Affinity::Remote,
        }
    }
}

fn affinity(v: i32) -> Result<Affinity> {
    match pb::Affinity::try_from(v) {
        Ok(pb::Affinity::None) => Ok(Affinity::None),
        Ok(pb::Affinity::Local) => Ok(Affinity::Local),
        Ok(pb::Affinity::Remote) => Ok(Affinity::Remote),
        Err(_) => Err(Error::UnknownEnumValue {
            message: "Service",
            field: "affinity",
            value: v,
        }),
    }
}

impl From<&NamedPort> for pb::NamedPort {
    fn from(p: &NamedPort) -> Self {
        pb::NamedPort {
            name: p.name.clone(),
            port: u32::from(p.port),
            protocol: pb::Protocol::from(p.protocol).into(),
        }
    }
}

impl TryFrom<&pb::NamedPort> for NamedPort {
    type Error = Error;
    fn try_from(p: &pb::NamedPort) -> Result<Self> {
        Ok(NamedPort {
            name: p.name.clone(),
            port: wire_port(format!("port {:?}", p.name), p.port)?,
            protocol: protocol("NamedPort", p.protocol)?,
        })
    }
}

fn named_ports(v: &[pb::NamedPort]) -> Result<Vec<NamedPort>> {
    v.iter().map(NamedPort::try_from).collect()
}

impl From<&NodeRecord> for pb::Node {
    fn from(n: &NodeRecord) -> Self {
        pb::Node {
            cluster: n.cluster.to_string(),
            name: n.name.to_string(),
            ips: strings(&n.ips),
            pod_cidrs: strings(&n.pod_cidrs),
            wireguard_public_key: n.wireguard_key.map(|k| k.to_string()).unwrap_or_default(),
        }
    }
}

impl TryFrom<&pb::Node> for NodeRecord {
    type Error = Error;
    fn try_from(n: &pb::Node) -> Result<Self> {
        Ok(NodeRecord {
            cluster: ClusterName::new(n.cluster.clone())?,
            name: NodeName::new(n.name.clone())?,
            ips: ips("Node.ips", &n.ips)?,
            pod_cidrs: cidrs("Node.pod_cidrs", &n.pod_cidrs)?,
            wireguard_key: optional(&n.wireguard_public_key)
                .map(str::parse::<WireGuardKey>)
                .transpose()?,
        })
    }
}

impl From<&IdentityRecord> for pb::Identity {
    fn from(i: &IdentityRecord) -> Self {
        pb::Identity {
            cluster: i.cluster.to_string(),
            id: i.id.get(),
            labels: i.labels.as_map().clone().into_iter().collect(),
        }
    }
}

impl TryFrom<&pb::Identity> for IdentityRecord {
    type Error = Error;
    fn try_from(i: &pb::Identity) -> Result<Self> {
        Ok(IdentityRecord {
            cluster: ClusterName::new(i.cluster.clone())?,
            id: Identity::from_u32(i.id)?,
            labels: LabelSet::new(i.labels.clone().into_iter().collect())?,
        })
    }
}

impl From<&EndpointRecord> for pb::Endpoint {
    fn from(e: &EndpointRecord) -> Self {
        pb::Endpoint {
            cluster: e.cluster.to_string(),
            namespace: e.namespace.clone(),
            pod: e.pod.clone(),
            ips: strings(&e.ips),
            identity: e.identity.get(),
            node: e.node.to_string(),
            ports: e.ports.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<&pb::Endpoint> for EndpointRecord {
    type Error = Error;
    fn try_from(e: &pb::Endpoint) -> Result<Self> {
        records::object_name("namespace", &e.namespace)?;
        NodeName::new(e.pod.clone())?;
        Ok(EndpointRecord {
            cluster: ClusterName::new(e.cluster.clone())?,
            namespace: e.namespace.clone(),
            pod: e.pod.clone(),
            ips: ips("Endpoint.ips", &e.ips)?,
            identity: Identity::from_u32(e.identity)?,
            node: NodeName::new(e.node.clone())?,
            ports: named_ports(&e.ports)?,
        })
    }
}

impl From<&Backend> for pb::Backend {
    fn from(b: &Backend) -> Self {
        pb::Backend {
            ip: b.ip.to_string(),
            ports: b.ports.iter().map(Into::into).collect(),
            ready: b.ready,
            node: b.node.as_ref().map(ToString::to_string).unwrap_or_default(),
            zone: b.zone.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&pb::Backend> for Backend {
    type Error = Error;
    fn try_from(b: &pb::Backend) -> Result<Self> {
        Ok(Backend {
            ip: ip("Backend.ip", &b.ip)?,
            ports: named_ports(&b.ports)?,
            ready: b.ready,
            node: optional(&b.node)
                .map(|n| NodeName::new(n.to_string()))
                .transpose()?,
            zone: optional(&b.zone).map(str::to_string),
        })
    }
}

impl From<&ServiceRecord> for pb::Service {
    fn from(s: &ServiceRecord) -> Self {
        pb::Service {
            cluster: s.cluster.to_string(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            cluster_ips: strings(&s.cluster_ips),
            ports: s
                .ports
                .iter()
                .map(|p| pb::ServicePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: pb::Protocol::from(p.protocol).into(),
                    target_port: u32::from(p.target_port),
                })
                .collect(),
            backends: s.backends.iter().map(Into::into).collect(),
            global: s.options.global,
            shared: s.options.shared,
            affinity: pb::Affinity::from(s.options.affinity).into(),
        }
    }
}

impl TryFrom<&pb::Service> for ServiceRecord {
    type Error = Error;
    fn try_from(s: &pb::Service) -> Result<Self> {
        records::object_name("namespace", &s.namespace)?;
        records::object_name("service name", &s.name)?;
        let what =
            |p: &pb::ServicePort| format!("service {}/{} port {:?}", s.namespace, s.name, p.name);
        Ok(ServiceRecord {
            cluster: ClusterName::new(s.cluster.clone())?,
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            cluster_ips: ips("Service.cluster_ips", &s.cluster_ips)?,
            ports: s
                .ports
                .iter()
                .map(|p| {
                    Ok(ServicePort {
                        name: p.name.clone(),
                        port: wire_port(what(p), p.port)?,
                        protocol: protocol("ServicePort", p.protocol)?,
                        // 0 means "resolved per backend by name".
                        target_port: u16::try_from(p.target_port).map_err(|_| {
                            Error::InvalidPort {
                                what: what(p),
                                port: i64::from(p.target_port),
                            }
                        })?,
                    })
                })
                .collect::<Result<_>>()?,
            backends: s
                .backends
                .iter()
                .map(Backend::try_from)
                .collect::<Result<_>>()?,
            options: ServiceMeshOptions {
                global: s.global,
                shared: s.shared,
                affinity: affinity(s.affinity)?,
            },
        })
    }
}

impl From<&Record> for pb::upsert::Record {
    fn from(r: &Record) -> Self {
        match r {
            Record::Node(n) => pb::upsert::Record::Node(n.into()),
            Record::Identity(i) => pb::upsert::Record::Identity(i.into()),
            Record::Endpoint(e) => pb::upsert::Record::Endpoint(e.into()),
            Record::Service(s) => pb::upsert::Record::Service(s.into()),
        }
    }
}

impl TryFrom<&pb::upsert::Record> for Record {
    type Error = Error;
    fn try_from(r: &pb::upsert::Record) -> Result<Self> {
        Ok(match r {
            pb::upsert::Record::Node(n) => Record::Node(n.try_into()?),
            pb::upsert::Record::Identity(i) => Record::Identity(i.try_into()?),
            pb::upsert::Record::Endpoint(e) => Record::Endpoint(e.try_into()?),
            pb::upsert::Record::Service(s) => Record::Service(s.try_into()?),
        })
    }
}

/// One event of a watch, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A record was created or changed.
    Upsert {
        /// Revision of the change.
        revision: u64,
        /// The record.
        record: Record,
    },
    /// A record was removed.
    Delete {
        /// Revision of the change.
        revision: u64,
        /// Its kind.
        kind: Kind,
        /// Its key.
        key: String,
    },
    /// Everything up to `revision` has been sent for `kinds`.
    SyncComplete {
        /// The revision.
        revision: u64,
        /// The kinds now in sync.
        kinds: Vec<Kind>,
        /// Remote clusters whose state the server does not hold in full
        /// yet: what the client holds of them is kept, not pruned.
        pending: Vec<String>,
    },
    /// The client's resume revision is gone; a snapshot follows.
    Reset {
        /// Why.
        reason: String,
    },
}

impl From<&WatchEvent> for pb::WatchEvent {
    fn from(e: &WatchEvent) -> Self {
        use pb::watch_event::Event;
        let event = match e {
            WatchEvent::Upsert { revision, record } => Event::Upsert(pb::Upsert {
                key: record.key(),
                revision: *revision,
                record: Some(record.into()),
            }),
            WatchEvent::Delete {
                revision,
                kind,
                key,
            } => Event::Delete(pb::Delete {
                kind: pb::Kind::from(*kind).into(),
                key: key.clone(),
                revision: *revision,
            }),
            WatchEvent::SyncComplete {
                revision,
                kinds,
                pending,
            } => Event::SyncComplete(pb::SyncComplete {
                revision: *revision,
                kinds: kinds.iter().map(|k| pb::Kind::from(*k).into()).collect(),
                pending_clusters: pending.clone(),
            }),
            WatchEvent::Reset { reason } => Event::Reset(pb::Reset {
                reason: reason.clone(),
            }),
        };
        pb::WatchEvent { event: Some(event) }
    }
}

impl TryFrom<&pb::WatchEvent> for WatchEvent {
    type Error = Error;
    fn try_from(e: &pb::WatchEvent) -> Result<Self> {
        use pb::watch_event::Event;
        let missing = |field| Error::MissingField {
            message: "WatchEvent",
            field,
        };
        Ok(match e.event.as_ref().ok_or_else(|| missing("event"))? {
            Event::Upsert(u) => WatchEvent::Upsert {
                revision: u.revision,
                record: u
                    .record
                    .as_ref()
                    .ok_or_else(|| missing("upsert.record"))?
                    .try_into()?,
            },
            Event::Delete(d) => WatchEvent::Delete {
                revision: d.revision,
                kind: kind_from_wire("Delete", "kind", d.kind)?,
                key: d.key.clone(),
            },
            Event::SyncComplete(s) => WatchEvent::SyncComplete {
                revision: s.revision,
                kinds: s
                    .kinds
                    .iter()
                    .map(|k| kind_from_wire("SyncComplete", "kinds", *k))
                    .collect::<Result<_>>()?,
                pending: s.pending_clusters.clone(),
            },
            Event::Reset(r) => WatchEvent::Reset {
                reason: r.reason.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests;
