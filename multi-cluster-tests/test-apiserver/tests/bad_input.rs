//! Bad input gets the Status a real API server returns, and the server
//! keeps serving.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;

async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Status {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap();
    match client.request::<serde_json::Value>(req).await {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("{method} {path} with {body:?}: expected a Status error, got {other:?}"),
    }
}

fn causes(s: &Status) -> Vec<String> {
    s.details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_kubernetes_status_errors_and_the_server_keeps_serving() {
    let (server, client) = common::start(|_| {}).await;
    let cms_path = "/api/v1/namespaces/default/configmaps";

    let s = raw(
        &client,
        "POST",
        cms_path,
        "application/json",
        "{\"apiVersion\": ",
    )
    .await;
    assert_eq!(
        (s.code, s.reason.as_str()),
        (400, "BadRequest"),
        "malformed JSON: {s:?}"
    );

    let s = raw(
        &client,
        "PATCH",
        &format!("{cms_path}/x?fieldManager=t"),
        "application/apply-patch+yaml",
        "kind: [unclosed",
    )
    .await;
    assert_eq!(
        (s.code, s.reason.as_str()),
        (400, "BadRequest"),
        "malformed YAML: {s:?}"
    );

    let s = raw(
        &client,
        "POST",
        cms_path,
        "application/json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#,
    )
    .await;
    assert_eq!(s.code, 400, "wrong kind for the URL: {s:?}");
    assert!(
        s.message
            .starts_with("Secret in version \"v1\" cannot be handled as a ConfigMap"),
        "kube-apiserver's message: {}",
        s.message
    );

    let s = raw(
        &client,
        "POST",
        cms_path,
        "application/json",
        r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
    )
    .await;
    assert_eq!(s.code, 400, "wrong apiVersion for the URL: {s:?}");
    assert_eq!(
        s.message,
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    );

    // An Event in the events.k8s.io schema sent to the core URL: same kind,
    // other API (kube-apiserver converts it, then refuses the version).
    let s = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/events",
        "application/json",
        r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"a"}}"#,
    )
    .await;
    assert_eq!(
        (s.code, s.message.as_str()),
        (
            400,
            "the API version in the data (events.k8s.io/v1) does not match the expected API version (v1)"
        )
    );

    let s = raw(
        &client,
        "POST",
        cms_path,
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    )
    .await;
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
    assert_eq!(causes(&s), ["metadata.name"]);
    assert!(s.message.contains("RFC 1123 subdomain"), "{}", s.message);

    let s = raw(
        &client,
        "POST",
        cms_path,
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#,
    )
    .await;
    assert_eq!(s.code, 422, "missing name: {s:?}");

    let s = raw(
        &client,
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
    )
    .await;
    assert_eq!(
        (s.code, s.reason.as_str()),
        (404, "NotFound"),
        "missing namespace: {s:?}"
    );

    let svc = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":0}]}}"#;
    let s = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        svc,
    )
    .await;
    assert_eq!(s.code, 422, "{s:?}");
    assert_eq!(causes(&s), ["spec.ports[0].port"]);

    let s = raw(
        &client,
        "GET",
        "/apis/nope.example.com/v1/things",
        "application/json",
        "",
    )
    .await;
    assert_eq!(s.code, 404, "unknown resource: {s:?}");

    // Typed API: 404, 409 AlreadyExists, 409 Conflict on a stale resourceVersion.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let err = cms.get("missing").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    let cm: ConfigMap = serde_json::from_value(
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" } }),
    )
    .unwrap();
    let v1 = cms.create(&PostParams::default(), &cm).await.unwrap();
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    let mut newer = v1.clone();
    newer.data = Some([("k".to_string(), "1".to_string())].into());
    cms.replace("c", &PostParams::default(), &newer)
        .await
        .unwrap();
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "2".to_string())].into());
    let err = cms
        .replace("c", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let err = cms
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "resourceVersion": v1.metadata.resource_version }, "data": { "k": "3" } })))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "stale rv in a patch: {err:?}"
    );
    assert_eq!(
        cms.get("c").await.unwrap().data.unwrap()["k"],
        "1",
        "nothing written by refused requests"
    );

    // A wrong token is 401.
    let mut kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    kc.auth_infos[0].auth_info.as_mut().unwrap().token = Some("wrong".to_string().into());
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let bad_client = kube::Client::try_from(cfg).unwrap();
    let err = Api::<ConfigMap>::namespaced(bad_client, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );

    // Still serving, state intact.
    let svcs: Api<Service> = Api::namespaced(client, "default");
    assert!(
        svcs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}
