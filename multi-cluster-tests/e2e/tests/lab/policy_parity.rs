//! Policy parity beyond the upstream cases: a default-deny NetworkPolicy
//! with an allow on a named port (and the node's own probes still
//! admitted), a deny rule under an allow-all, a policy using a field this
//! version does not enforce (refused, nothing widened), and a Cilium
//! manifest applied as written (the lab runs with
//! `compat.ciliumPolicies=true`).
//!
//! One namespace `parity`: `server` (app=server, serving 8080 named `http`
//! and 9090) and `other` (app=other, serving 8080) on c1-n1, `client`
//! (app=client) on c1-n2. Every probe runs inside a pod's or the node's
//! namespace.

use std::time::{Duration, Instant};

use mesh_e2e::Lab;

use super::helpers::meshctl_typed;
use super::node_agent::datapath_packets;
use super::requests::pod_ip;

pub(super) const NS: &str = "parity";

fn pod(name: &str, app: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: "{name}", namespace: "{NS}", labels: {{app: "{app}"}}}}
spec:
  nodeName: {node}
  containers:
    - name: echo
      image: mesh-echo
      ports:
        - {{name: http, containerPort: 8080, protocol: TCP}}
        - {{name: admin, containerPort: 9090, protocol: TCP}}
"#
    )
}

/// The pods, Ready; their addresses by name.
pub(super) fn model(lab: &Lab) -> std::collections::BTreeMap<&'static str, String> {
    lab.apply(
        "lab-c1",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{NS}\"}}\n"),
    );
    let pods = [
        ("server", "server", "c1-n1"),
        ("other", "other", "c1-n1"),
        ("client", "client", "c1-n2"),
    ];
    for (name, app, node) in pods {
        lab.apply("lab-c1", &pod(name, app, node));
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, _, _) in pods {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = lab.kubectl(
                "lab-c1",
                &[
                    "-n",
                    NS,
                    "get",
                    "pod",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            let ip = pod_ip(lab, "lab-c1", NS, name);
            if ready.trim() == "True" && !ip.trim().is_empty() {
                out.insert(name, ip.trim().to_string());
                break;
            }
            assert!(Instant::now() < deadline, "pod {NS}/{name} not Ready");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    out
}

/// Which of `targets` answer TCP from inside the network namespace `ns`.
pub(super) fn answers(lab: &Lab, ns: &str, targets: &[String]) -> Vec<bool> {
    let mut args = vec!["probe", "--timeout-ms", "1000"];
    args.extend(targets.iter().map(String::as_str));
    let out = lab.exec(ns, &mesh_e2e::bin("mesh-echo"), &args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe from {ns}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `(who, target, expected)`, probed until all hold or 15 s pass.
fn expect_reach(lab: &Lab, what: &str, cases: &[(String, String, bool)]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: Vec<bool> = cases
            .iter()
            .map(|(from, to, _)| answers(lab, from, std::slice::from_ref(to))[0])
            .collect();
        let wrong: Vec<_> = cases
            .iter()
            .zip(&got)
            .filter(|((_, _, want), got)| want != *got)
            .map(|((from, to, want), _)| format!("{from} → {to}: expected {want}"))
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {wrong:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn cleanup(lab: &Lab) {
    for kind in ["networkpolicy", "mnp", "cnp"] {
        lab.kubectl("lab-c1", &["-n", NS, "delete", kind, "--all"]);
    }
}

/// Default deny for the namespace plus an allow from `app=client` on the
/// named port `http`: the client gets in on 8080 and not on 9090, `other`
/// is refused, and a probe from the server's node (the kubelet's path) is
/// admitted.
pub(super) fn a_default_deny_network_policy_admits_the_client_on_a_named_port_and_kubelet_probes(
    lab: &Lab,
) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    let other = lab.pod_ns("c1", NS, "other");
    let node = lab.node_ns("c1-n1");
    let http = format!("{}:8080", ip["server"]);
    let admin = format!("{}:9090", ip["server"]);
    let all_open = [
        (client.clone(), http.clone(), true),
        (client.clone(), admin.clone(), true),
        (other.clone(), http.clone(), true),
        (node.clone(), http.clone(), true),
    ];
    expect_reach(
        lab,
        "before any policy everyone reaches the server",
        &all_open,
    );
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: default-deny, namespace: {NS}}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: client-on-http, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
    - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
      ports: [{{port: http}}]
"#
        ),
    );
    expect_reach(
        lab,
        "under default deny plus the named-port allow",
        &[
            (client.clone(), http.clone(), true),
            (client.clone(), admin.clone(), false),
            (other.clone(), http.clone(), false),
            (node.clone(), http.clone(), true),
            (node.clone(), admin.clone(), true),
        ],
    );
    cleanup(lab);
    expect_reach(
        lab,
        "with the policies deleted everything is open",
        &all_open,
    );
}

/// An allow-all ingress plus an `ingressDeny` for `app=other`: `other` is
/// refused (counted as `policy_denied`, and `meshctl explain` names the
/// deny rule), the client still gets in.
pub(super) fn an_ingress_deny_refuses_one_identity_under_an_allow_all(lab: &Lab) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    let other = lab.pod_ns("c1", NS, "other");
    let http = format!("{}:8080", ip["server"]);
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: allow-all, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress: [{{fromEntities: [all]}}]
---
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: not-other, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingressDeny:
    - fromEndpoints: [{{matchLabels: {{app: other}}}}]
"#
        ),
    );
    expect_reach(
        lab,
        "the deny wins over the allow-all for other only",
        &[
            (client.clone(), http.clone(), true),
            (other.clone(), http.clone(), false),
        ],
    );
    let before = datapath_packets(lab, "c1-n1", "policy_denied");
    for _ in 0..3 {
        assert_eq!(answers(lab, &other, std::slice::from_ref(&http)), [false]);
    }
    let after = datapath_packets(lab, "c1-n1", "policy_denied");
    assert!(
        after > before,
        "refused packets are counted as policy_denied on c1-n1 ({before} → {after})"
    );
    use meshctl::report::{ExplainReport, HopStatus};
    let (ex, _) = meshctl_typed::<ExplainReport>(
        lab,
        &[
            "explain",
            "--context",
            "lab-c1",
            &format!("{NS}/other"),
            &format!("{NS}/server:8080"),
        ],
    );
    let hop = ex
        .hops
        .iter()
        .chain(ex.backends.iter().flat_map(|b| b.hops.iter()))
        .find(|h| h.step == "ingress policy")
        .cloned()
        .unwrap_or_else(|| panic!("no ingress policy hop: {ex:#?}"));
    assert_eq!(hop.status, HopStatus::Fail, "{hop:#?}");
    assert!(
        hop.detail.contains("policy_denied")
            && hop
                .detail
                .contains(&format!("MeshNetworkPolicy {NS}/not-other ingressDeny[0]")),
        "explain names the deny rule: {hop:#?}"
    );
    cleanup(lab);
}

/// A MeshNetworkPolicy with `toFQDNs` (not enforced before the L7/DNS
/// work): its status is `Valid=false` naming the field, and the pod it
/// selects reaches nothing it did not reach before (a silently widened
/// policy would have opened 8080 to every peer).
pub(super) fn a_policy_with_to_fqdns_is_refused_and_widens_nothing(lab: &Lab) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    let to_server = format!("{}:8080", ip["server"]);
    let to_other = format!("{}:8080", ip["other"]);
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: client-to-server, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toEndpoints: [{{matchLabels: {{app: server}}}}]
      toPorts: [{{ports: [{{port: "8080", protocol: TCP}}]}}]
"#
        ),
    );
    let before = [
        (client.clone(), to_server.clone(), true),
        (client.clone(), to_other.clone(), false),
    ];
    expect_reach(lab, "the client reaches the server only", &before);
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: client-to-api, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toFQDNs: [{{matchName: api.example.com}}]
      toPorts: [{{ports: [{{port: "8080", protocol: TCP}}]}}]
"#
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = lab.kubectl(
            "lab-c1",
            &[
                "-n",
                NS,
                "get",
                "mnp",
                "client-to-api",
                "-o",
                "jsonpath={.status.valid} {.status.message}",
            ],
        );
        if s.starts_with("false ") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the policy is not marked invalid: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        status.contains("egress[0].toFQDNs"),
        "the status names the field: {status}"
    );
    // Kept as written: nothing pruned on the way in.
    let kept = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            NS,
            "get",
            "mnp",
            "client-to-api",
            "-o",
            "jsonpath={.spec.egress[0].toFQDNs[0].matchName}",
        ],
    );
    assert_eq!(kept.trim(), "api.example.com");
    // Probed twice over a few seconds: the refusal never opens anything.
    for _ in 0..2 {
        expect_reach(lab, "the refused policy widens nothing", &before);
        std::thread::sleep(Duration::from_secs(2));
    }
    cleanup(lab);
}

/// A CiliumNetworkPolicy as Cilium's documentation writes it (`cilium.io/v2`,
/// `k8s:`-prefixed keys, `specs` with two rules) is enforced unchanged, and
/// its status gets the agents' verdict.
pub(super) fn a_cilium_network_policy_applies_as_written(lab: &Lab) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    let other = lab.pod_ns("c1", NS, "other");
    let http = format!("{}:8080", ip["server"]);
    let admin = format!("{}:9090", ip["server"]);
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l4-rule"
  namespace: {NS}
specs:
  - endpointSelector:
      matchLabels:
        app: server
    ingress:
    - fromEndpoints:
      - matchLabels:
          "k8s:app": client
          "k8s:io.kubernetes.pod.namespace": {NS}
      toPorts:
      - ports:
        - port: "8080"
          protocol: TCP
  - endpointSelector:
      matchLabels:
        app: server
    ingress:
    - fromEndpoints:
      - matchLabels:
          "k8s:app": other
      toPorts:
      - ports:
        - port: "9090"
          protocol: TCP
"#
        ),
    );
    expect_reach(
        lab,
        "the Cilium policy's two rules, enforced",
        &[
            (client.clone(), http.clone(), true),
            (client.clone(), admin.clone(), false),
            (other.clone(), http.clone(), false),
            (other.clone(), admin.clone(), true),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = lab.kubectl(
            "lab-c1",
            &[
                "-n",
                NS,
                "get",
                "cnp",
                "l4-rule",
                "-o",
                "jsonpath={.status.valid}",
            ],
        );
        if s.trim() == "true" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CNP's status is not valid: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    cleanup(lab);
}

/// An `ipBlock` with an `except`, probed from the lab's outside host (in no
/// cluster) from each of its two addresses: the one inside the block is
/// admitted, the excepted one refused; a pod, whose address is not what
/// an ipBlock selects, is refused too.
pub(super) fn an_ip_block_with_except_admits_the_outside_host_but_not_the_excepted_address(
    lab: &Lab,
) {
    use mesh_lab::plan::OUTSIDE_IPS;
    let ip = model(lab);
    let outside = lab.outside_ns();
    let client = lab.pod_ns("c1", NS, "client");
    let http = format!("{}:8080", ip["server"]);
    let [inside, excepted] = OUTSIDE_IPS;
    let from = |source: std::net::Ipv4Addr| -> bool {
        let out = lab.exec(
            &outside,
            &mesh_e2e::bin("mesh-echo"),
            &[
                "probe",
                "--timeout-ms",
                "1000",
                "--source",
                &source.to_string(),
                &http,
            ],
        );
        let answered: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe from {source}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        answered[0]
    };
    let expect = |what: &str, want: [bool; 3]| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = [
                from(inside),
                from(excepted),
                answers(lab, &client, std::slice::from_ref(&http))[0],
            ];
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: (outside {inside}, outside {excepted}, client pod) reached {got:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    expect(
        "without a policy the outside host reaches the pod",
        [true, true, true],
    );
    // The lab reports the outside host, whose echo server pods reach.
    let status: serde_json::Value =
        serde_json::from_str(&lab.ok(&["status", "--json"])).expect("status JSON");
    assert_eq!(status["external"]["ip"], inside.to_string(), "{status}");
    let echo = format!("{inside}:{}", status["external"]["echo_port"]);
    assert_eq!(
        answers(lab, &client, std::slice::from_ref(&echo)),
        [true],
        "a pod reaches the outside host's echo server"
    );
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-the-underlay, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
    - from: [{{ipBlock: {{cidr: 192.168.77.0/24, except: ["{excepted}/32"]}}}}]
      ports: [{{port: 8080, protocol: TCP}}]
"#
        ),
    );
    expect("under the ipBlock with its except", [true, false, false]);
    cleanup(lab);
    expect("with the policy deleted", [true, true, true]);
}

/// `toEntities: [kube-apiserver]` admits the API server's address (the
/// `kubernetes` Service's endpoint, in the cluster's control namespace)
/// and nothing else; `world` does not cover it.
pub(super) fn the_kube_apiserver_entity_is_the_api_servers_address(lab: &Lab) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    let slice = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "default",
            "get",
            "endpointslice",
            "kubernetes",
            "-o",
            "jsonpath={.endpoints[0].addresses[0]}:{.ports[0].port}",
        ],
    );
    let api = slice.trim().to_string();
    let connects = |target: &str| -> bool {
        let out = lab.exec(
            &client,
            &mesh_e2e::bin("mesh-echo"),
            &["probe", "--connect", "--timeout-ms", "1000", target],
        );
        let v: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe {target}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        v[0]
    };
    let server = format!("{}:8080", ip["server"]);
    let expect = |what: &str, want: [bool; 2]| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = [connects(&api), connects(&server)];
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: (API server {api}, server pod) reached {got:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    expect("without a policy", [true, true]);
    let policy = |entity: &str| {
        format!(
            r#"
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: client-to-api, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toEntities: [{entity}]
"#
        )
    };
    lab.apply("lab-c1", &policy("kube-apiserver"));
    expect("toEntities kube-apiserver", [true, false]);
    lab.apply("lab-c1", &policy("world"));
    expect(
        "toEntities world does not cover the API server",
        [false, false],
    );
    cleanup(lab);
    expect("with the policy deleted", [true, true]);
}

/// `toServices` naming a Service with a selector admits the pods it
/// selects and no other.
pub(super) fn to_services_admits_the_pods_of_the_named_service(lab: &Lab) {
    let ip = model(lab);
    let client = lab.pod_ns("c1", NS, "client");
    lab.apply(
        "lab-c1",
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: meshwork.io/v1
kind: MeshNetworkPolicy
metadata: {{name: client-to-server-svc, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
    - toServices: [{{k8sService: {{serviceName: server}}}}]
"#
        ),
    );
    expect_reach(
        lab,
        "toServices: the Service's pods only",
        &[
            (client.clone(), format!("{}:8080", ip["server"]), true),
            (client.clone(), format!("{}:8080", ip["other"]), false),
        ],
    );
    cleanup(lab);
    lab.kubectl("lab-c1", &["-n", NS, "delete", "service", "server"]);
}
