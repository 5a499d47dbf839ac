//! One pod's SYN flood cannot take another pod's connections: unanswered
//! flows live in their own conntrack table, so an established stream
//! through a service keeps its backend and its reverse NAT.

use mesh_e2e::Lab;

use super::helpers::eventually;
use super::node_agent::agent_metric;
use super::requests::reaches;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ct-web, namespace: shop}
spec:
  selector: {app: ct-web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#;

/// Entries of datapath map `map` on c1-n1, from its agent's `/metrics`.
fn ct_entries(lab: &Lab, map: &str) -> u64 {
    agent_metric(
        lab,
        "c1",
        "c1-n1",
        &format!("meshwork_datapath_map_entries{{map=\"{map}\"}}"),
    )
}

/// Pod shop/ct-flooder on c1-n1 sends 300,000 bare SYNs (raw socket, its
/// own address, every source port) to shop/ct-web's ClusterIP (two
/// backends on c1-n2) while pod
/// shop/ct-streamer on the same node keeps a TCP stream through the same
/// service and opens a new connection every 200 ms: the stream does not
/// break, no new connection fails, and the flood really crossed the
/// datapath but stays in the table of unconfirmed flows: each SYN is
/// answered by a backend (SYN-ACK) and by the flooder's kernel (RST), and
/// no handshake completes, so the table of established flows does not
/// grow by more than the stream's own connections (it grew by 188,181 of
/// its 262,144 entries when a SYN-ACK alone confirmed a flow).
pub(super) fn a_syn_flood_from_one_pod_breaks_no_other_pods_connection_through_a_service(
    lab: &Lab,
) {
    for (node, name, app) in [
        ("c1-n1", "ct-streamer", "ct-streamer"),
        ("c1-n1", "ct-flooder", "ct-flooder"),
        ("c1-n2", "ct-web-1", "ct-web"),
        ("c1-n2", "ct-web-2", "ct-web"),
    ] {
        lab.ok(&[
            "pod",
            "add",
            "--cluster=c1",
            &format!("--node={node}"),
            "--namespace=shop",
            &format!("--name={name}"),
            &format!("--label=app={app}"),
        ]);
    }
    lab.apply("lab-c1", SERVICE);
    let vip = lab.kubectl(
        "lab-c1",
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "ct-web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let target = format!("{}:80", vip.trim());
    eventually("ct-streamer reaches shop/ct-web", || {
        reaches(lab, "c1", "shop", "ct-streamer", &target)
    });
    let before = ct_entries(lab, "mw_ct");
    let (stream, flood, during) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            lab.exec(
                &lab.pod_ns("c1", "shop", "ct-streamer"),
                &mesh_e2e::bin("mesh-echo"),
                &["stream", &target, "--seconds", "15", "--every-ms", "200"],
            )
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        let flood = lab.exec(
            &lab.pod_ns("c1", "shop", "ct-flooder"),
            &mesh_e2e::bin("mesh-echo"),
            &["syn-flood", &target, "--count", "300000"],
        );
        let during = (ct_entries(lab, "mw_ct"), ct_entries(lab, "mw_ct_new"));
        (stream.join().expect("stream thread"), flood, during)
    });
    let report = |out: &std::process::Output, what: &str| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what} report: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let (stream, flood) = (report(&stream, "stream"), report(&flood, "flood"));
    eprintln!(
        "SYN flood {flood}; conntrack before {before}, after the flood mw_ct {} / mw_ct_new {}; stream beside it {stream}",
        during.0, during.1
    );
    let sent = flood["sent"].as_u64().expect("sent");
    assert!(sent >= 290_000, "the flood sent only {sent} SYNs: {flood}");
    assert!(
        during.1 >= 10_000,
        "the flood did not reach the datapath: mw_ct_new {} after {sent} SYNs",
        during.1
    );
    assert!(
        during.0 <= before + 1_000,
        "the flood filled the established table: mw_ct {before} → {}",
        during.0
    );
    assert_eq!(stream["broken"], false, "the stream broke: {stream}");
    assert_eq!(
        stream["new_failures"], 0,
        "new connections failed: {stream}"
    );
}
