//! The host firewall: a MeshClusterwideNetworkPolicy with `nodeSelector`
//! admitting only `parity/client` to an SSH-like listener (port 2222) in
//! node c1-n1's own namespace. In audit mode the would-be drops pass and
//! are reported as flows with verdict `audit`; enforced, the local pod
//! `other` and the outside host are refused, the client still gets in, and
//! the node keeps reaching its API server (its agent still sees a policy
//! deleted).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_e2e::Lab;

use super::helpers::set_meshwork_config;
use super::node_agent::{agent_get, wait_agent};
use super::policy_parity::{NS, answers, model};

const NODE: &str = "c1-n1";
const PORT: u16 = 2222;

/// A listener in the node's own namespace, stopped on drop.
struct HostListener(Child);

impl HostListener {
    fn start(lab: &Lab) -> HostListener {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.node_ns(NODE)])
            .arg(mesh_e2e::bin("mesh-echo"))
            .args([
                "serve",
                "--port",
                &PORT.to_string(),
                "--pod",
                "host/c1-n1",
                "--node",
                NODE,
                "--cluster",
                "c1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node's listener");
        HostListener(child)
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_ip(lab: &Lab) -> String {
    lab.kubectl(
        "lab-c1",
        &[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    )
    .trim()
    .to_string()
}

/// Sets `policy-audit-mode`, waits for the config dir to carry it, and
/// starts c1-n1's agent again with it (the flag is read at start-up).
fn restart_agent_with_audit(lab: &Lab, audit: bool) {
    set_meshwork_config(lab, "c1", "policy-audit-mode", &audit.to_string());
    let file = lab
        .dir
        .join("c1")
        .join("config")
        .join("meshwork-config")
        .join("policy-audit-mode");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == audit.to_string()) {
        assert!(
            Instant::now() < deadline,
            "{} never said {audit}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.ok(&["kill", &format!("{NODE}/node-agent")]);
    lab.ok(&["restart", &format!("{NODE}/node-agent")]);
    // Its API answers again.
    let sock = lab
        .dir
        .join("c1")
        .join("nodes")
        .join(NODE)
        .join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "{NODE}'s agent never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reached(lab: &Lab, ns: &str, target: &str, source: Option<&str>) -> bool {
    let mut args = vec!["probe", "--timeout-ms", "1000"];
    if let Some(s) = source {
        args.extend(["--source", s]);
    }
    args.push(target);
    let out = lab.exec(ns, &mesh_e2e::bin("mesh-echo"), &args);
    let answered: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe from {ns}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    answered[0]
}

/// (client pod on c1-n2, local pod `other`, the outside host) → the node's
/// port, until it is `want` or 20 s pass.
fn expect(lab: &Lab, what: &str, target: &str, want: [bool; 3]) {
    let client = lab.pod_ns("c1", NS, "client");
    let other = lab.pod_ns("c1", NS, "other");
    let outside = lab.outside_ns();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = [
            answers(lab, &client, &[target.to_string()])[0],
            answers(lab, &other, &[target.to_string()])[0],
            reached(lab, &outside, target, None),
        ];
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: (client, other, outside host) → {target} reached {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

const POLICY: &str = r#"
apiVersion: meshwork.io/v1
kind: MeshClusterwideNetworkPolicy
metadata: {name: node-ssh}
spec:
  nodeSelector: {matchLabels: {fw: "on"}}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: client, io.kubernetes.pod.namespace: parity}
      toPorts: [{ports: [{port: "2222", protocol: TCP}]}]
"#;

pub(super) fn the_host_firewall_audits_then_enforces_and_keeps_the_api_server(lab: &Lab) {
    model(lab);
    let _listener = HostListener::start(lab);
    let node = node_ip(lab);
    let target = format!("{node}:{PORT}");
    expect(lab, "before any host policy", &target, [true, true, true]);

    lab.kubectl("lab-c1", &["label", "node", NODE, "fw=on", "--overwrite"]);
    restart_agent_with_audit(lab, true);
    lab.apply("lab-c1", POLICY);
    wait_agent(lab, "c1", NODE, "the host firewall in audit mode", |st| {
        st["policy"]["host_firewall"]["audit"] == true
    });
    expect(lab, "audit mode drops nothing", &target, [true, true, true]);
    // The agent reads flow events asynchronously: probe again until the
    // audited ones show (a fresh agent may still be starting its reader).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let flows = agent_get(lab, "c1", NODE, "/v1/flows?verdict=audit");
        let audited =
            flows.as_array().into_iter().flatten().any(|f| {
                f["destination"]["port"] == PORT && f["drop_reason"] == "policy_default_deny"
            });
        if audited {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the would-be drops are reported as audited: {flows}"
        );
        let other = lab.pod_ns("c1", NS, "other");
        assert_eq!(
            answers(lab, &other, std::slice::from_ref(&target)),
            [true],
            "audit drops nothing"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    restart_agent_with_audit(lab, false);
    wait_agent(lab, "c1", NODE, "the host firewall enforced", |st| {
        st["policy"]["host_firewall"]["audit"] == false
            && st["policy"]["host_firewall"]["policy"]["ingress_enforced"] == true
    });
    expect(
        lab,
        "enforced: the client only",
        &target,
        [true, false, false],
    );
    // The node still reaches its API server: a new connection from the
    // node answers, and the agent's watch still delivers a change.
    // (Addresses follow the plan's layout, whatever the lab's name.)
    let plan = mesh_lab::plan::LabPlan::new("any", 1, 2, false).expect("plan");
    let api = format!(
        "https://{}:{}/version",
        plan.clusters[0].control_ip,
        mesh_lab::plan::KUBE_API_PORT
    );
    let version = lab.exec(
        &lab.node_ns(NODE),
        std::path::Path::new("curl"),
        &[
            "-sk",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &api,
        ],
    );
    let code = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.status.success() && code != "000",
        "the API server answers the node under its firewall: {version:?}"
    );
    lab.kubectl("lab-c1", &["delete", "mcnp", "node-ssh"]);
    wait_agent(lab, "c1", NODE, "the deleted host policy is gone", |st| {
        st["policy"]["host_firewall"].is_null()
    });
    expect(lab, "with the policy deleted", &target, [true, true, true]);
    lab.kubectl("lab-c1", &["label", "node", NODE, "fw-"]);
}
