//! kube-rs reflectors and watchers against the server: staying in sync,
//! bookmarks, and recovery from 410 Gone.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;

fn pod(name: &str, i: usize) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "gen": i.to_string() } },
        "spec": { "containers": [ { "name": "c", "image": "echo" } ] }
    }))
    .unwrap()
}

fn server_state(server: &mesh_test_apiserver::TestApiServer) -> BTreeMap<String, String> {
    let rt = server
        .store()
        .registry()
        .get("", "v1", "pods")
        .cloned()
        .unwrap();
    server
        .store()
        .all(&rt, Some("default"))
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_with_bookmarks_stays_in_sync_through_1000_changes() {
    let (server, client) =
        common::start(|c| c.bookmark_interval = Duration::from_millis(100)).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<Pod>();
    let mut events_seen = 0usize;
    let stream = watcher(pods.clone(), watcher::Config::default().page_size(50))
        .default_backoff()
        .reflect(writer);
    let (bm_tx, mut bm_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            if let Ok(
                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
            ) = &ev
            {
                let _ = bm_tx.send(());
            }
        }
    });
    reader
        .wait_until_ready()
        .await
        .expect("reflector initialises");

    // 1000 operations: creates, label updates, deletes; watches are cut
    // twice on the way, so the watcher must resume from its last version.
    let mut ops = 0;
    let mut live: Vec<String> = Vec::new();
    let mut i = 0;
    while ops < 1000 {
        match ops % 5 {
            0 | 1 => {
                let name = format!("p-{i}");
                i += 1;
                pods.create(&PostParams::default(), &pod(&name, i))
                    .await
                    .unwrap();
                live.push(name);
            }
            2 | 3 if !live.is_empty() => {
                let name = &live[ops % live.len()];
                pods.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "labels": { "op": ops.to_string() } } })),
                )
                .await
                .unwrap();
            }
            _ if !live.is_empty() => {
                let name = live.remove(0);
                pods.delete(&name, &DeleteParams::default()).await.unwrap();
            }
            _ => {}
        }
        ops += 1;
        if ops == 300 || ops == 700 {
            server.store().close_watches();
        }
    }
    let want = server_state(&server);
    assert!(!want.is_empty(), "some pods remain");
    common::eventually(
        "reflector store equals server state",
        Duration::from_secs(30),
        || {
            let got: BTreeMap<String, String> = reader
                .state()
                .iter()
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap(),
                        p.metadata.resource_version.clone().unwrap(),
                    )
                })
                .collect();
            let equal = got == want;
            async move { equal }
        },
    )
    .await;
    // The stream carried events (not only the initial list).
    while bm_rx.try_recv().is_ok() {
        events_seen += 1;
    }
    assert!(
        events_seen > 500,
        "watch events reached the reflector: {events_seen}"
    );
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_are_sent_when_allowed() {
    let (_server, client) =
        common::start(|c| c.bookmark_interval = Duration::from_millis(100)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            }
            .timeout(10),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_version_gets_410_and_watcher_recovers() {
    let (server, client) = common::start(|c| c.history = 50).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": { "k": "v" } })).unwrap()
    };
    cms.create(&PostParams::default(), &cm("first"))
        .await
        .unwrap();
    let old_rv = cms
        .get("first")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    // Without bookmarks, a ConfigMap watcher's version stays at "first"
    // while other kinds advance the global revision past the history.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(cms.clone(), watcher::Config::default().disable_bookmarks())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let driver = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    for i in 0..120 {
        let s: Secret = serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("s{i}") } })).unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }

    // A raw watch from the old version: 200, then an ERROR event with 410.
    let mut raw = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match raw.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410, "{status:?}");
            assert_eq!(status.reason, "Gone");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let gone_before = server.store().gone_sent();

    // Cut the watcher's connection: it resumes from its stale version,
    // gets 410, relists, and sees what changed meanwhile.
    server.store().close_watches();
    cms.create(&PostParams::default(), &cm("second"))
        .await
        .unwrap();
    common::eventually("watcher relisted after 410 and sees 'second'", Duration::from_secs(20), || {
        let names: Vec<String> = reader.state().iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        async move { names.contains(&"first".to_string()) && names.contains(&"second".to_string()) }
    })
    .await;
    assert!(
        server.store().gone_sent() > gone_before,
        "the watcher's resume was answered with 410"
    );
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_on_list_and_watch() {
    let (_server, client) = common::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for (name, node, app) in [("a", "n1", "web"), ("b", "n2", "web"), ("c", "n1", "db")] {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "labels": { "app": app } },
            "spec": { "nodeName": node, "containers": [ { "name": "c", "image": "i" } ] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app in (web)"))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    // Paging: limit 2, then continue.
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["c"]);

    // A label change out of the selector is a DELETED for that watcher.
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = pods
        .watch(&WatchParams::default().labels("app=web").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "app": "db" } } })),
    )
    .await
    .unwrap();
    match w.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(p)) => assert_eq!(p.metadata.name.as_deref(), Some("a")),
        other => panic!("expected DELETED for a, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let (_server, client) =
        common::start(|c| c.bookmark_interval = Duration::from_millis(200)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..20 {
        let c: ConfigMap = serde_json::from_value(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("c{i}") } })).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(cms.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let driver = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    // Ready only after the initial-events-end bookmark.
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .expect("streaming list completes")
        .unwrap();
    assert_eq!(reader.state().len(), 20);
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    common::eventually("delete reaches the store", Duration::from_secs(10), || {
        let n = reader.state().len();
        async move { n == 19 }
    })
    .await;
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_get_list_and_watch() {
    let (_server, client) = common::start(|_| {}).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("m1", 1))
        .await
        .unwrap();
    let meta = pods.get_metadata("m1").await.unwrap();
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.labels.unwrap()["gen"], "1");
    let list = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let meta_api: Api<kube::core::PartialObjectMeta<Pod>> =
        Api::namespaced(pods.clone().into_client(), "default");
    let mut w = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m1"));
    pods.create(&PostParams::default(), &pod("m2", 2))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.metadata.name.as_deref(), Some("m2"));
}
