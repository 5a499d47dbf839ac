//! Service annotations that put a Service in the mesh.
//!
//! Meshwork's own names are always honoured. With Cilium compatibility on
//! (`compat.ciliumAnnotations`), Cilium's names are honoured too, so a
//! ClusterMesh user's Services work unchanged; when both spell the same
//! setting, Meshwork's name wins.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::records::{Affinity, ServiceMeshOptions};

/// `service.meshwork.io/global`
pub const GLOBAL: &str = "service.meshwork.io/global";
/// `service.meshwork.io/shared`
pub const SHARED: &str = "service.meshwork.io/shared";
/// `service.meshwork.io/affinity`
pub const AFFINITY: &str = "service.meshwork.io/affinity";
/// Node annotation holding the node's WireGuard public key.
pub const WG_PUB_KEY: &str = "network.meshwork.io/wg-pub-key";
/// Node annotation saying where the node-agent's local API is, e.g.
/// `unix:///var/run/meshwork/agent.sock` (what `meshctl observe`,
/// `explain` and `encryption` talk to).
pub const AGENT_API: &str = "network.meshwork.io/agent-api";

/// Cilium's names, in order of precedence, per setting.
const CILIUM_GLOBAL: &[&str] = &["service.cilium.io/global", "io.cilium/global-service"];
const CILIUM_SHARED: &[&str] = &["service.cilium.io/shared", "io.cilium/shared-service"];
const CILIUM_AFFINITY: &[&str] = &["service.cilium.io/affinity"];

fn lookup<'a>(
    annotations: &'a BTreeMap<String, String>,
    ours: &'static str,
    cilium: &[&'static str],
    compat: bool,
) -> Option<(&'static str, &'a str)> {
    if let Some(v) = annotations.get(ours) {
        return Some((ours, v));
    }
    if compat {
        for key in cilium {
            if let Some(v) = annotations.get(*key) {
                return Some((key, v));
            }
        }
    }
    None
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidAnnotation {
            annotation: key.to_string(),
            value: value.to_string(),
            allowed: "\"true\" or \"false\"",
        }),
    }
}

/// Reads a Service's mesh options from its annotations. A malformed value
/// is an error naming the annotation; the caller keeps serving the last
/// valid state of that Service.
pub fn service_mesh_options(
    annotations: &BTreeMap<String, String>,
    compat_cilium: bool,
) -> Result<ServiceMeshOptions> {
    let mut opts = ServiceMeshOptions::default();
    if let Some((key, v)) = lookup(annotations, GLOBAL, CILIUM_GLOBAL, compat_cilium) {
        opts.global = parse_bool(key, v)?;
    }
    if let Some((key, v)) = lookup(annotations, SHARED, CILIUM_SHARED, compat_cilium) {
        opts.shared = parse_bool(key, v)?;
    }
    if let Some((key, v)) = lookup(annotations, AFFINITY, CILIUM_AFFINITY, compat_cilium) {
        opts.affinity = v
            .trim()
            .to_ascii_lowercase()
            .parse::<Affinity>()
            .map_err(|()| Error::InvalidAnnotation {
                annotation: key.to_string(),
                value: v.to_string(),
                allowed: "local, remote or none",
            })?;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests;
