//! Policy at scale: POLICIES policies (default 1,000) over PODS pods (default
//! 10,000) in NAMESPACES namespaces: how long the compiler takes, how many
//! identities and policy map entries result, and what one policy change
//! costs on one node (recompile, re-evaluate its endpoints, write the
//! changed ones into a real kernel policy map), printed beside the size of
//! the maps written. Needs root (it loads the datapath into a bpffs
//! directory of its own, removed at the end).
//!
//! `cargo run --release -p node-agent --example policy_bench -- [PODS]
//! [POLICIES] [NAMESPACES] [PODS_PER_NODE]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_api::{ClusterId, ClusterName, Identity, LabelSet};
use node_agent::bpf_datapath::policy_entries;
use node_agent::datapath::EndpointPolicy;
use node_agent::policy::compile::{CompileInputs, CompiledPolicies, PolicySource, compile};
use node_agent::policy::crd::{MeshClusterwideNetworkPolicySpec, MeshNetworkPolicySpec};

/// Bytes of one policy map entry (key 12 + value 8), before the kernel's
/// per-element overhead.
const ENTRY_BYTES: usize = 20;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("argument {i}: {a:?} is not a number"))
        })
        .unwrap_or(default)
}

/// Ten apps per namespace, three versions each: identities are
/// (namespace, app, version); pods are spread over them round-robin.
fn identities(
    cluster: &ClusterName,
    pods: usize,
    namespaces: usize,
) -> (BTreeMap<Identity, LabelSet>, Vec<Identity>) {
    let mut ids = BTreeMap::new();
    let mut by_labels = BTreeMap::new();
    let mut pod_identity = Vec::with_capacity(pods);
    let c = ClusterId::new(1).expect("cluster id");
    for i in 0..pods {
        let ns = format!("ns-{}", i % namespaces);
        let app = format!("app-{}", (i / namespaces) % 10);
        let version = format!("v{}", (i / (namespaces * 10)) % 3);
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), app),
            ("version".to_string(), version),
            ("tier".to_string(), format!("tier-{}", i % 4)),
        ]
        .into();
        let set = LabelSet::for_pod(cluster, &ns, &labels).expect("labels");
        let next = by_labels.len();
        let id = *by_labels.entry(set.clone()).or_insert_with(|| {
            Identity::new(
                c,
                256 + u16::try_from(next).expect("fewer than 65,280 identities"),
            )
            .expect("identity")
        });
        ids.insert(id, set);
        pod_identity.push(id);
    }
    (ids, pod_identity)
}

/// `n` policies: per namespace, app-k admits app-(k-1) on port 8000+k (and
/// a CIDR set with an exception on egress every third one); one policy in
/// ten is cluster-wide (a tier admits the cluster on a port range).
fn policies(n: usize, namespaces: usize, port_shift: u16) -> Vec<PolicySource> {
    (0..n)
        .map(|i| {
            if i % 10 == 9 {
                let spec: MeshClusterwideNetworkPolicySpec = serde_json::from_value(serde_json::json!({
                    "endpointSelector": {"matchLabels": {"tier": format!("tier-{}", i % 4)}},
                    "ingress": [{"fromEntities": ["cluster"],
                                 "toPorts": [{"ports": [{"port": "9000", "endPort": 9003, "protocol": "TCP"}]}]}],
                }))
                .expect("spec");
                PolicySource::clusterwide(&format!("cw-{i}"), &spec)
            } else {
                let k = i % 10;
                let mut egress = Vec::new();
                if i % 3 == 0 {
                    egress.push(serde_json::json!({
                        "toCIDRSet": [{"cidr": format!("10.{}.0.0/16", i % 200), "except": [format!("10.{}.1.0/24", i % 200)]}],
                    }));
                }
                let spec: MeshNetworkPolicySpec = serde_json::from_value(serde_json::json!({
                    "endpointSelector": {"matchLabels": {"app": format!("app-{k}")}},
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": format!("app-{}", (k + 9) % 10)}}],
                                 "toPorts": [{"ports": [{"port": (8000 + k as u16 + port_shift).to_string(), "protocol": "TCP"}]}]}],
                    "egress": egress,
                    "ingressDeny": if i % 7 == 0 { serde_json::json!([{"fromEndpoints": [{"matchLabels": {"version": "v2"}}]}]) } else { serde_json::json!([]) },
                }))
                .expect("spec");
                PolicySource::namespaced(&format!("ns-{}", (i / 10) % namespaces), &format!("p-{i}"), &spec)
            }
        })
        .collect()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let pods = arg(1, 10_000);
    let n_policies = arg(2, 1_000);
    let namespaces = arg(3, 100);
    let per_node = arg(4, 110).min(pods);
    let cluster: ClusterName = "c1".parse().expect("cluster");
    let (ids, pod_identity) = identities(&cluster, pods, namespaces);
    let no_ns = BTreeMap::new();
    let no_ports = BTreeMap::new();
    let inputs = CompileInputs {
        cluster: &cluster,
        identities: &ids,
        namespaces: &no_ns,
        allow_localhost: true,
        named_ports: &no_ports,
        services: &Default::default(),
        apiserver_on_this_node: false,
        apiserver_on_remote_node: false,
    };
    let set = policies(n_policies, namespaces, 0);
    let (compiled, compile_time) = timed(|| compile(&set, &inputs));
    assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
    let evaluate = |c: &CompiledPolicies| -> BTreeMap<Identity, EndpointPolicy> {
        ids.iter()
            .map(|(id, l)| (*id, c.endpoint_policy(l)))
            .collect()
    };
    let (by_identity, eval_time) = timed(|| evaluate(&compiled));
    let entries = |p: &EndpointPolicy| p.allow.len() + p.deny.len();
    let cluster_entries: usize = pod_identity
        .iter()
        .map(|id| entries(&by_identity[id]))
        .sum();
    // One node: `per_node` pods drawn evenly at random (a fixed-seed LCG;
    // a stride would fall in step with the label patterns).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < per_node {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        chosen.insert((seed >> 33) as usize % pods);
    }
    let node_pods: Vec<(u32, Identity)> = chosen
        .iter()
        .enumerate()
        .map(|(i, pod)| (1000 + i as u32, pod_identity[*pod]))
        .collect();
    let node_entries: usize = node_pods
        .iter()
        .map(|(_, id)| entries(&by_identity[id]))
        .sum();
    let max_endpoint = node_pods
        .iter()
        .map(|(_, id)| entries(&by_identity[id]))
        .max()
        .unwrap_or(0);

    let capacity = 131_072;
    // The node's endpoints into a real policy map.
    let dir = mesh_testbed::BpfDir::new();
    let dp = mesh_bpf::Datapath::load(dir.path()).expect("load the datapath");
    let mut map = dp.policy().expect("policy map");
    // How many endpoints could not be written (the map is full).
    let write = |map: &mut mesh_bpf::PolicyMap, endpoints: &[(u32, &EndpointPolicy)]| -> usize {
        let mut failed = 0;
        for (ifindex, p) in endpoints {
            let e = policy_entries(*ifindex, p, "bench endpoint").expect("entries");
            let synced = map.sync_endpoint(
                *ifindex,
                mesh_bpf::EndpointPolicy {
                    identity: 1,
                    ingress_enforced: p.ingress_enforced,
                    egress_enforced: p.egress_enforced,
                },
                &e,
            );
            match synced {
                Ok(_) => {}
                Err(mesh_bpf::Error::MapFull { .. }) => failed += 1,
                Err(e) => panic!("sync endpoint {ifindex}: {e}"),
            }
        }
        failed
    };
    let initial: Vec<(u32, &EndpointPolicy)> = node_pods
        .iter()
        .map(|(ifindex, id)| (*ifindex, &by_identity[id]))
        .collect();
    if node_entries > capacity {
        println!(
            "  the node's {node_entries} entries do not fit the policy map ({capacity}): writes fail and the endpoints that do not fit stay closed"
        );
    }
    let (initial_failed, initial_write) = timed(|| write(&mut map, &initial));

    // One change: the port of a namespaced policy selecting one of the
    // node's pods moves (policy i selects app-(i % 10) in ns-(i / 10)).
    let target = node_pods
        .iter()
        .find_map(|(_, id)| {
            let l = &ids[id];
            let ns: usize = l
                .get(mesh_api::labels::NAMESPACE_LABEL)?
                .strip_prefix("ns-")?
                .parse()
                .ok()?;
            let app: usize = l.get("app")?.strip_prefix("app-")?.parse().ok()?;
            let i = ns * 10 + app;
            (app != 9 && i < n_policies).then_some(i)
        })
        .unwrap_or(0);
    let mut changed = set.clone();
    changed[target] = policies(n_policies, namespaces, 100).swap_remove(target);
    let (recompiled, recompile_time) = timed(|| compile(&changed, &inputs));
    let node_identities: std::collections::BTreeSet<Identity> =
        node_pods.iter().map(|(_, id)| *id).collect();
    let (after, reeval_time) = timed(|| {
        node_identities
            .iter()
            .map(|id| (*id, recompiled.endpoint_policy(&ids[id])))
            .collect::<BTreeMap<_, _>>()
    });
    let touched: Vec<(u32, &EndpointPolicy)> = node_pods
        .iter()
        .filter(|(_, id)| after[id] != by_identity[id])
        .map(|(ifindex, id)| (*ifindex, &after[id]))
        .collect();
    let (change_failed, change_write) = timed(|| write(&mut map, &touched));
    let change_total = recompile_time + reeval_time + change_write;

    println!(
        "policy compile: {n_policies} policies over {pods} pods ({} identities, {namespaces} namespaces, {} CIDR identities)",
        ids.len(),
        compiled.cidr_identities.len()
    );
    println!(
        "  compile {:.1} ms, evaluate every identity {:.1} ms",
        ms(compile_time),
        ms(eval_time)
    );
    println!(
        "  map entries: whole cluster {cluster_entries} ({:.1} MiB), one node of {per_node} pods {node_entries} ({:.2} MiB, the map holds 131,072), largest endpoint {max_endpoint}",
        (cluster_entries * ENTRY_BYTES) as f64 / (1 << 20) as f64,
        (node_entries * ENTRY_BYTES) as f64 / (1 << 20) as f64,
    );
    println!(
        "  one policy changed: recompile {:.1} ms + re-evaluate the node's endpoints {:.1} ms + write {} changed endpoints {:.1} ms = {:.1} ms",
        ms(recompile_time),
        ms(reeval_time),
        touched.len(),
        ms(change_write),
        ms(change_total)
    );
    println!(
        "  beside it: writing the node's {per_node} endpoints from empty {:.1} ms ({initial_failed} did not fit; {change_failed} after the change)",
        ms(initial_write)
    );
    println!(
        "BENCH policy_compile policies={n_policies} pods={pods} identities={} compile_ms={:.1} evaluate_ms={:.1}",
        ids.len(),
        ms(compile_time),
        ms(eval_time)
    );
    println!(
        "BENCH policy_map_size pods={pods} cluster_entries={cluster_entries} node_pods={per_node} node_entries={node_entries} node_bytes={} max_endpoint_entries={max_endpoint}",
        node_entries * ENTRY_BYTES
    );
    println!(
        "BENCH policy_change recompile_ms={:.1} reevaluate_ms={:.1} write_ms={:.1} endpoints_written={} total_ms={:.1} initial_write_ms={:.1} endpoints_not_fitting={initial_failed}",
        ms(recompile_time),
        ms(reeval_time),
        ms(change_write),
        touched.len(),
        ms(change_total),
        ms(initial_write)
    );
}
