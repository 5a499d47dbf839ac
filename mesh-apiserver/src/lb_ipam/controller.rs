//! Applies the LB-IPAM plan to the API server while this replica leads:
//! each pass lists the Services, plans ([`super::plan`]), writes assigned
//! addresses to `status.loadBalancer.ingress` (a status patch carrying the
//! Service's resourceVersion, so a Service changed meanwhile is planned
//! again next pass rather than overwritten), clears released ones, and
//! records a Warning Event (reason `AllocationFailed`, events.k8s.io) once per Service and
//! reason while it stays pending.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{Decision, Pool, ServiceView, plan};
use crate::leader::Leadership;

/// How often the controller plans.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The controller named in events.
pub const COMPONENT: &str = "meshwork-lb-ipam";

/// What a Service is to LB-IPAM.
pub fn view(svc: &Service) -> ServiceView {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref();
    ServiceView {
        key: format!("{ns}/{name}"),
        ours: spec.is_some_and(|s| {
            s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
        }),
        requested: spec
            .and_then(|s| s.load_balancer_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        current: svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
            .collect(),
    }
}

/// Runs until the task is dropped.
pub async fn run(client: kube::Client, pools: Vec<Pool>, leadership: Leadership) {
    tracing::info!(
        pools = ?pools.iter().map(|p| format!("{}={}", p.name, p.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))).collect::<Vec<_>>(),
        "LB-IPAM: LoadBalancer Services get addresses from these pools"
    );
    let all: Api<Service> = Api::all(client.clone());
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: COMPONENT.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // Warned (Service key → reason), so a pending Service gets one Event
    // per reason, not one per pass.
    let mut warned: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(PERIOD).await;
        if !leadership.is_leader() {
            continue;
        }
        let list = match all.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "LB-IPAM: cannot list Services; retrying");
                continue;
            }
        };
        let views: Vec<ServiceView> = list.iter().map(view).collect();
        let decisions = plan(&pools, &views);
        warned.retain(|k, _| matches!(decisions.get(k), Some(Decision::Pending(_))));
        for svc in &list {
            let v = view(svc);
            let Some(d) = decisions.get(&v.key) else {
                continue;
            };
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let api: Api<Service> = Api::namespaced(client.clone(), &ns);
            let rv = svc.metadata.resource_version.clone();
            match d {
                Decision::Assign { ip, pool } => {
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": rv},
                        "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}},
                    });
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(service = %v.key, %ip, pool, "LB-IPAM: address assigned")
                        }
                        Err(e) => {
                            tracing::warn!(service = %v.key, %ip, error = %e, "LB-IPAM: cannot write the address; planning again")
                        }
                    }
                }
                Decision::Release => {
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": rv},
                        "status": {"loadBalancer": {"ingress": null}},
                    });
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(service = %v.key, addresses = ?v.current, "LB-IPAM: address released (no longer a LoadBalancer Service)")
                        }
                        Err(e) => {
                            tracing::warn!(service = %v.key, error = %e, "LB-IPAM: cannot release the address; retrying")
                        }
                    }
                }
                Decision::Pending(reason) => {
                    if warned.get(&v.key) == Some(reason) {
                        continue;
                    }
                    tracing::warn!(service = %v.key, reason, "LB-IPAM: the Service stays pending");
                    if warning_event(&recorder, svc, reason).await {
                        warned.insert(v.key.clone(), reason.clone());
                    }
                }
            }
        }
    }
}

/// Records a Warning Event about `svc` (`kubectl describe service` shows
/// it); whether the API took it.
async fn warning_event(
    recorder: &kube::runtime::events::Recorder,
    svc: &Service,
    message: &str,
) -> bool {
    use kube::Resource as _;
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "AllocationFailed".into(),
        note: Some(message.chars().take(1000).collect()),
        action: "AssignAddress".into(),
        secondary: None,
    };
    match recorder.publish(&event, &svc.object_ref(&())).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(service = ?svc.metadata.name, error = %e, "LB-IPAM: cannot record the Warning Event");
            false
        }
    }
}
