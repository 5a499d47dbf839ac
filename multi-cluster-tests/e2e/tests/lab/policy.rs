//! Cross-cluster policy: only the named cluster's pods are admitted, the
//! others are dropped by the datapath and counted with their reason.

use mesh_e2e::Lab;

use super::helpers::{eventually, meshctl_typed};
use super::node_agent::datapath_packets;
use super::requests::{pod_ip, reaches};

const DB_POLICY: &str = r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata:
  name: db-from-c2-clients
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: db}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: client, meshwork.io/cluster: c2}
      toPorts:
        - ports: [{port: "8080", protocol: TCP}]
"#;

/// A policy in c1 admits only c2's `app=client` pods to c1's db on 8080:
/// c2's client passes; another identity of c2 and the same labels in c1 are
/// dropped by the datapath, counted with their reason. Removing the policy
/// opens the db again.
pub(super) fn cross_cluster_policy_admits_only_the_named_clusters_pods(lab: &Lab) {
    for (cluster, node, name, app) in [
        ("c1", "c1-n2", "db", "db"),
        ("c2", "c2-n1", "client-c2", "client"),
    ] {
        lab.ok(&[
            "pod",
            "add",
            &format!("--cluster={cluster}"),
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
            &format!("--label=app={app}"),
        ]);
    }
    let db = format!("{}:8080", pod_ip(lab, "lab-c1", "shop", "db"));
    let peers = [
        ("c2", "client-c2", true),
        ("c2", "web-1", false),
        ("c1", "client", false),
    ];
    // The control: without a policy every peer gets through.
    for (cluster, pod, _) in peers {
        eventually(
            &format!("{cluster}/{pod} reaches the db before any policy"),
            || reaches(lab, cluster, "shop", pod, &db),
        );
    }
    lab.apply("lab-c1", DB_POLICY);
    eventually("the policy is enforced (c1's client refused)", || {
        !reaches(lab, "c1", "shop", "client", &db)
    });
    let status = |name: &str| {
        lab.kubectl(
            "lab-c1",
            &[
                "-n",
                "shop",
                "get",
                "mnp",
                name,
                "-o",
                "jsonpath={.status.valid} {.status.message}",
            ],
        )
    };
    eventually("the agents mark the policy valid", || {
        status("db-from-c2-clients").trim() == "true"
    });
    // A bad policy is refused with a message saying what to change, in its
    // status; the good one keeps working.
    lab.apply(
        "lab-c1",
        &DB_POLICY.replace("db-from-c2-clients", "bad").replace(
            "- fromEndpoints:",
            "- fromEntities: [everyone]\n      fromEndpoints:",
        ),
    );
    eventually("the bad policy is marked invalid with the reason", || {
        let s = status("bad");
        s.starts_with("false ") && s.contains("unknown entity \"everyone\"")
    });
    lab.kubectl("lab-c1", &["-n", "shop", "delete", "mnp", "bad"]);
    let before = datapath_packets(lab, "c1-n2", "policy_default_deny");
    for (cluster, pod, allowed) in peers {
        for _ in 0..3 {
            assert_eq!(
                reaches(lab, cluster, "shop", pod, &db),
                allowed,
                "{cluster}/{pod} → db under the policy"
            );
        }
    }
    let after = datapath_packets(lab, "c1-n2", "policy_default_deny");
    assert!(
        after > before,
        "refused connections are counted as policy_default_deny on c1-n2 ({before} → {after})"
    );
    // explain names the policy on both ends of the story.
    use meshctl::report::{ExplainReport, HopStatus};
    let ingress = |ex: &ExplainReport| {
        ex.backends
            .iter()
            .flat_map(|b| b.hops.iter())
            .find(|h| h.step == "ingress policy")
            .cloned()
            .unwrap_or_else(|| panic!("no ingress policy hop: {ex:#?}"))
    };
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            "shop/client",
            "shop/db:8080",
        ],
    );
    assert_eq!((code, ex.ok), (Some(3), false), "{ex:#?}");
    let hop = ingress(&ex);
    assert_eq!(hop.status, HopStatus::Fail, "{hop:#?}");
    assert!(
        hop.detail
            .contains("selected by MeshNetworkPolicy shop/db-from-c2-clients"),
        "{hop:#?}"
    );
    let (ex, code) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c2",
            "--destination-context",
            "lab-c1",
            "shop/client-c2",
            "shop/db:8080",
        ],
    );
    assert_eq!((code, ex.ok), (Some(0), true), "{ex:#?}");
    let hop = ingress(&ex);
    assert!(
        hop.detail
            .contains("rule MeshNetworkPolicy shop/db-from-c2-clients ingress[0]"),
        "{hop:#?}"
    );
    lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "delete",
            "meshnetworkpolicy",
            "db-from-c2-clients",
        ],
    );
    eventually("the db is open again once the policy is gone", || {
        reaches(lab, "c1", "shop", "client", &db)
    });
}

const GUARDED_POLICY: &str = r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata:
  name: guarded-from-nobody
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: fo-guarded}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: nobody}
      toPorts:
        - ports: [{port: "8080"}]
"#;

/// A fail-open window closed: with c1's mesh-apiserver stopped, a pod
/// created under a policy that admits nobody of this cluster is refused
/// from its very first connection attempt and after. The controls: a pod
/// created before keeps answering the same client meanwhile, and a pod
/// created while it was down that no policy selects answers once the
/// mesh-apiserver is back (until then new pods are held: fail closed), while
/// the guarded one still refuses.
pub(super) fn a_pod_created_while_the_mesh_apiserver_is_down_is_enforced_from_its_first_packet(
    lab: &Lab,
) {
    let add = |name: &str| {
        lab.ok(&[
            "pod",
            "add",
            "--cluster=c1",
            "--node=c1-n2",
            "--namespace=shop",
            &format!("--name={name}"),
            &format!("--label=app={name}"),
        ]);
    };
    let addr = |name: &str| format!("{}:8080", pod_ip(lab, "lab-c1", "shop", name));
    add("fo-client");
    add("fo-open");
    let open = addr("fo-open");
    lab.apply("lab-c1", GUARDED_POLICY);
    eventually("the pod created before answers", || {
        reaches(lab, "c1", "shop", "fo-client", &open)
    });
    lab.ok(&["kill", "c1/mesh-apiserver"]);
    add("fo-guarded");
    let guarded = addr("fo-guarded");
    let first = reaches(lab, "c1", "shop", "fo-client", &guarded);
    add("fo-late");
    let late = addr("fo-late");
    let meanwhile: Vec<bool> = (0..5)
        .map(|_| reaches(lab, "c1", "shop", "fo-client", &guarded))
        .collect();
    let open_meanwhile = reaches(lab, "c1", "shop", "fo-client", &open);
    lab.ok(&["restart", "c1/mesh-apiserver"]);
    eventually(
        "the unselected pod created meanwhile answers once it is back",
        || reaches(lab, "c1", "shop", "fo-client", &late),
    );
    let after: Vec<bool> = (0..3)
        .map(|_| reaches(lab, "c1", "shop", "fo-client", &guarded))
        .collect();
    lab.kubectl(
        "lab-c1",
        &["-n", "shop", "delete", "mnp", "guarded-from-nobody"],
    );
    assert!(
        !first,
        "the guarded pod answered its first connection while the mesh-apiserver was down"
    );
    assert!(
        meanwhile.iter().all(|r| !r),
        "the guarded pod answered while the mesh-apiserver was down: {meanwhile:?}"
    );
    assert!(open_meanwhile, "the pod created before stopped answering");
    assert!(
        after.iter().all(|r| !r),
        "the guarded pod answered once the mesh-apiserver was back: {after:?}"
    );
}
