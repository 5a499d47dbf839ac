//! kube-rs against the server: CRDs at runtime, patches and server-side
//! apply, leases, EndpointSlices, and bad input answered with Status errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

fn crd(plural: &str, kind: &str, scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.meshwork.io") },
        "spec": {
            "group": "meshwork.io", "scope": scope,
            "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind },
            "versions": [ { "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
                "subresources": { "status": {} } } ]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_registered_at_runtime_is_discoverable_listable_and_watchable() {
    let (_server, client) = common::start(|_| {}).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds
        .create(
            &PostParams::default(),
            &crd("meshnetworkpolicies", "MeshNetworkPolicy", "Namespaced"),
        )
        .await
        .unwrap();
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "CRD reports Established");
    crds.create(
        &PostParams::default(),
        &crd(
            "meshclusterwidenetworkpolicies",
            "MeshClusterwideNetworkPolicy",
            "Cluster",
        ),
    )
    .await
    .unwrap();

    // kube's discovery sees both, with the right scope.
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery.get("meshwork.io").expect("group discovered");
    let (ar, caps) = group
        .recommended_kind("MeshNetworkPolicy")
        .expect("kind discovered");
    assert_eq!(ar.plural, "meshnetworkpolicies");
    assert_eq!(caps.scope, Scope::Namespaced);
    let (_, ccaps) = group
        .recommended_kind("MeshClusterwideNetworkPolicy")
        .unwrap();
    assert_eq!(ccaps.scope, Scope::Cluster);

    // Namespaced custom resources through DynamicObject: watch, create, list.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("meshwork.io", "v1", "MeshNetworkPolicy"),
        "meshnetworkpolicies",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "meshwork.io/v1", "kind": "MeshNetworkPolicy",
        "metadata": { "name": "allow-frontend" },
        "spec": { "endpointSelector": { "matchLabels": { "app": "backend" } } }
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("watch event in time")
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("allow-frontend"));
    assert_eq!(
        seen.data["spec"]["endpointSelector"]["matchLabels"]["app"],
        "backend"
    );
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // Status subresource: status changes only through /status.
    api.patch_status(
        "allow-frontend",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "ok": true } })),
    )
    .await
    .unwrap();
    api.patch(
        "allow-frontend",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "ok": false }, "spec": { "x": 1 } })),
    )
    .await
    .unwrap();
    let got = api.get("allow-frontend").await.unwrap();
    assert_eq!(
        got.data["status"]["ok"], true,
        "main resource update ignores status"
    );
    assert_eq!(got.data["spec"]["x"], 1);
    assert_eq!(
        got.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );

    // Cluster-scoped custom resources.
    let car = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("meshwork.io", "v1", "MeshClusterwideNetworkPolicy"),
        "meshclusterwidenetworkpolicies",
    );
    let capi: Api<DynamicObject> = Api::all_with(client.clone(), &car);
    let cobj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "meshwork.io/v1", "kind": "MeshClusterwideNetworkPolicy", "metadata": { "name": "global" }, "spec": {}
    }))
    .unwrap();
    capi.create(&PostParams::default(), &cobj).await.unwrap();
    assert_eq!(
        capi.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // Deleting the CRD removes its objects and its API.
    crds.delete("meshnetworkpolicies.meshwork.io", &DeleteParams::default())
        .await
        .unwrap();
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_merge_json_and_strategic_patches_round_trip() {
    let (_server, client) = common::start(|_| {}).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ssa = PatchParams::apply("mesh-test").force();
    let applied = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cfg", "labels": { "a": "1" } },
        "data": { "x": "1", "y": "2" }
    });
    let created = cms
        .patch("cfg", &ssa, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["y"], "2");
    assert!(created.metadata.uid.is_some());

    // Another writer adds a key; the applier then drops "y".
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "other": "kept" } })),
    )
    .await
    .unwrap();
    let reapplied = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cfg", "labels": { "a": "2" } },
        "data": { "x": "10" }
    });
    let out = cms
        .patch("cfg", &ssa, &Patch::Apply(&reapplied))
        .await
        .unwrap();
    let data = out.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("10"));
    assert_eq!(
        data.get("y"),
        None,
        "field dropped by its manager is removed"
    );
    assert_eq!(
        data.get("other").map(String::as_str),
        Some("kept"),
        "other writer's field stays"
    );
    assert_eq!(out.metadata.labels.unwrap()["a"], "2");

    // JSON patch with a test op that fails is a 422; a good one applies.
    let bad = json_patch::Patch(
        serde_json::from_value(json!([ { "op": "test", "path": "/data/x", "value": "nope" } ]))
            .unwrap(),
    );
    let err = cms
        .patch("cfg", &PatchParams::default(), &Patch::<()>::Json(bad))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    let good = json_patch::Patch(
        serde_json::from_value(json!([ { "op": "replace", "path": "/data/x", "value": "11" } ]))
            .unwrap(),
    );
    let out = cms
        .patch("cfg", &PatchParams::default(), &Patch::<()>::Json(good))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["x"], "11");

    // Strategic merge patch merges containers by name.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
        "spec": { "containers": [ { "name": "a", "image": "a:1" }, { "name": "b", "image": "b:1" } ] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let out = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({ "spec": { "containers": [ { "name": "b", "image": "b:2" } ] } }),
            ),
        )
        .await
        .unwrap();
    let images: Vec<String> = out
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, ["a:1", "b:2"]);
}

/// One contender of a Lease-based leader election: compare-and-swap on the
/// Lease's resourceVersion, as client-go's leaderelection does.
async fn try_lead(api: &Api<Lease>, me: &str, duration_s: i32) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now();
    let fresh = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "leader" },
        "spec": { "holderIdentity": me, "leaseDurationSeconds": duration_s,
                  "acquireTime": MicroTime(now), "renewTime": MicroTime(now) }
    });
    match api.get_opt("leader").await.unwrap() {
        None => api
            .create(
                &PostParams::default(),
                &serde_json::from_value(fresh).unwrap(),
            )
            .await
            .is_ok(),
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expired = spec
                .renew_time
                .as_ref()
                .map(|t| {
                    t.0 + std::time::Duration::from_secs(
                        spec.lease_duration_seconds.unwrap_or(0) as u64
                    ) < now
                })
                .unwrap_or(true);
            if holder != me && !expired {
                return false;
            }
            let s = lease.spec.get_or_insert_with(Default::default);
            if holder != me {
                s.acquire_time = Some(MicroTime(now));
                s.holder_identity = Some(me.to_string());
            }
            s.renew_time = Some(MicroTime(now));
            s.lease_duration_seconds = Some(duration_s);
            // replace carries the resourceVersion read: a concurrent writer makes this a 409.
            match api.replace("leader", &PostParams::default(), &lease).await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 409 => false,
                Err(e) => panic!("unexpected lease error: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_with_leases_has_one_leader_and_fails_over() {
    let (_server, client) = common::start(|_| {}).await;
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let leaders = Arc::new(AtomicUsize::new(0));
    let max_concurrent = Arc::new(AtomicUsize::new(0));
    let acquired: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (stop_a_tx, stop_a) = tokio::sync::watch::channel(false);
    let (stop_b_tx, stop_b) = tokio::sync::watch::channel(false);
    // Lease of 3 s renewed every 100 ms: slack for a loaded CI machine.
    let spawn = |me: &'static str, stop: tokio::sync::watch::Receiver<bool>| {
        let api = api.clone();
        let leaders = leaders.clone();
        let max_concurrent = max_concurrent.clone();
        let acquired = acquired.clone();
        tokio::spawn(async move {
            let mut leading = false;
            while !*stop.borrow() {
                let ok = try_lead(&api, me, 3).await;
                if ok && !leading {
                    let n = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                    max_concurrent.fetch_max(n, Ordering::SeqCst);
                    acquired.lock().unwrap().push(me.to_string());
                    leading = true;
                } else if !ok && leading {
                    leaders.fetch_sub(1, Ordering::SeqCst);
                    leading = false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if leading {
                leaders.fetch_sub(1, Ordering::SeqCst);
            }
        })
    };
    let a = spawn("a", stop_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = spawn("b", stop_b);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        acquired.lock().unwrap().clone(),
        ["a"],
        "b cannot take a renewed lease"
    );
    stop_a_tx.send(true).unwrap();
    a.await.unwrap();
    common::eventually(
        "b takes over after a's lease expires",
        Duration::from_secs(15),
        || {
            let got = acquired.lock().unwrap().clone();
            async move { got == ["a", "b"] }
        },
    )
    .await;
    stop_b_tx.send(true).unwrap();
    b.await.unwrap();
    assert_eq!(
        max_concurrent.load(Ordering::SeqCst),
        1,
        "never two leaders at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_and_endpointslices_follow_pod_readiness() {
    let (_server, client) =
        common::start(|c| c.service_cidr = "10.97.0.0/24".parse().unwrap()).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web", "labels": { "tier": "front" } },
        "spec": { "selector": { "app": "web" }, "ports": [ { "name": "http", "port": 80, "targetPort": "http" } ] }
    }))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let ip: std::net::Ipv4Addr = svc
        .spec
        .as_ref()
        .unwrap()
        .cluster_ip
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        "10.97.0.0/24"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ip),
        "{ip}"
    );
    let np: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "np" },
        "spec": { "type": "NodePort", "selector": { "app": "web" }, "ports": [ { "port": 81 } ] }
    }))
    .unwrap();
    let np = svcs.create(&PostParams::default(), &np).await.unwrap();
    let node_port = np.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&node_port));
    assert_ne!(np.metadata.uid, svc.metadata.uid);

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-1", "labels": { "app": "web" } },
        "spec": { "nodeName": "n1", "containers": [ { "name": "c", "image": "echo", "ports": [ { "name": "http", "containerPort": 8080 } ] } ] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let slice_of = |svc: &'static str| {
        let slices = slices.clone();
        async move {
            let l = slices
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
                .await
                .unwrap();
            l.items
        }
    };
    // Kubelet (the test) reports an IP, not ready yet.
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "phase": "Running", "podIP": "10.244.1.5" } })),
    )
    .await
    .unwrap();
    common::eventually(
        "slice with a not-ready endpoint",
        Duration::from_secs(5),
        || async {
            let s = slice_of("web").await;
            s.len() == 1
                && s[0].endpoints.len() == 1
                && s[0].endpoints[0].conditions.as_ref().unwrap().ready == Some(false)
        },
    )
    .await;
    let s = &slice_of("web").await[0];
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["tier"], "front");
    let port = &s.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(8080)),
        "named targetPort resolved"
    );
    assert_eq!(s.endpoints[0].addresses, ["10.244.1.5"]);
    assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));

    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "status": { "conditions": [ { "type": "Ready", "status": "True" } ] } }),
        ),
    )
    .await
    .unwrap();
    common::eventually("endpoint becomes ready", Duration::from_secs(5), || async {
        let s = slice_of("web").await;
        s.len() == 1
            && s[0]
                .endpoints
                .first()
                .and_then(|e| e.conditions.as_ref()?.ready)
                == Some(true)
    })
    .await;
    assert_eq!(
        slice_of("np").await[0].ports.as_ref().unwrap()[0].port,
        Some(81)
    );

    // A managed slice deleted by someone else comes back.
    let victim = slice_of("web").await[0].metadata.name.clone().unwrap();
    slices
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(
        "controller restores a deleted slice",
        Duration::from_secs(5),
        || async {
            let s = slice_of("web").await;
            s.len() == 1
                && s[0].endpoints.len() == 1
                && s[0].metadata.name.as_deref() != Some(victim.as_str())
        },
    )
    .await;

    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(
        "endpoint removed with its pod",
        Duration::from_secs(5),
        || async {
            let s = slice_of("web").await;
            s.len() == 1 && s[0].endpoints.is_empty()
        },
    )
    .await;
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    common::eventually(
        "slice removed with its service",
        Duration::from_secs(5),
        || async { slice_of("web").await.is_empty() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_recorder_publishes_events_k8s_io_events() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (_server, client) = common::start(|_| {}).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "bad-annotation" }, "spec": { "ports": [ { "port": 80 } ] }
    }))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "node-agent".into(),
            instance: Some("n1".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidAnnotation".into(),
        note: Some(
            "service.meshwork.io/affinity: \"sideways\" is not one of local, remote, none".into(),
        ),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&svc, &());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "the repeat is folded into a series");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("InvalidAnnotation"));
    assert_eq!(
        e.regarding.as_ref().unwrap().name.as_deref(),
        Some("bad-annotation")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_converge_for_many_services_and_pods() {
    let (server, client) = common::start(|_| {}).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    const SERVICES: usize = 100;
    const PODS_PER_SERVICE: usize = 5;
    for s in 0..SERVICES {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": format!("s{s}") },
            "spec": { "selector": { "svc": format!("s{s}") }, "ports": [ { "port": 80, "targetPort": 8080 } ] }
        }))
        .unwrap();
        svcs.create(&PostParams::default(), &svc).await.unwrap();
    }
    for s in 0..SERVICES {
        for p in 0..PODS_PER_SERVICE {
            let name = format!("s{s}-p{p}");
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "labels": { "svc": format!("s{s}") } },
                "spec": { "containers": [ { "name": "c", "image": "i" } ] }
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            pods.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "podIP": format!("10.244.{s}.{p}"), "conditions": [ { "type": "Ready", "status": "True" } ] } })),
            )
            .await
            .unwrap();
        }
    }
    let slices_rt = server
        .store()
        .registry()
        .get("discovery.k8s.io", "v1", "endpointslices")
        .cloned()
        .unwrap();
    common::eventually(
        "every service has one slice with all its ready pods",
        Duration::from_secs(60),
        || {
            let slices = server.store().all(&slices_rt, Some("default"));
            let ok = slices.len() == SERVICES
                && slices.iter().all(|s| {
                    let svc = s["metadata"]["labels"]["kubernetes.io/service-name"]
                        .as_str()
                        .unwrap_or("");
                    let eps = s["endpoints"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    eps.len() == PODS_PER_SERVICE
                        && eps.iter().all(|e| {
                            e["conditions"]["ready"] == true
                                && e["targetRef"]["name"]
                                    .as_str()
                                    .unwrap_or("")
                                    .starts_with(&format!("{svc}-"))
                        })
                });
            async move { ok }
        },
    )
    .await;

    // Selector and label changes move endpoints between services.
    svcs.patch(
        "s0",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "selector": { "svc": "s1" } } })),
    )
    .await
    .unwrap();
    pods.patch(
        "s2-p0",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "svc": "s3" } } })),
    )
    .await
    .unwrap();
    let count = |svc: &str| {
        server
            .store()
            .all(&slices_rt, Some("default"))
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    common::eventually(
        "endpoints follow selector and label changes",
        Duration::from_secs(20),
        || {
            let got = (count("s0"), count("s1"), count("s2"), count("s3"));
            async move { got == (5, 5, 4, 6) }
        },
    )
    .await;
}

#[tokio::test]
async fn secret_string_data_is_folded_into_data_on_create_and_update() {
    use k8s_openapi::api::core::v1::Secret;
    let (_server, client) = common::start(|_| {}).await;
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "mesh"}, "stringData": {"c2": "name: c2\n"}, "data": {"keep": "eA=="}
    }))
    .unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(created.string_data.is_none(), "stringData is write-only");
    let data = created.data.unwrap();
    assert_eq!(data["c2"].0, b"name: c2\n");
    assert_eq!(data["keep"].0, b"x");
    // A merge patch with stringData overrides an existing key, as kube-apiserver does.
    let patch = json!({"stringData": {"keep": "new"}});
    let patched = secrets
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(
        (data["keep"].0.as_slice(), data["c2"].0.as_slice()),
        (&b"new"[..], &b"name: c2\n"[..])
    );
}
