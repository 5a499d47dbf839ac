//! Identity policy: per-endpoint enforcement flags and verdict entries.

use std::path::Path;

use aya::maps::{HashMap, MapData};

use super::raw::{PolicyEndpointRaw, PolicyKeyRaw, PolicyValRaw};
use super::{
    ENDPOINTS, POLICY, Protocol, dump_err, get_opt, insert_err, open, port_be, port_from_be,
    remove_ok, typed,
};
use crate::error::{Error, Result};

/// Where an ICMP packet's type stands in a policy key's port: 256 + the
/// type, so that type 0 (echo reply) is not the wildcard
/// (`POLICY_ICMP_PORT_BASE` in `policy.h`).
pub const ICMP_PORT_BASE: u16 = 256;

/// The node itself as a policy endpoint (the host firewall): its record
/// and entries are keyed by this instead of a veth's ifindex
/// (`POLICY_HOST_ENDPOINT`).
pub const HOST_ENDPOINT: u32 = u32::MAX;

/// Direction of traffic relative to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    /// Towards the endpoint.
    Ingress,
    /// From the endpoint.
    Egress,
}

impl Direction {
    /// Both directions (checked against `policy.h` by the C twin test).
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The code in a policy key (`POLICY_DIR_*`).
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }
}

/// What a matching entry does. A deny anywhere wins over an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PolicyAction {
    /// Let the flow through.
    Allow,
    /// Drop it (reason: policy denied).
    Deny,
}

impl PolicyAction {
    /// Both actions (checked against `policy.h` by the C twin test).
    pub const ALL: [PolicyAction; 2] = [PolicyAction::Allow, PolicyAction::Deny];

    /// The code in a policy value (`POLICY_ALLOW`, `POLICY_DENY`).
    pub fn code(self) -> u8 {
        match self {
            PolicyAction::Allow => 1,
            PolicyAction::Deny => 2,
        }
    }
}

/// Key of a verdict entry. `identity` 0, `port` 0 and `proto` `None` are
/// wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PolicyKey {
    /// Endpoint id: the ifindex of the pod's host-side veth.
    pub endpoint: u32,
    /// Peer identity (0 = any).
    pub identity: u32,
    /// Destination port (0 = any).
    pub port: u16,
    /// Protocol (`None` = any).
    pub proto: Option<Protocol>,
    /// Direction.
    pub direction: Direction,
}

/// A verdict entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PolicyEntry {
    /// Allow or deny.
    pub action: PolicyAction,
    /// Opaque id of the rule that produced it (shown in flow events).
    pub rule_id: u32,
}

/// The agent's record of a local endpoint, stored with its enforcement so a
/// restarted agent reads its endpoints back from the map (the datapath
/// itself only uses the flags).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct EndpointInfo {
    /// The agent's node-local endpoint id.
    pub endpoint_id: u16,
    /// Pod IPv4 address.
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Pod-side MAC address.
    pub mac: Option<[u8; 6]>,
    /// Host-side veth name (at most 15 bytes).
    pub ifname: String,
}

/// Per-endpoint enforcement: when a direction is enforced, traffic no entry
/// allows is dropped (default deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct EndpointPolicy {
    /// The endpoint's own identity.
    pub identity: u32,
    /// Default deny for traffic towards the endpoint.
    pub ingress_enforced: bool,
    /// Default deny for traffic from the endpoint.
    pub egress_enforced: bool,
}

fn key_raw(k: &PolicyKey) -> Result<PolicyKeyRaw> {
    if k.endpoint == 0 {
        return Err(Error::InvalidInput {
            field: "policy endpoint",
            value: "0".into(),
            allowed: "the non-zero ifindex of the pod's host-side veth",
        });
    }
    let icmp_type = (ICMP_PORT_BASE..ICMP_PORT_BASE + 256).contains(&k.port);
    if k.port != 0
        && !matches!(k.proto, Some(Protocol::Tcp | Protocol::Udp))
        && !(k.proto == Some(Protocol::Icmp) && icmp_type)
    {
        return Err(Error::InvalidInput {
            field: "policy port",
            value: format!("{} with protocol {:?}", k.port, k.proto),
            allowed: "a port only together with TCP or UDP, or 256 + an ICMP type with ICMP",
        });
    }
    Ok(PolicyKeyRaw {
        endpoint: k.endpoint,
        identity: k.identity,
        port: port_be(k.port),
        proto: k.proto.map(Protocol::number).unwrap_or(0),
        direction: k.direction.code(),
    })
}

fn key_from(r: PolicyKeyRaw) -> PolicyKey {
    PolicyKey {
        endpoint: r.endpoint,
        identity: r.identity,
        port: port_from_be(r.port),
        proto: (r.proto != 0).then(|| Protocol::from_number(r.proto)),
        direction: if r.direction == Direction::Ingress.code() {
            Direction::Ingress
        } else {
            Direction::Egress
        },
    }
}

/// The policy maps: verdict entries and per-endpoint enforcement.
#[derive(Debug)]
pub struct PolicyMap {
    policy: HashMap<MapData, PolicyKeyRaw, PolicyValRaw>,
    endpoints: HashMap<MapData, u32, PolicyEndpointRaw>,
    max: [u32; 2],
}

impl PolicyMap {
    /// Opens the pinned maps under `pin_root` (checking their layout).
    pub fn open(pin_root: &Path) -> Result<PolicyMap> {
        let (p, mp) = open(pin_root, &POLICY)?;
        let (e, me) = open(pin_root, &ENDPOINTS)?;
        Ok(PolicyMap {
            policy: typed(&POLICY, HashMap::try_from(p))?,
            endpoints: typed(&ENDPOINTS, HashMap::try_from(e))?,
            max: [mp, me],
        })
    }

    /// Sets an endpoint's enforcement, keeping its [`EndpointInfo`]. Write
    /// the allow entries first, then enforce, so turning policy on never
    /// drops allowed traffic.
    pub fn set_endpoint(&mut self, endpoint: u32, p: EndpointPolicy) -> Result<()> {
        let info = self.endpoint_info(endpoint)?.unwrap_or_default();
        self.upsert_endpoint(endpoint, &info, p)
    }

    /// Creates or updates endpoint `endpoint` (host-side veth ifindex) with
    /// its record and enforcement. Idempotent.
    pub fn upsert_endpoint(
        &mut self,
        endpoint: u32,
        info: &EndpointInfo,
        p: EndpointPolicy,
    ) -> Result<()> {
        if endpoint == 0 {
            return Err(Error::InvalidInput {
                field: "policy endpoint",
                value: "0".into(),
                allowed: "the non-zero ifindex of the pod's host-side veth",
            });
        }
        if info.ifname.len() > 15 || info.ifname.contains('\0') {
            return Err(Error::InvalidInput {
                field: "endpoint interface name",
                value: info.ifname.escape_debug().to_string(),
                allowed: "an interface name of at most 15 bytes without NUL",
            });
        }
        let mut ifname = [0u8; 16];
        ifname[..info.ifname.len()].copy_from_slice(info.ifname.as_bytes());
        let v = PolicyEndpointRaw {
            ingress_enforced: u8::from(p.ingress_enforced),
            egress_enforced: u8::from(p.egress_enforced),
            endpoint_id: info.endpoint_id,
            identity: p.identity,
            ipv4: info.ipv4.map(super::ip_be).unwrap_or(0),
            mac: info.mac.unwrap_or([0; 6]),
            audit: 0,
            pad: 0,
            ifname,
        };
        self.endpoints
            .insert(endpoint, v, 0)
            .map_err(|e| insert_err(&ENDPOINTS, self.max[1], e))
    }

    /// An endpoint's record, if present.
    pub fn endpoint_info(&self, endpoint: u32) -> Result<Option<EndpointInfo>> {
        Ok(get_opt(&ENDPOINTS, self.endpoints.get(&endpoint, 0))?.map(|v| info_from(&v)))
    }

    /// Every pod endpoint: (ifindex, record, enforcement), sorted by
    /// ifindex (the host's record is not one: see [`PolicyMap::host`]).
    pub fn endpoint_records(&self) -> Result<Vec<(u32, EndpointInfo, EndpointPolicy)>> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(|e| dump_err(&ENDPOINTS, e))?;
            if k != HOST_ENDPOINT {
                out.push((k, info_from(&v), policy_from(&v)));
            }
        }
        out.sort_by_key(|(k, _, _)| *k);
        Ok(out)
    }

    /// An endpoint's enforcement, if set.
    pub fn endpoint(&self, endpoint: u32) -> Result<Option<EndpointPolicy>> {
        Ok(get_opt(&ENDPOINTS, self.endpoints.get(&endpoint, 0))?.map(|v| policy_from(&v)))
    }

    /// Every pod endpoint's enforcement, sorted by endpoint id.
    pub fn endpoints(&self) -> Result<Vec<(u32, EndpointPolicy)>> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.map_err(|e| dump_err(&ENDPOINTS, e))?;
            if k != HOST_ENDPOINT {
                out.push((k, policy_from(&v)));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Converges the host firewall to `policy` (its identity is `host`),
    /// `audit` and exactly `entries` (keyed by [`HOST_ENDPOINT`]), in the
    /// order [`PolicyMap::sync_endpoint`] uses. Returns how many stale
    /// entries were removed.
    pub fn sync_host(
        &mut self,
        policy: EndpointPolicy,
        audit: bool,
        entries: &[(PolicyKey, PolicyEntry)],
    ) -> Result<usize> {
        if let Some((k, _)) = entries.iter().find(|(k, _)| k.endpoint != HOST_ENDPOINT) {
            return Err(Error::InvalidInput {
                field: "host policy entry endpoint",
                value: k.endpoint.to_string(),
                allowed: "entries keyed by HOST_ENDPOINT",
            });
        }
        for (k, e) in entries {
            self.upsert(*k, *e)?;
        }
        let v = PolicyEndpointRaw {
            ingress_enforced: u8::from(policy.ingress_enforced),
            egress_enforced: u8::from(policy.egress_enforced),
            identity: policy.identity,
            audit: u8::from(audit),
            ..PolicyEndpointRaw::default()
        };
        self.endpoints
            .insert(HOST_ENDPOINT, v, 0)
            .map_err(|e| insert_err(&ENDPOINTS, self.max[1], e))?;
        let mut removed = 0;
        for (k, _) in self.dump()? {
            if k.endpoint == HOST_ENDPOINT && !entries.iter().any(|(d, _)| *d == k) {
                self.delete(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The host firewall's enforcement and audit flag, when a host policy
    /// is installed.
    pub fn host(&self) -> Result<Option<(EndpointPolicy, bool)>> {
        Ok(get_opt(&ENDPOINTS, self.endpoints.get(&HOST_ENDPOINT, 0))?
            .map(|v| (policy_from(&v), v.audit != 0)))
    }

    /// Removes an endpoint's enforcement and all its verdict entries
    /// ([`HOST_ENDPOINT`]: turns the host firewall off).
    pub fn remove_endpoint(&mut self, endpoint: u32) -> Result<()> {
        remove_ok(&ENDPOINTS, self.endpoints.remove(&endpoint))?;
        for (k, _) in self.dump()? {
            if k.endpoint == endpoint {
                self.delete(k)?;
            }
        }
        Ok(())
    }

    /// Converges one endpoint to `policy` and exactly `entries` (all keyed by
    /// this endpoint) without a window of wrong verdicts: desired entries are
    /// written first, then the enforcement flags, then stale entries are
    /// removed. Idempotent. Returns how many stale entries were removed.
    pub fn sync_endpoint(
        &mut self,
        endpoint: u32,
        policy: EndpointPolicy,
        entries: &[(PolicyKey, PolicyEntry)],
    ) -> Result<usize> {
        if let Some((k, _)) = entries.iter().find(|(k, _)| k.endpoint != endpoint) {
            return Err(Error::InvalidInput {
                field: "policy entry endpoint",
                value: k.endpoint.to_string(),
                allowed: "entries keyed by the endpoint being synced",
            });
        }
        for (k, e) in entries {
            self.upsert(*k, *e)?;
        }
        self.set_endpoint(endpoint, policy)?;
        let mut removed = 0;
        for (k, _) in self.dump()? {
            if k.endpoint == endpoint && !entries.iter().any(|(d, _)| *d == k) {
                self.delete(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Creates or updates a verdict entry. Idempotent.
    pub fn upsert(&mut self, key: PolicyKey, entry: PolicyEntry) -> Result<()> {
        let k = key_raw(&key)?;
        let v = PolicyValRaw {
            action: entry.action.code(),
            pad: [0; 3],
            rule_id: entry.rule_id,
        };
        self.policy
            .insert(k, v, 0)
            .map_err(|e| insert_err(&POLICY, self.max[0], e))
    }

    /// Removes a verdict entry (no-op when absent).
    pub fn delete(&mut self, key: PolicyKey) -> Result<()> {
        let k = key_raw(&key)?;
        remove_ok(&POLICY, self.policy.remove(&k))
    }

    /// Every verdict entry, sorted by key.
    pub fn dump(&self) -> Result<Vec<(PolicyKey, PolicyEntry)>> {
        let mut out = Vec::new();
        for item in self.policy.iter() {
            let (k, v) = item.map_err(|e| dump_err(&POLICY, e))?;
            let action = if v.action == PolicyAction::Deny.code() {
                PolicyAction::Deny
            } else {
                PolicyAction::Allow
            };
            out.push((
                key_from(k),
                PolicyEntry {
                    action,
                    rule_id: v.rule_id,
                },
            ));
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

fn policy_from(v: &PolicyEndpointRaw) -> EndpointPolicy {
    EndpointPolicy {
        identity: v.identity,
        ingress_enforced: v.ingress_enforced != 0,
        egress_enforced: v.egress_enforced != 0,
    }
}

fn info_from(v: &PolicyEndpointRaw) -> EndpointInfo {
    let len = v
        .ifname
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(v.ifname.len());
    EndpointInfo {
        endpoint_id: v.endpoint_id,
        ipv4: (v.ipv4 != 0).then(|| super::ip_from_be(v.ipv4)),
        mac: (v.mac != [0; 6]).then_some(v.mac),
        ifname: String::from_utf8_lossy(&v.ifname[..len]).into_owned(),
    }
}
