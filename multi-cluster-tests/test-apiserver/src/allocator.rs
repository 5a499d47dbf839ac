//! ClusterIP and NodePort allocation for Services, as kube-apiserver's
//! service REST storage does on create and update: the store calls it on
//! every Service write (under its lock, with the other Services).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::status::FieldCause;

const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Allocates ClusterIPs from the service CIDR and NodePorts from 30000-32767.
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    cidr: Ipv4Net,
}

fn invalid(field: &str, message: String) -> FieldCause {
    FieldCause {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message,
    }
}

impl ServiceAllocator {
    /// An allocator over `cidr` (its network address and first host are
    /// not handed out: the first host is the `kubernetes` Service's by convention).
    pub fn new(cidr: Ipv4Net) -> Self {
        ServiceAllocator { cidr }
    }

    /// The CIDR allocated from.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// Fills defaults and allocates addresses and node ports of `svc`;
    /// keeps those of `old` on update (they are immutable).
    pub fn allocate<V: std::borrow::Borrow<Value>>(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        existing: &[V],
    ) -> Result<(), Vec<FieldCause>> {
        let uid = svc.pointer("/metadata/uid").cloned();
        let others: Vec<&Value> = existing
            .iter()
            .map(|s| s.borrow())
            .filter(|s| s.pointer("/metadata/uid") != uid.as_ref())
            .collect();
        if !svc.get("spec").is_some_and(Value::is_object) {
            svc["spec"] = json!({});
        }
        let spec = &mut svc["spec"];
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if !matches!(
            ty.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            return Err(vec![FieldCause {
                reason: "FieldValueNotSupported",
                field: "spec.type".into(),
                message: format!(
                    "Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            }]);
        }
        spec["type"] = json!(ty);
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let Some(port) = p.get("port").and_then(Value::as_u64) else {
                    return Err(vec![FieldCause {
                        reason: "FieldValueRequired",
                        field: format!("spec.ports[{i}].port"),
                        message: "Required value".into(),
                    }]);
                };
                if !(1..=65535).contains(&port) {
                    return Err(vec![invalid(
                        &format!("spec.ports[{i}].port"),
                        format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    )]);
                }
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = json!(port);
                }
            }
        }
        if ty == "ExternalName" {
            return Ok(());
        }
        if spec.get("internalTrafficPolicy").is_none_or(Value::is_null) {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        if (ty == "NodePort" || ty == "LoadBalancer")
            && spec.get("externalTrafficPolicy").is_none_or(Value::is_null)
        {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str);
        let asked = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let ip = match (old_ip, asked) {
            (Some(o), Some(a)) if o != a => {
                return Err(vec![invalid(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: {a:?}: may not change once set"),
                )]);
            }
            (Some(o), _) => o.to_string(),
            (None, Some("None")) => "None".to_string(),
            (None, Some(a)) => {
                let parsed: Ipv4Addr = a.parse().map_err(|_| {
                    vec![invalid(
                        "spec.clusterIPs[0]",
                        format!("Invalid value: {a:?}: must be a valid IP address"),
                    )]
                })?;
                if !self.cidr.contains(&parsed) {
                    return Err(vec![invalid(
                        "spec.clusterIPs[0]",
                        format!(
                            "Invalid value: {a:?}: failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {}",
                            self.cidr
                        ),
                    )]);
                }
                if used_ips(&others).contains(&parsed) {
                    return Err(vec![invalid(
                        "spec.clusterIPs[0]",
                        format!(
                            "Invalid value: {a:?}: failed to allocate IP {a}: provided IP is already allocated"
                        ),
                    )]);
                }
                a.to_string()
            }
            (None, None) => {
                let used = used_ips(&others);
                let free = self
                    .cidr
                    .hosts()
                    .skip(1)
                    .find(|ip| !used.contains(ip))
                    .ok_or_else(|| {
                        vec![invalid("spec.clusterIPs", format!("Invalid value: []: failed to allocate a serviceIP: range is full ({})", self.cidr))]
                    })?;
                free.to_string()
            }
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if ip != "None" {
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let mut used = used_node_ports(&others);
            let old_ports: Vec<Value> = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for (i, p) in ports.iter_mut().enumerate() {
                    let kept = old_ports
                        .iter()
                        .find(|o| {
                            o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                        })
                        .and_then(|o| o.get("nodePort"))
                        .and_then(Value::as_u64);
                    let np = match (p.get("nodePort").and_then(Value::as_u64), kept) {
                        (Some(n), _) => {
                            let n16 = u16::try_from(n)
                                .ok()
                                .filter(|n| NODE_PORT_RANGE.contains(n));
                            let Some(n16) = n16 else {
                                return Err(vec![invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    format!(
                                        "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                    ),
                                )]);
                            };
                            if used.contains(&n16) && kept != Some(n) {
                                return Err(vec![invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    format!(
                                        "Invalid value: {n}: provided port is already allocated"
                                    ),
                                )]);
                            }
                            n16
                        }
                        (None, Some(k)) => k as u16,
                        (None, None) => NODE_PORT_RANGE
                            .clone()
                            .find(|n| !used.contains(n))
                            .ok_or_else(|| {
                                vec![invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    "Invalid value: 0: range is full".into(),
                                )]
                            })?,
                    };
                    used.insert(np);
                    p["nodePort"] = json!(np);
                }
            }
            // As kube-apiserver: a LoadBalancer Service with
            // externalTrafficPolicy Local gets a health-check node port
            // (the one given, else the one it had, else a free one).
            let local = spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
            if ty == "LoadBalancer" && local {
                let kept = old
                    .and_then(|o| o.pointer("/spec/healthCheckNodePort"))
                    .and_then(Value::as_u64);
                let hc = match (
                    spec.get("healthCheckNodePort").and_then(Value::as_u64),
                    kept,
                ) {
                    (Some(n), _) => match u16::try_from(n)
                        .ok()
                        .filter(|n| NODE_PORT_RANGE.contains(n))
                    {
                        Some(n16) if !used.contains(&n16) || kept == Some(n) => n16,
                        _ => {
                            return Err(vec![invalid(
                                "spec.healthCheckNodePort",
                                format!(
                                    "Invalid value: {n}: provided port is not in the valid range or already allocated"
                                ),
                            )]);
                        }
                    },
                    (None, Some(k)) => k as u16,
                    (None, None) => NODE_PORT_RANGE
                        .clone()
                        .find(|n| !used.contains(n))
                        .ok_or_else(|| {
                            vec![invalid(
                                "spec.healthCheckNodePort",
                                "Invalid value: 0: range is full".into(),
                            )]
                        })?,
                };
                spec["healthCheckNodePort"] = json!(hc);
            } else if let Some(o) = spec.as_object_mut() {
                o.remove("healthCheckNodePort");
            }
        }
        Ok(())
    }
}

fn used_ips(services: &[&Value]) -> HashSet<Ipv4Addr> {
    services
        .iter()
        .filter_map(|s| s.pointer("/spec/clusterIP")?.as_str()?.parse().ok())
        .collect()
}

fn used_node_ports(services: &[&Value]) -> HashSet<u16> {
    services
        .iter()
        .filter_map(|s| s.pointer("/spec/ports")?.as_array())
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_u64())
        .chain(
            services
                .iter()
                .filter_map(|s| s.pointer("/spec/healthCheckNodePort")?.as_u64()),
        )
        .filter_map(|n| u16::try_from(n).ok())
        .collect()
}

#[cfg(test)]
mod tests;
