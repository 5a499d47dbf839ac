use serde_json::json;

use crate::store::fixtures::{deployments, minimal, normalize};

#[test]
fn defaults_are_filled_as_the_real_server_fills_them() {
    let mut d = minimal();
    normalize(&deployments(), &mut d).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["containers"][0]["resources"], json!({}));
    // Defaulting twice changes nothing (no rollout from a re-apply).
    let again = d.clone();
    normalize(&deployments(), &mut d).unwrap();
    assert_eq!(d, again);
    // Recreate gets no rollingUpdate.
    let mut r = minimal();
    r["spec"]["strategy"] = json!({"type": "Recreate"});
    normalize(&deployments(), &mut r).unwrap();
    assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
}
