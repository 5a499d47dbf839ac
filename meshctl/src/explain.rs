//! `meshctl explain <namespace/pod> <namespace/service|namespace/pod>[:port]`:
//! hop by hop, why a connection works or not.
//!
//! Every hop is read from the component that decides it: the source pod
//! (Kubernetes), its node-agent (`/v1/status`, `/v1/endpoints`), the service
//! lookup in the source node's datapath (`/v1/services`), the route and peer
//! identity (`/v1/ipcache`), the mesh-apiserver's view of the backend's
//! cluster (connected, stale), the egress policy of the source and the
//! ingress policy of the backend as their datapaths hold them
//! (`/v1/policies`), the WireGuard peer with its last handshake
//! (`/v1/encryption`), and the last flows both agents saw (`/v1/flows`).
//! The far end is checked through the kube context of the backend's
//! cluster, found in the kubeconfig by cluster name.
//!
//! Three parts: [`gather`] reads the evidence (all the I/O, the walk stops
//! at the first hop that cannot go on), [`judge`] turns evidence into hops
//! and the verdict (pure, table-tested), `print` shows it.

use crate::Outcome;
use crate::kube::KubeArgs;
use crate::output::{self, OutputFormat};

mod gather;
pub mod judge;
mod print;

/// Flags of `meshctl explain`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl explain --context lab-c1 shop/client shop/web:80
  meshctl explain --context lab-c1 shop/client shop/web-2:8080
  meshctl explain --context lab-c1 shop/client shop/web -o json
  meshctl explain --context lab-c1 --destination-context lab-c2 shop/a shop/b:8080

The far end of a cross-cluster path is checked through the kube context of
the backend's cluster (found in the kubeconfig by cluster name).

Exit codes: 0 the connection works (every hop ✔ on at least one backend);
3 it does not (the ✘ hop says why); 1 error.")]
pub struct ExplainArgs {
    /// Context of the source pod's cluster.
    #[arg(long)]
    pub context: String,
    /// The source pod: namespace/name.
    pub source: String,
    /// The destination: namespace/service or namespace/pod, optionally
    /// :port (default: the service's first port; any port for a pod).
    pub destination: String,
    /// Context of the destination pod's cluster, when it is a pod of
    /// another cluster (services are looked up in the source's cluster:
    /// global services match by namespace/name).
    #[arg(long)]
    pub destination_context: Option<String>,
    /// How many recent matching flows to show.
    #[arg(long, default_value_t = 5)]
    pub flows: usize,
}

/// `namespace/name[:port]`.
pub fn parse_target(s: &str) -> Result<(String, String, Option<u16>), String> {
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (
            n,
            Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: port {p:?} is not 1-65535"))?,
            ),
        ),
        None => (s, None),
    };
    match name.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((ns.to_string(), n.to_string(), port))
        }
        _ => Err(format!(
            "{s:?} is not namespace/name[:port] (e.g. shop/web:80)"
        )),
    }
}

/// Runs `meshctl explain`.
pub async fn explain(
    kube: &KubeArgs,
    args: ExplainArgs,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let (src_ns, src_name, src_port) =
        parse_target(&args.source).map_err(|e| anyhow::anyhow!("source: {e}"))?;
    anyhow::ensure!(
        src_port.is_none(),
        "source {:?}: give the source pod without a port",
        args.source
    );
    let destination =
        parse_target(&args.destination).map_err(|e| anyhow::anyhow!("destination: {e}"))?;
    let report = gather::walk(kube, &args, (src_ns, src_name), destination).await?;
    let report = judge::finish(report);
    output::emit(format, &report, print::print)?;
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

#[cfg(test)]
mod tests;
