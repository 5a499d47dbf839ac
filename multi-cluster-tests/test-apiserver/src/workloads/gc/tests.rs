use std::collections::HashSet;

use serde_json::json;

use super::*;

fn obj(plural: &str, name: &str, uid: &str, owners: &[(&str, bool)]) -> Value {
    let refs: Vec<Value> = owners
        .iter()
        .map(|(u, block)| json!({"uid": u, "controller": true, "blockOwnerDeletion": block}))
        .collect();
    let mut o = json!({"metadata": {"name": name, "uid": uid}});
    if !refs.is_empty() {
        o["metadata"]["ownerReferences"] = json!(refs);
    }
    let _ = plural;
    o
}

fn deleting(mut o: Value, finalizer: &str) -> Value {
    o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    o["metadata"]["finalizers"] = json!([finalizer]);
    o
}

fn key(plural: &str, name: &str) -> Key {
    Key {
        group: "apps".into(),
        plural: plural.into(),
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// Runs the planner over `objects` ((plural, object)); `extra` are uids of
/// objects the collector does not act on (owners without owners).
fn run(objects: &[(&str, Value)], extra: &[&str]) -> Vec<Action> {
    let mut uids: HashSet<String> = extra.iter().map(|u| u.to_string()).collect();
    let mut seen = Vec::new();
    for (plural, o) in objects {
        uids.insert(o["metadata"]["uid"].as_str().unwrap().to_string());
        if let Some(g) = GcObject::of("apps", plural, "shop", o) {
            seen.push(g);
        }
    }
    plan(&uids, &seen)
}

#[test]
fn dependents_of_a_gone_owner_are_deleted_and_dangling_refs_dropped() {
    let rs = obj("replicasets", "web-1", "rs", &[("deploy-gone", true)]);
    let pod = obj("pods", "web-1-a", "p", &[("rs", true)]);
    let shared = obj("pods", "shared", "s", &[("rs", true), ("gone", false)]);
    let actions = run(&[("replicasets", rs), ("pods", pod), ("pods", shared)], &[]);
    assert_eq!(
        actions,
        [
            Action::Delete {
                key: key("replicasets", "web-1"),
                foreground: false
            },
            Action::DropOwners {
                key: key("pods", "shared"),
                uids: vec!["gone".into()]
            },
        ]
    );
    // With the owner present nothing happens.
    let rs = obj("replicasets", "web-1", "rs", &[("deploy", true)]);
    assert_eq!(run(&[("replicasets", rs)], &["deploy"]), []);
}

#[test]
fn foreground_deletes_dependents_first_and_waits_for_blocking_ones() {
    let d = deleting(obj("deployments", "web", "d", &[]), FOREGROUND_FINALIZER);
    let rs = obj("replicasets", "web-1", "rs", &[("d", true)]);
    let pod = obj("pods", "web-1-a", "p", &[("rs", true)]);
    assert_eq!(
        run(
            &[
                ("deployments", d.clone()),
                ("replicasets", rs.clone()),
                ("pods", pod.clone())
            ],
            &[]
        ),
        [Action::Delete {
            key: key("replicasets", "web-1"),
            foreground: true
        }],
        "the RS owns pods: it goes in the foreground too; the Deployment waits"
    );
    // The RS is now being deleted in the foreground: its pod goes; both wait.
    let rs_going = deleting(rs.clone(), FOREGROUND_FINALIZER);
    assert_eq!(
        run(
            &[
                ("deployments", d.clone()),
                ("replicasets", rs_going.clone()),
                ("pods", pod)
            ],
            &[]
        ),
        [Action::Delete {
            key: key("pods", "web-1-a"),
            foreground: false
        }]
    );
    // Pod gone: the RS may go; then the Deployment.
    assert_eq!(
        run(
            &[("deployments", d.clone()), ("replicasets", rs_going)],
            &[]
        ),
        [Action::Finish {
            key: key("replicasets", "web-1"),
            finalizer: FOREGROUND_FINALIZER
        }]
    );
    assert_eq!(
        run(&[("deployments", d.clone())], &[]),
        [Action::Finish {
            key: key("deployments", "web"),
            finalizer: FOREGROUND_FINALIZER
        }]
    );
    // A dependent that does not block is deleted but not waited for.
    let loose = obj("replicasets", "loose", "l", &[("d", false)]);
    assert_eq!(
        run(&[("deployments", d), ("replicasets", loose)], &[]),
        [
            Action::Delete {
                key: key("replicasets", "loose"),
                foreground: false
            },
            Action::Finish {
                key: key("deployments", "web"),
                finalizer: FOREGROUND_FINALIZER
            },
        ]
    );
}

#[test]
fn orphan_releases_the_dependents_then_lets_the_owner_go() {
    let d = deleting(obj("deployments", "web", "d", &[]), ORPHAN_FINALIZER);
    let rs = obj("replicasets", "web-1", "rs", &[("d", true)]);
    assert_eq!(
        run(&[("deployments", d), ("replicasets", rs)], &[]),
        [
            Action::DropOwners {
                key: key("replicasets", "web-1"),
                uids: vec!["d".into()]
            },
            Action::Finish {
                key: key("deployments", "web"),
                finalizer: ORPHAN_FINALIZER
            },
        ]
    );
}

#[test]
fn objects_without_owners_or_finalizers_are_not_the_collectors() {
    assert!(GcObject::of("", "pods", "shop", &obj("pods", "p", "p", &[])).is_none());
    let mut other = obj("pods", "p", "p", &[]);
    other["metadata"]["finalizers"] = json!(["example.com/keep"]);
    other["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(GcObject::of("", "pods", "shop", &other).is_none());
}
