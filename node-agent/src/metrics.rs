//! Prometheus text exposition of the agent's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Values read from their owner at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Endpoints registered on this node.
    pub endpoints: usize,
    /// Service frontends in the datapath.
    pub services: usize,
    /// ipcache entries in the datapath.
    pub ipcache_entries: usize,
    /// The datapath's packet counters by verdict / drop reason.
    pub packets: Vec<crate::datapath::PacketCounter>,
    /// (map, entries, capacity) of the datapath's maps.
    pub maps: Vec<(String, u64, u64)>,
}

/// The agent's counters. Gauges (endpoint count) are passed in at render
/// time from their owner, so they cannot go stale.
#[derive(Debug, Default)]
pub struct Metrics {
    registrations: AtomicU64,
    deregistrations: AtomicU64,
    reconciles: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Reconcile passes timed: (count, seconds summed, longest).
    reconcile_durations: Mutex<(u64, f64, f64)>,
}

impl Metrics {
    /// Counts a successful endpoint registration from the CNI.
    pub fn registration(&self) {
        self.registrations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a successful deregistration.
    pub fn deregistration(&self) {
        self.deregistrations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reconcile pass.
    pub fn reconcile(&self, took: std::time::Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let mut d = self.reconcile_durations.lock().expect("metrics lock");
        let secs = took.as_secs_f64();
        d.0 += 1;
        d.1 += secs;
        d.2 = d.2.max(secs);
    }

    /// Counts an error by reason (a short kebab-case word).
    pub fn error(&self, reason: &'static str) {
        *self
            .errors
            .lock()
            .expect("metrics lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// The value of the error counter for `reason`.
    pub fn errors(&self, reason: &str) -> u64 {
        self.errors
            .lock()
            .expect("metrics lock")
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "meshwork_endpoints",
            "gauge",
            "Endpoints registered on this node.",
            gauges.endpoints as u64,
        );
        metric(
            "meshwork_datapath_services",
            "gauge",
            "Service frontends in the datapath.",
            gauges.services as u64,
        );
        metric(
            "meshwork_datapath_ipcache_entries",
            "gauge",
            "ipcache entries in the datapath.",
            gauges.ipcache_entries as u64,
        );
        metric(
            "meshwork_cni_registrations_total",
            "counter",
            "Endpoint registrations accepted from the CNI plugin.",
            self.registrations.load(Ordering::Relaxed),
        );
        metric(
            "meshwork_cni_deregistrations_total",
            "counter",
            "Endpoint deregistrations from the CNI plugin.",
            self.deregistrations.load(Ordering::Relaxed),
        );
        metric(
            "meshwork_reconciles_total",
            "counter",
            "Datapath reconcile passes.",
            self.reconciles.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP meshwork_errors_total Errors by reason.\n# TYPE meshwork_errors_total counter"
        );
        for (reason, n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "meshwork_errors_total{{reason=\"{reason}\"}} {n}");
        }
        for (name, help, pick) in [
            (
                "meshwork_datapath_map_entries",
                "Entries in each datapath map (pressure: divide by meshwork_datapath_map_capacity).",
                (|m: &(String, u64, u64)| m.1) as fn(&(String, u64, u64)) -> u64,
            ),
            (
                "meshwork_datapath_map_capacity",
                "Capacity (max entries) of each datapath map.",
                |m: &(String, u64, u64)| m.2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for m in &gauges.maps {
                let _ = writeln!(out, "{name}{{map=\"{}\"}} {}", m.0, pick(m));
            }
        }
        let (n, sum, max) = {
            let d = self.reconcile_durations.lock().expect("metrics lock");
            (d.0, d.1, d.2)
        };
        let _ = writeln!(
            out,
            "# HELP meshwork_reconcile_duration_seconds Time to reconcile the datapath with the desired state.\n# TYPE meshwork_reconcile_duration_seconds summary\nmeshwork_reconcile_duration_seconds_sum {sum}\nmeshwork_reconcile_duration_seconds_count {n}\n# HELP meshwork_reconcile_duration_max_seconds Longest reconcile pass so far.\n# TYPE meshwork_reconcile_duration_max_seconds gauge\nmeshwork_reconcile_duration_max_seconds {max}"
        );
        for (name, help, value) in [
            (
                "meshwork_datapath_packets_total",
                "Packets seen by the datapath, by verdict: forwarded or the drop reason.",
                (|c: &crate::datapath::PacketCounter| c.packets) as fn(&_) -> u64,
            ),
            (
                "meshwork_datapath_bytes_total",
                "Bytes seen by the datapath, by verdict: forwarded or the drop reason.",
                |c: &crate::datapath::PacketCounter| c.bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for c in &gauges.packets {
                let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", c.reason, value(c));
            }
        }
        out
    }
}

/// Prometheus lines for the flow log.
pub fn render_flows(events_total: u64) -> String {
    format!(
        "# HELP meshwork_flow_events_total Flow events read from the datapath's ring buffer.\n# TYPE meshwork_flow_events_total counter\nmeshwork_flow_events_total {events_total}\n"
    )
}

/// Prometheus lines for the mesh feed, routes and WireGuard peers.
pub fn render_feeds(
    mesh: Option<&crate::feed::mesh::MeshFeedStatus>,
    encryption: Option<&crate::encryption::EncryptionStatus>,
    routing: &crate::node_sync::RoutingStatus,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, i64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: i64| vec![(String::new(), v)];
    let age = |s: Option<u64>| s.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
    if let Some(m) = mesh {
        family(
            "meshwork_mesh_feed_connected",
            "gauge",
            "1 while the watch to the mesh-apiserver is open.",
            one(i64::from(m.connected)),
        );
        family(
            "meshwork_mesh_feed_synced",
            "gauge",
            "1 once the mesh feed completed a snapshot or resume.",
            one(i64::from(m.synced)),
        );
        family(
            "meshwork_mesh_feed_revision",
            "gauge",
            "Last revision applied from the mesh feed.",
            one(i64::try_from(m.revision).unwrap_or(i64::MAX)),
        );
        family(
            "meshwork_mesh_feed_last_event_age_seconds",
            "gauge",
            "Seconds since the last mesh feed event (-1: none yet).",
            one(age(m.last_event_seconds_ago)),
        );
        family(
            "meshwork_mesh_feed_connects_total",
            "counter",
            "Watches opened to the mesh-apiserver.",
            one(i64::try_from(m.connects).unwrap_or(i64::MAX)),
        );
        family(
            "meshwork_mesh_feed_records",
            "gauge",
            "Records held from the mesh feed, by kind.",
            m.counts
                .iter()
                .map(|(k, c)| (format!("{{kind=\"{k}\"}}"), *c as i64))
                .collect(),
        );
        family(
            "meshwork_mesh_feed_refused_records",
            "gauge",
            "Records of other clusters this agent refuses to use (they would touch this cluster), by kind.",
            m.refused
                .iter()
                .map(|(k, c)| (format!("{{kind=\"{k}\"}}"), *c as i64))
                .collect(),
        );
        if let Some(left) = m.certificate_expiry_seconds {
            family(
                "meshwork_certificate_expiry_seconds",
                "gauge",
                "Seconds until the certificate expires (negative once expired).",
                vec![("{certificate=\"node-agent\"}".to_string(), left)],
            );
        }
    }
    family(
        "meshwork_node_routes",
        "gauge",
        "Routes to other nodes' pod CIDRs.",
        one(routing.routes.len() as i64),
    );
    family(
        "meshwork_node_routes_unencrypted",
        "gauge",
        "With encryption on: routes to other nodes' pods that bypass WireGuard (no peer).",
        one(routing.unencrypted.len() as i64),
    );
    family(
        "meshwork_node_sync_failures",
        "gauge",
        "Failures in the last node sync pass.",
        one(routing.failures.len() as i64),
    );
    if let Some(e) = encryption {
        family(
            "meshwork_wireguard_peers",
            "gauge",
            "WireGuard peers.",
            one(e.peers.len() as i64),
        );
        family(
            "meshwork_wireguard_handshake_age_seconds",
            "gauge",
            "Seconds since the last handshake with a peer (-1: never).",
            e.peers
                .iter()
                .map(|p| {
                    (
                        format!("{{peer=\"{}\"}}", p.public_key),
                        age(p.last_handshake_seconds_ago),
                    )
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests;
