use serde_json::json;

use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn template(version: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": format!("img:{version}")}]}})
}

fn deployment(replicas: i64, version: &str) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-uid", "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": template(version), "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
    })
}

/// A ReplicaSet of `d` for template `version`: `replicas` in spec, `pods`
/// of which `available` available, created `created` (orders them).
fn rs_of(
    d: &Value,
    version: &str,
    revision: i64,
    replicas: i64,
    pods: i64,
    available: i64,
    created: &str,
) -> Value {
    let mut dv = d.clone();
    dv["spec"]["template"] = template(version);
    let hash = template_hash(&template(version), None);
    let mut rs = new_replicaset(&dv, &hash, revision, replicas);
    rs["metadata"]["creationTimestamp"] = json!(created);
    rs["metadata"]["generation"] = json!(1);
    rs["metadata"]["annotations"][DESIRED_REPLICAS] = json!(apps::replicas(d).to_string());
    rs["status"] = json!({"replicas": pods, "availableReplicas": available, "readyReplicas": available,
        "observedGeneration": 1});
    rs
}

fn sizes(p: &Plan) -> Vec<(String, i64)> {
    p.update
        .iter()
        .map(|rs| (name(rs).to_string(), apps::replicas(rs)))
        .collect()
}

#[test]
fn the_template_hash_is_stable_and_changes_with_the_template_and_collisions() {
    let h = template_hash(&template("1"), None);
    assert_eq!(h, template_hash(&template("1"), None));
    assert_ne!(h, template_hash(&template("2"), None));
    assert_ne!(h, template_hash(&template("1"), Some(1)));
    assert!(!h.is_empty() && h.len() <= 10, "{h}");
    assert!(
        h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{h}"
    );
    // Field order does not matter, nor the hash label itself.
    let mut reordered: Value = serde_json::from_str(
        r#"{"spec": {"containers": [{"image": "img:1", "name": "c"}]}, "metadata": {"labels": {"app": "web", "pod-template-hash": "x"}}}"#,
    )
    .unwrap();
    assert_eq!(template_hash(&reordered, None), h);
    reordered["metadata"]["labels"]["app"] = json!("db");
    assert_ne!(template_hash(&reordered, None), h);
}

#[test]
fn a_new_deployment_gets_one_replicaset_with_all_replicas() {
    let d = deployment(3, "1");
    let p = plan(&d, &[], NOW);
    let rs = p.create.expect("a ReplicaSet is created");
    let hash = template_hash(&template("1"), None);
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(rs["spec"]["replicas"], 3);
    assert_eq!(rs["metadata"]["labels"]["pod-template-hash"], json!(hash));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"],
        json!({"app": "web", "pod-template-hash": hash})
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"],
        json!(hash)
    );
    assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
    assert_eq!(
        rs["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid",
            "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(p.revision.as_deref(), Some("1"));
    let st = p.status.unwrap();
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["conditions"][1]["reason"], "NewReplicaSetCreated");
}

#[test]
fn scaling_takes_the_new_count_at_once() {
    for (from, to) in [(3, 5), (5, 1), (1, 0), (0, 2)] {
        let old = deployment(from, "1");
        let d = deployment(to, "1");
        let rs = rs_of(&old, "1", 1, from, from, from, NOW);
        let p = plan(&d, &[&rs], NOW);
        assert!(p.create.is_none());
        assert_eq!(sizes(&p), [(name(&rs).to_string(), to)], "{from} → {to}");
        assert_eq!(
            p.update[0]["metadata"]["annotations"][DESIRED_REPLICAS],
            to.to_string()
        );
    }
}

#[test]
fn a_rolling_update_grows_new_only_within_surge_and_shrinks_old_only_when_new_is_available() {
    // 3 replicas: maxSurge 1, maxUnavailable 0.
    let d = deployment(3, "2");
    let old = |spec, avail| rs_of(&d, "1", 1, spec, spec, avail, "2026-01-01T00:00:00Z");
    let new = |spec, pods, avail| rs_of(&d, "2", 2, spec, pods, avail, "2026-01-01T00:01:00Z");
    let created = plan(&d, &[&old(3, 3)], NOW).create.expect("new ReplicaSet");
    assert_eq!(created["spec"]["replicas"], 1, "one surge pod");
    assert_eq!(created["metadata"]["annotations"][REVISION], "2");
    let (o, n) = (
        "web-".to_string() + &template_hash(&template("1"), None),
        "web-".to_string() + &template_hash(&template("2"), None),
    );
    for (old_rs, new_rs, want) in [
        // New pod not available yet: nothing moves.
        (old(3, 3), new(1, 1, 0), vec![]),
        // Available: one old pod may go.
        (old(3, 3), new(1, 1, 1), vec![(o.clone(), 2)]),
        // Room again: new grows.
        (old(2, 2), new(1, 1, 1), vec![(n.clone(), 2)]),
        (old(1, 1), new(3, 3, 2), vec![]),
        (old(1, 1), new(3, 3, 3), vec![(o.clone(), 0)]),
    ] {
        let p = plan(&d, &[&old_rs, &new_rs], NOW);
        assert!(p.create.is_none());
        assert_eq!(
            sizes(&p),
            want,
            "old {} new {}",
            old_rs["status"],
            new_rs["status"]
        );
    }
    // Unavailable old pods go first: with 4 replicas (surge 1, unavailable
    // 1) and one old pod unavailable, that one goes although only 3 are
    // available, the least allowed.
    let d4 = deployment(4, "2");
    let old4 = rs_of(&d4, "1", 1, 4, 4, 3, "2026-01-01T00:00:00Z");
    let new4 = rs_of(&d4, "2", 2, 1, 1, 0, "2026-01-01T00:01:00Z");
    assert_eq!(rolling_scale_down(&d4, &new4, &[&old4]), [3]);
    let healthy = rs_of(&d4, "1", 1, 4, 4, 4, "2026-01-01T00:00:00Z");
    assert_eq!(rolling_scale_down(&d4, &new4, &[&healthy]), [3]);
    let new4_busy = rs_of(&d4, "2", 2, 1, 1, 0, "2026-01-01T00:01:00Z");
    let degraded = rs_of(&d4, "1", 1, 4, 4, 2, "2026-01-01T00:00:00Z");
    assert_eq!(
        rolling_scale_down(&d4, &new4_busy, &[&degraded]),
        [3],
        "only the unhealthy budget (1), no available pod"
    );
    // Done: Progressing says so, nothing else moves.
    let p = plan(&d, &[&old(0, 0), &new(3, 3, 3)], NOW);
    assert_eq!(sizes(&p), vec![]);
    let st = p.status.unwrap();
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["updatedReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(st["conditions"][0]["reason"], "MinimumReplicasAvailable");
    assert_eq!(st["conditions"][1]["reason"], "NewReplicaSetAvailable");
}

/// Runs a rollout to the end: each tick applies the plan, then the
/// ReplicaSets converge (pods appear at once, become available two ticks
/// later). Returns the least available seen, the most pods seen and ticks.
fn simulate(replicas: i64, surge: Value, unavailable: Value) -> (i64, i64, usize) {
    let mut d = deployment(replicas, "2");
    d["spec"]["strategy"]["rollingUpdate"] =
        json!({"maxSurge": surge, "maxUnavailable": unavailable});
    // (rs, pods' ages)
    let mut sets: Vec<(Value, Vec<u32>)> = vec![(
        rs_of(
            &d,
            "1",
            1,
            replicas,
            replicas,
            replicas,
            "2026-01-01T00:00:00Z",
        ),
        vec![5; replicas as usize],
    )];
    let (mut least, mut most) = (replicas, replicas);
    for tick in 0..200 {
        let refs: Vec<&Value> = sets.iter().map(|(rs, _)| rs).collect();
        let p = plan(&d, &refs, NOW);
        if let Some(mut rs) = p.create {
            rs["metadata"]["creationTimestamp"] =
                json!(format!("2026-01-01T00:{:02}:00Z", 1 + tick.min(58)));
            sets.push((rs, vec![]));
        }
        for u in p.update {
            if let Some(s) = sets.iter_mut().find(|(rs, _)| name(rs) == name(&u)) {
                s.0 = u;
            }
        }
        let quiet = p.status.is_none() && p.revision.is_none();
        let before: Vec<Value> = sets.iter().map(|(rs, _)| rs["status"].clone()).collect();
        if let Some(st) = p.status {
            d["status"] = st;
        }
        if let Some(rev) = p.revision {
            d["metadata"]["annotations"] = json!({ REVISION: rev });
        }
        for (rs, pods) in sets.iter_mut() {
            let want = apps::replicas(rs) as usize;
            pods.sort(); // youngest (not available) first: they go first
            while pods.len() > want {
                pods.remove(0);
            }
            while pods.len() < want {
                pods.push(0);
            }
            let available = pods.iter().filter(|a| **a >= 2).count();
            rs["status"] = json!({"replicas": pods.len(), "availableReplicas": available,
                "readyReplicas": available, "observedGeneration": 1});
            for a in pods.iter_mut() {
                *a += 1;
            }
        }
        let after: Vec<Value> = sets.iter().map(|(rs, _)| rs["status"].clone()).collect();
        let idle = quiet && before == after;
        let available: i64 = sets
            .iter()
            .map(|(rs, _)| status_count(rs, "availableReplicas"))
            .sum();
        let pods: i64 = sets.iter().map(|(_, p)| p.len() as i64).sum();
        least = least.min(available);
        most = most.max(pods);
        if idle {
            let new = sets
                .iter()
                .find(|(rs, _)| runs_template(rs, &d))
                .expect("new RS");
            assert_eq!(apps::replicas(&new.0), replicas);
            assert!(
                sets.iter()
                    .filter(|(rs, _)| !runs_template(rs, &d))
                    .all(|(rs, _)| apps::replicas(rs) == 0)
            );
            return (least, most, tick);
        }
    }
    let refs: Vec<&Value> = sets.iter().map(|(rs, _)| rs).collect();
    eprintln!("last plan: {:#?}", plan(&d, &refs, NOW));
    panic!(
        "the rollout did not finish: {:?}",
        sets.iter()
            .map(|(rs, p)| (apps::replicas(rs), p.len()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn rollouts_keep_within_surge_and_unavailable_to_the_end() {
    for (replicas, surge, unavailable, min_available, max_pods) in [
        (1, json!("25%"), json!("25%"), 1, 2),
        (3, json!("25%"), json!("25%"), 3, 4),
        (5, json!("25%"), json!("25%"), 4, 7),
        (10, json!("25%"), json!("25%"), 8, 13),
        (4, json!(0), json!(1), 3, 4),
        (4, json!(2), json!(0), 4, 6),
        (2, json!("100%"), json!(0), 2, 4),
    ] {
        let (least, most, ticks) = simulate(replicas, surge.clone(), unavailable.clone());
        assert!(
            least >= min_available && most <= max_pods,
            "{replicas} replicas, surge {surge}, unavailable {unavailable}: least available {least} (want ≥ {min_available}), most pods {most} (want ≤ {max_pods}), {ticks} ticks"
        );
    }
}

#[test]
fn recreate_empties_the_old_replicaset_before_the_new_one_grows() {
    let mut d = deployment(2, "2");
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    let old = |spec, pods| rs_of(&d, "1", 1, spec, pods, pods, "2026-01-01T00:00:00Z");
    let created = plan(&d, &[&old(2, 2)], NOW).create.unwrap();
    assert_eq!(created["spec"]["replicas"], 0);
    let new = rs_of(&d, "2", 2, 0, 0, 0, "2026-01-01T00:01:00Z");
    let o = name(&old(0, 0)).to_string();
    assert_eq!(sizes(&plan(&d, &[&old(2, 2), &new], NOW)), [(o, 0)]);
    assert_eq!(
        sizes(&plan(&d, &[&old(0, 1), &new], NOW)),
        vec![],
        "old pods still there"
    );
    assert_eq!(
        sizes(&plan(&d, &[&old(0, 0), &new], NOW)),
        [(name(&new).to_string(), 2)]
    );
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    // 10 → 20 with two active ReplicaSets of 6 and 6 (max-replicas 13).
    let before = deployment(10, "2");
    let d = deployment(20, "2");
    let mut old = rs_of(&before, "1", 1, 6, 6, 6, "2026-01-01T00:00:00Z");
    let mut new = rs_of(&before, "2", 2, 6, 6, 0, "2026-01-01T00:01:00Z");
    for rs in [&mut old, &mut new] {
        rs["metadata"]["annotations"][MAX_REPLICAS] = json!("13");
    }
    let p = plan(&d, &[&old, &new], NOW);
    let got: i64 = sizes(&p).iter().map(|(_, n)| n).sum();
    assert_eq!(got, 25, "20 + maxSurge 5 in total: {:?}", sizes(&p));
    for (_, n) in sizes(&p) {
        assert!((12..=13).contains(&n), "{:?}", sizes(&p));
    }
}

#[test]
fn old_replicasets_beyond_the_history_limit_go_once_complete() {
    let mut d = deployment(1, "4");
    d["spec"]["revisionHistoryLimit"] = json!(1);
    let olds: Vec<Value> = (1..=3)
        .map(|v| {
            rs_of(
                &d,
                &v.to_string(),
                v,
                0,
                0,
                0,
                &format!("2026-01-01T00:0{v}:00Z"),
            )
        })
        .collect();
    let new = rs_of(&d, "4", 4, 1, 1, 1, "2026-01-01T00:09:00Z");
    let mut refs: Vec<&Value> = olds.iter().collect();
    refs.push(&new);
    let p = plan(&d, &refs, NOW);
    assert_eq!(
        p.delete,
        [name(&olds[0]).to_string(), name(&olds[1]).to_string()]
    );
    // Not while the new one is unavailable.
    let busy = rs_of(&d, "4", 4, 1, 1, 0, "2026-01-01T00:09:00Z");
    refs.pop();
    refs.push(&busy);
    assert!(plan(&d, &refs, NOW).delete.is_empty());
}

#[test]
fn a_rollback_makes_the_old_replicaset_new_with_the_next_revision() {
    let d = deployment(1, "1");
    let first = rs_of(&d, "1", 1, 0, 0, 0, "2026-01-01T00:00:00Z");
    let second = rs_of(&d, "2", 2, 1, 1, 1, "2026-01-01T00:01:00Z");
    let p = plan(&d, &[&first, &second], NOW);
    assert!(p.create.is_none());
    let bumped = p
        .update
        .iter()
        .find(|u| name(u) == name(&first))
        .expect("first is written");
    assert_eq!(bumped["metadata"]["annotations"][REVISION], "3");
    assert_eq!(apps::replicas(bumped), 1, "and grows within the surge");
    assert_eq!(p.revision.as_deref(), Some("3"));
}

#[test]
fn a_deployment_being_deleted_only_reports() {
    let mut d = deployment(3, "1");
    d["metadata"]["deletionTimestamp"] = json!(NOW);
    let rs = rs_of(&d, "1", 1, 3, 3, 3, NOW);
    let p = plan(&d, &[&rs], NOW);
    assert!(p.create.is_none() && p.update.is_empty() && p.delete.is_empty());
    assert_eq!(p.status.unwrap()["availableReplicas"], 3);
}
