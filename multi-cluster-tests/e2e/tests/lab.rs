//! The end-to-end scenarios, against two labs: one of three clusters
//! without encryption (the control plane and the datapath), one of two
//! clusters with WireGuard. Each lab is expensive, so each is one `#[test]`
//! that runs its scenarios in order; the scenarios live in modules by topic:
//! membership (connect, status, idempotence, refusals, a third cluster,
//! disconnect), services, pod traffic, a Deployment backing a global service
//! ([`deployments`]), policy, agent restarts, a lost remote, CA rotation,
//! observability (meshctl observe/explain), egress (masquerade), encryption and encryption changed
//! at runtime. What several scenarios share is in [`helpers`] (the lab's
//! commands), [`requests`] (requests from pods and who answers them) and
//! [`node_agent`] (what a node's agent reports).
//!
//! Each scenario asserts on what the clusters report through the same
//! commands a person uses (meshctl, kubectl, mesh-lab), never on logs.

use mesh_e2e::{Lab, run_scenarios};

#[path = "lab/agent_restart.rs"]
mod agent_restart;
#[path = "lab/ca_rotation.rs"]
mod ca_rotation;
#[path = "lab/deployments.rs"]
mod deployments;
#[path = "lab/egress.rs"]
mod egress;
#[path = "lab/encryption.rs"]
mod encryption;
#[path = "lab/encryption_runtime.rs"]
mod encryption_runtime;
#[path = "lab/helpers.rs"]
mod helpers;
#[path = "lab/host_firewall.rs"]
mod host_firewall;
#[path = "lab/lost_remote.rs"]
mod lost_remote;
#[path = "lab/membership.rs"]
mod membership;
#[path = "lab/netpol.rs"]
mod netpol;
#[path = "lab/node_agent.rs"]
mod node_agent;
#[path = "lab/observability.rs"]
mod observability;
#[path = "lab/pod_traffic.rs"]
mod pod_traffic;
#[path = "lab/policy.rs"]
mod policy;
#[path = "lab/policy_parity.rs"]
mod policy_parity;
#[path = "lab/renewal.rs"]
mod renewal;
#[path = "lab/requests.rs"]
mod requests;
#[path = "lab/services.rs"]
mod services;
#[path = "lab/syn_flood.rs"]
mod syn_flood;
#[path = "lab/trust_boundary.rs"]
mod trust_boundary;

#[test]
fn control_plane_scenarios_on_one_lab() {
    let lab = Lab::up_with("e2e", 3, 2, false, &["--stale-timeout=20"]);
    run_scenarios(
        &lab,
        &[
            ("connect and status", membership::connect_and_status),
            (
                "connecting again changes nothing",
                membership::connecting_again_changes_nothing,
            ),
            (
                "only global services cross clusters",
                services::only_global_services_cross_clusters,
            ),
            (
                "pod traffic crosses clusters in the clear without encryption",
                pod_traffic::pod_traffic_crosses_clusters_in_the_clear_without_encryption,
            ),
            (
                "a global service is served by both clusters, with affinity",
                services::a_global_service_is_served_by_both_clusters_with_affinity,
            ),
            (
                "a Deployment scales and rolls, and the global service follows",
                deployments::a_deployment_scales_and_rolls_and_the_global_service_follows,
            ),
            (
                "pod to pod on the same node, across nodes and across clusters",
                pod_traffic::pod_to_pod_on_the_same_node_across_nodes_and_across_clusters,
            ),
            (
                "a pod reaches the outside host as its node, and other clusters' pods as itself",
                egress::a_pod_reaches_the_outside_host_as_its_node_and_other_clusters_pods_as_itself,
            ),
            (
                "a NodePort answers on each node's address",
                services::node_port_answers_on_each_node_address,
            ),
            (
                "NodePort traffic policies from the outside host: Cluster through any node, Local only where a backend runs",
                services::node_port_traffic_policies_from_the_outside_host,
            ),
            (
                "LoadBalancer addresses come from the pool, and externalIPs are served",
                services::load_balancer_addresses_come_from_the_pool_and_external_ips_are_served,
            ),
            (
                "a hostPort is served on the pod's node",
                services::a_host_port_is_served_on_the_pods_node,
            ),
            (
                "session affinity ClientIP keeps a client on one pod",
                services::session_affinity_keeps_a_client_on_one_pod,
            ),
            (
                "a SYN flood from one pod breaks no other pod's connection through a service",
                syn_flood::a_syn_flood_from_one_pod_breaks_no_other_pods_connection_through_a_service,
            ),
            (
                "cross-cluster policy admits only the named cluster's pods",
                policy::cross_cluster_policy_admits_only_the_named_clusters_pods,
            ),
            (
                "a pod created while the mesh-apiserver is down is enforced from its first packet",
                policy::a_pod_created_while_the_mesh_apiserver_is_down_is_enforced_from_its_first_packet,
            ),
            (
                "an agent restarted under traffic loses no connection",
                agent_restart::an_agent_restarted_under_traffic_loses_no_connection,
            ),
            (
                "refusals change nothing",
                membership::refusals_change_nothing,
            ),
            (
                "a lost remote is kept stale, then withdrawn, and resyncs",
                lost_remote::a_lost_remote_is_kept_stale_then_withdrawn_and_resyncs,
            ),
            ("a third cluster joins", membership::a_third_cluster_joins),
            (
                "a Node outside its cluster's pod CIDRs is not exported",
                trust_boundary::a_node_outside_its_clusters_pod_cidrs_is_not_exported,
            ),
            (
                "a remote removed from the config receives nothing more",
                trust_boundary::a_remote_removed_from_the_config_receives_nothing_more,
            ),
            (
                "disconnect withdraws and reconnect works",
                membership::disconnect_withdraws_and_reconnect_works,
            ),
            (
                "CA rotation under cross-cluster traffic",
                ca_rotation::ca_rotation_under_cross_cluster_traffic,
            ),
            (
                "an interrupted CA rotation resumes",
                ca_rotation::an_interrupted_ca_rotation_resumes,
            ),
            (
                "meshctl services, observe and explain show the cross-cluster path",
                observability::meshctl_services_observe_and_explain_show_the_cross_cluster_path,
            ),
        ],
    );
}

#[test]
fn encrypted_datapath_scenarios_on_one_lab() {
    // Every certificate lives 2 minutes: the mesh renews them all while the
    // scenarios run, and one scenario measures it under traffic.
    // A 1400-byte underlay, as on many cloud networks: the MTUs the
    // agents derive from it are checked, and every scenario runs over it.
    let lab = Lab::up_with(
        "enc",
        2,
        2,
        true,
        &["--cert-lifetime=120", "--underlay-mtu=1400"],
    );
    // The scenarios that need only kube contexts, as kind-mesh.sh runs them
    // against real clusters (tests/contexts.rs).
    run_scenarios(
        &lab.contexts(&["lab-c1", "lab-c2"]),
        &mesh_e2e::portable::scenarios(),
    );
    run_scenarios(
        &lab,
        &[
            (
                "encrypted pod traffic is only WireGuard on the wire",
                encryption::encrypted_pod_traffic_is_only_wireguard_on_the_wire,
            ),
            (
                "wg show reads every peer with a handshake",
                encryption::wg_show_reads_every_peer_with_a_handshake,
            ),
            (
                "meshctl status reports WireGuard on every agent",
                encryption::status_reports_wireguard_on_every_agent,
            ),
            (
                "a smaller underlay MTU gives pods the tunnel's, and 10 MB crosses nodes",
                encryption::a_smaller_underlay_mtu_gives_pods_the_tunnels_and_10_mb_cross_nodes,
            ),
            (
                "an encrypted agent restart keeps its key and the stream recovers",
                agent_restart::an_encrypted_agent_restart_keeps_its_key_and_the_stream_recovers,
            ),
            (
                "meshctl encryption status and explain see the WireGuard peers",
                encryption::meshctl_encryption_status_and_explain_see_the_wireguard_peers,
            ),
            (
                "meshctl encryption rotate-key: peers follow, traffic resumes",
                encryption_runtime::meshctl_rotate_key_peers_follow_and_traffic_resumes,
            ),
            (
                "strict mode drops what would leave unencrypted",
                encryption_runtime::strict_mode_drops_what_would_leave_unencrypted,
            ),
            (
                "encryption toggles off and on at runtime",
                encryption_runtime::encryption_toggles_off_and_on_at_runtime,
            ),
            (
                "WireGuard key rotation under traffic",
                encryption_runtime::wireguard_key_rotation_under_traffic,
            ),
            (
                "certificates renew under cross-cluster traffic",
                renewal::certificates_renew_under_cross_cluster_traffic,
            ),
        ],
    );
}

#[test]
fn network_policy_scenarios_on_one_lab() {
    let lab = Lab::up_with("np", 1, 2, false, &["--set=compat.ciliumPolicies=true"]);
    run_scenarios(
        &lab,
        &[
            (
                "a default-deny NetworkPolicy admits the client on a named port and kubelet probes",
                policy_parity::a_default_deny_network_policy_admits_the_client_on_a_named_port_and_kubelet_probes,
            ),
            (
                "an ingressDeny refuses one identity under an allow-all",
                policy_parity::an_ingress_deny_refuses_one_identity_under_an_allow_all,
            ),
            (
                "a policy with toFQDNs is refused and widens nothing",
                policy_parity::a_policy_with_to_fqdns_is_refused_and_widens_nothing,
            ),
            (
                "an ipBlock with except admits the outside host but not the excepted address",
                policy_parity::an_ip_block_with_except_admits_the_outside_host_but_not_the_excepted_address,
            ),
            (
                "the kube-apiserver entity is the API server's address",
                policy_parity::the_kube_apiserver_entity_is_the_api_servers_address,
            ),
            (
                "toServices admits the pods of the named Service",
                policy_parity::to_services_admits_the_pods_of_the_named_service,
            ),
            (
                "a CiliumNetworkPolicy applies as written",
                policy_parity::a_cilium_network_policy_applies_as_written,
            ),
            (
                "the host firewall audits, then enforces, and keeps the API server",
                host_firewall::the_host_firewall_audits_then_enforces_and_keeps_the_api_server,
            ),
            (
                "the upstream NetworkPolicy cases pass",
                netpol::the_upstream_network_policy_cases_pass,
            ),
        ],
    );
}
