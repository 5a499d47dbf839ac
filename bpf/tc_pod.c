/* Per-packet datapath on the host side of a pod's veth.
 *   from_pod (TC ingress of the host veth): anti-spoofing (the source must
 *     be the endpoint's own address), service DNAT with conntrack,
 *     strict-mode encryption (traffic to another node's pods that would
 *     not leave through the WireGuard device is dropped), egress policy of
 *     the pod, flow event. Only IPv4 and ARP pass; IPv4 fragments are
 *     classified by their first fragment (packet.h).
 *   to_pod (TC egress of the host veth): reverse NAT of replies, ingress
 *     policy of the pod (peer identity from the ipcache), flow event.
 *   from_netdev / to_netdev (TC ingress / egress of the node's own
 *     interface): BPF masquerade (nat.h: pod traffic leaving the cluster
 *     network gets the node's address, its replies get the pod's back,
 *     first of all), NodePort DNAT of traffic from outside to a backend
 *     (one on another node also gets the node's address as its source in
 *     to_netdev, so it answers here), and reverse NAT of its replies as
 *     they leave (rewriting the source to a local address any earlier
 *     would make it a martian);
 *     the host firewall on traffic to and from the node itself (never on
 *     masqueraded traffic: the pod's policy judged it).
 * Host firewall: when a host policy selects the node (its record under
 * POLICY_HOST_ENDPOINT), traffic to the node (from its interface, and from
 * its pods in from_pod) is judged by the host's ingress rules and traffic
 * from the node by its egress rules, with conntrack for both directions;
 * in audit mode what would be dropped is reported (FLOW_VERDICT_AUDIT)
 * and passes. A TCP segment without SYN and without a conntrack entry
 * passes: it cannot open a connection, and it is how connections the node
 * had before its policy arrived (the kubelet's to the API server) keep
 * working. Host egress is judged on the node's interface only (not
 * towards its own pods, whose ingress policy judges it).
 * The endpoint id is the host-side veth's ifindex. */
#include "include/common.h"
#include "include/drop.h"
#include "include/packet.h"
#include "include/lb.h"
#include "include/conntrack.h"
#include "include/ipcache.h"
#include "include/policy.h"
#include "include/flow.h"
#include "include/encrypt.h"
#include "include/nat.h"

char _license[] SEC("license") = "GPL";

static __always_inline void report(struct __sk_buff *skb, const struct pkt *p, __u8 verdict,
				   __u8 obs, __u32 reason, __u32 svc_id, __u32 rule_id)
{
	struct flow_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
		.verdict = verdict,
		.observation = obs,
		.reason = reason,
		.src_identity = ipcache_identity(p->saddr),
		.dst_identity = ipcache_identity(p->daddr),
		.ifindex = skb->ifindex,
		.svc_id = svc_id,
		.rule_id = rule_id,
	};
	flow_emit(&ev);
}

static __always_inline int drop(struct __sk_buff *skb, const struct pkt *p, __u8 obs, __u32 reason,
				__u32 svc_id, __u32 rule_id)
{
	metrics_count(reason, skb->len);
	report(skb, p, FLOW_VERDICT_DROPPED, obs, reason, svc_id, rule_id);
	return TC_ACT_SHOT;
}

static __always_inline int pass(struct __sk_buff *skb)
{
	metrics_count(REASON_FORWARDED, skb->len);
	return TC_ACT_OK;
}

/* The host firewall's decision on a new flow in `dir` with `peer` (host:
 * its record): 0 to go on, else the TC verdict (a drop, reported). Audit
 * mode reports and goes on. */
static __always_inline int host_judge(struct __sk_buff *skb, const struct pkt *p, __u8 obs,
				      const struct policy_endpoint *host, __u32 peer, __u8 dir)
{
	__u32 rule;
	__u32 reason = policy_verdict(POLICY_HOST_ENDPOINT, peer, policy_port(p), p->proto, dir,
				      &rule);

	if (reason == REASON_FORWARDED)
		return 0;
	if (!host->audit)
		return drop(skb, p, obs, reason, 0, rule);
	report(skb, p, FLOW_VERDICT_AUDIT, obs, reason, 0, rule);
	return 0;
}

/* A packet on the node's interface to (ingress) or from (egress) the node
 * itself: tracked both ways, new flows judged by the host firewall. */
static __always_inline int host_flow(struct __sk_buff *skb, struct pkt *p, __u8 dir)
{
	int in = dir == POLICY_DIR_INGRESS;
	struct policy_endpoint *host = host_record();

	if (!host || ipcache_identity(in ? p->daddr : p->saddr) != IDENTITY_HOST)
		return TC_ACT_OK;
	__u8 obs = in ? FLOW_OBS_FROM_NETDEV : FLOW_OBS_TO_NETDEV;
	struct ct_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport,
		.dport = p->dport, .proto = p->proto, .dir = in ? CT_DIR_IN : CT_DIR_OUT,
	};
	struct ct_key rk;
	int first;
	ct_reverse(&k, &rk, in ? CT_DIR_OUT : CT_DIR_IN);
	if (ct_lookup(&k, p->tcp_flags) || ct_lookup_reply(&rk, p->tcp_flags, &first))
		return TC_ACT_OK;
	if (p->proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN))
		return TC_ACT_OK;
	int verdict = host_judge(skb, p, obs, host, ipcache_identity(in ? p->saddr : p->daddr), dir);
	if (verdict)
		return verdict;
	if (ct_create(&k, 0, 0) < 0)
		return drop(skb, p, obs, REASON_CT_MAP_FULL, 0, 0);
	return TC_ACT_OK;
}

/* What a pod's veth does with a packet pkt_parse did not classify: ARP
 * passes (IPv4 needs it); anything else that is not IPv4 (IPv6 while it is
 * unsupported) would skip policy and strict mode, so it is dropped; so is
 * a fragment that cannot be tied to its datagram, and a malformed header. */
static __always_inline int refuse_unparsed(struct __sk_buff *skb, struct pkt *p, __u8 obs, int r)
{
	if (r == PARSE_NOT_IPV4) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_ARP))
			return TC_ACT_OK;
		return drop(skb, p, obs, REASON_UNSUPPORTED_L3_PROTOCOL, 0, 0);
	}
	if (r == PARSE_FRAG_UNKNOWN)
		return drop(skb, p, obs, REASON_FRAGMENT_UNKNOWN, 0, 0);
	return drop(skb, p, obs, REASON_INVALID_PACKET, 0, 0);
}

/* The first reply `p` of a service flow (before its reverse NAT) answers
 * the pre-DNAT entry that chose its backend too, so once established the
 * choice outlives a flood. */
static __always_inline void ct_confirm_service(const struct pkt *p, const struct lb_revnat *rn)
{
	struct ct_key sk = {
		.saddr = p->daddr, .daddr = rn->addr, .sport = p->dport,
		.dport = rn->port, .proto = p->proto, .dir = CT_DIR_SVC,
	};
	int first;
	struct ct_val *v = bpf_map_lookup_elem(&mw_ct_new, &sk);
	ct_answered(&sk, v, &first);
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u32 endpoint = skb->ifindex;
	__u32 svc_id = 0, reason = 0, rule = 0;
	int r = pkt_parse(skb, &p);

	if (r != PARSE_OK)
		return refuse_unparsed(skb, &p, FLOW_OBS_FROM_POD, r);

	/* A pod speaks only as itself: policy elsewhere trusts the source
	 * address (ipcache), so a forged one would borrow another pod's
	 * identity. A veth with no endpoint record cannot prove anything. */
	struct policy_endpoint *self = bpf_map_lookup_elem(&mw_endpoints, &endpoint);
	if (!self || !self->ipv4 || self->ipv4 != p.saddr)
		return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_SOURCE_SPOOFED, 0, 0);

	if (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) {
		struct lb_svc_val *svc = lb_lookup_service(p.daddr, p.dport, p.proto);
		if (svc) {
			struct ct_key sk = {
				.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport,
				.dport = p.dport, .proto = p.proto, .dir = CT_DIR_SVC,
			};
			struct ct_val *sv = ct_lookup(&sk, p.tcp_flags);
			struct lb_backend *be = 0;
			__u32 backend_id = 0;

			svc_id = svc->svc_id;
			if (sv) {
				backend_id = sv->backend_id;
				be = lb_lookup_backend(backend_id);
			}
			if (!be) {
				/* New flow, or its backend was removed: choose again. */
				__u32 hash = lb_flow_hash(p.saddr, p.daddr, p.sport, p.dport, p.proto);
				backend_id = lb_select_backend(svc, hash, p.saddr, 0, &reason);
				if (!backend_id)
					return drop(skb, &p, FLOW_OBS_FROM_POD, reason, svc_id, 0);
				be = lb_lookup_backend(backend_id);
				if (!be)
					return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_BACKEND_MISSING, svc_id, 0);
				if (ct_create(&sk, backend_id, svc_id) < 0)
					return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_CT_MAP_FULL, svc_id, 0);
			}
			if (pkt_rewrite(skb, &p, NAT_DST, be->addr, be->port) < 0)
				return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_NAT_FAILED, svc_id, 0);
		}
	}

	/* Before conntrack: an established flow is dropped too once its
	 * route stops leading into the tunnel (after any DNAT: the backend is
	 * the real destination). */
	if (encrypt_violation(skb, &p))
		return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_ENCRYPTION_REQUIRED, svc_id, 0);

	struct ct_key k = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport,
		.dport = p.dport, .proto = p.proto, .dir = CT_DIR_OUT,
	};
	if (ct_lookup(&k, p.tcp_flags))
		return pass(skb);
	struct ct_key rk;
	int first;
	ct_reverse(&k, &rk, CT_DIR_IN);
	if (ct_lookup_reply(&rk, p.tcp_flags, &first))
		return pass(skb); /* reply of a flow opened towards this pod */

	__u32 dst = ipcache_identity(p.daddr);
	reason = policy_verdict(endpoint, dst, policy_port(&p), p.proto, POLICY_DIR_EGRESS, &rule);
	if (reason != REASON_FORWARDED)
		return drop(skb, &p, FLOW_OBS_FROM_POD, reason, svc_id, rule);
	/* To the node itself: the host firewall's ingress rules too. */
	struct policy_endpoint *host = dst == IDENTITY_HOST ? host_record() : 0;
	if (host) {
		int verdict = host_judge(skb, &p, FLOW_OBS_FROM_POD, host, self->identity,
					 POLICY_DIR_INGRESS);
		if (verdict)
			return verdict;
	}
	if (ct_create(&k, 0, svc_id) < 0)
		return drop(skb, &p, FLOW_OBS_FROM_POD, REASON_CT_MAP_FULL, svc_id, rule);
	report(skb, &p, FLOW_VERDICT_FORWARDED, FLOW_OBS_FROM_POD, REASON_FORWARDED, svc_id, rule);
	return pass(skb);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u32 endpoint = skb->ifindex;
	__u32 reason, rule = 0;
	int r = pkt_parse(skb, &p);

	if (r != PARSE_OK)
		return refuse_unparsed(skb, &p, FLOW_OBS_TO_POD, r);

	struct ct_key k = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport,
		.dport = p.dport, .proto = p.proto, .dir = CT_DIR_IN,
	};
	struct ct_key rk;
	ct_reverse(&k, &rk, CT_DIR_OUT);
	int first;
	struct ct_val *out = ct_lookup_reply(&rk, p.tcp_flags, &first);
	if (out) {
		/* Reply of a flow this pod opened; undo the service DNAT. */
		__u32 id = out->rev_nat_id;
		if (id) {
			struct lb_revnat *rn = bpf_map_lookup_elem(&mw_revnat, &id);
			if (rn) {
				if (first)
					ct_confirm_service(&p, rn);
				if (pkt_rewrite(skb, &p, NAT_SRC, rn->addr, rn->port) < 0)
					return drop(skb, &p, FLOW_OBS_TO_POD, REASON_NAT_FAILED, id, 0);
			}
		}
		return pass(skb);
	}
	if (ct_lookup(&k, p.tcp_flags))
		return pass(skb);

	reason = policy_verdict(endpoint, ipcache_identity(p.saddr), policy_port(&p), p.proto,
				POLICY_DIR_INGRESS, &rule);
	if (reason != REASON_FORWARDED)
		return drop(skb, &p, FLOW_OBS_TO_POD, reason, 0, rule);
	if (ct_create(&k, 0, 0) < 0)
		return drop(skb, &p, FLOW_OBS_TO_POD, REASON_CT_MAP_FULL, 0, rule);
	report(skb, &p, FLOW_VERDICT_FORWARDED, FLOW_OBS_TO_POD, REASON_FORWARDED, 0, rule);
	return pass(skb);
}

SEC("classifier")
int from_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u32 reason = 0;
	int r = pkt_parse(skb, &p);

	/* The node's own interface carries everything: never drop what we
	 * cannot classify. */
	if (r != PARSE_OK)
		return TC_ACT_OK;
	__u32 masq = masq_ingress(skb, &p);
	if (masq == 1)
		return pass(skb);
	if (masq)
		return drop(skb, &p, FLOW_OBS_FROM_NETDEV, masq, 0, 0);
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return host_flow(skb, &p, POLICY_DIR_INGRESS);
	struct lb_svc_val *svc = lb_lookup_service(p.daddr, p.dport, p.proto);
	if (!svc)
		return host_flow(skb, &p, POLICY_DIR_INGRESS);

	__u32 svc_id = svc->svc_id;
	struct ct_key sk = {
		.saddr = p.saddr, .daddr = p.daddr, .sport = p.sport,
		.dport = p.dport, .proto = p.proto, .dir = CT_DIR_SVC,
	};
	struct ct_val *sv = ct_lookup(&sk, p.tcp_flags);
	struct lb_backend *be = 0;
	__u32 backend_id = 0;
	if (sv) {
		backend_id = sv->backend_id;
		be = lb_lookup_backend(backend_id);
	}
	if (!be) {
		__u32 hash = lb_flow_hash(p.saddr, p.daddr, p.sport, p.dport, p.proto);
		backend_id = lb_select_backend(svc, hash, p.saddr, 0, &reason);
		if (!backend_id)
			return drop(skb, &p, FLOW_OBS_FROM_NETDEV, reason, svc_id, 0);
		be = lb_lookup_backend(backend_id);
		if (!be)
			return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_BACKEND_MISSING, svc_id, 0);
		if (ct_create(&sk, backend_id, svc_id) < 0)
			return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_CT_MAP_FULL, svc_id, 0);
	}
	struct ct_key nk = {
		.saddr = p.saddr, .daddr = be->addr, .sport = p.sport,
		.dport = be->port, .proto = p.proto, .dir = CT_DIR_NODEPORT,
	};
	if (!ct_lookup(&nk, p.tcp_flags)) {
		/* A backend on another node answers this node only if the flow
		 * leaves with its address (to_netdev SNATs it). */
		int path = nodeport_path(skb, &p, be->addr, be->port);
		if (path == NODEPORT_PATH_NONE)
			return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_NODEPORT_NO_SNAT_PATH,
				    svc_id, 0);
		__u32 flags = path == NODEPORT_PATH_SNAT ? CT_FLAG_NODEPORT_SNAT : 0;
		if (ct_create_flags(&nk, backend_id, svc_id, flags) < 0)
			return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_CT_MAP_FULL, svc_id, 0);
	}
	if (pkt_rewrite(skb, &p, NAT_DST, be->addr, be->port) < 0)
		return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_NAT_FAILED, svc_id, 0);
	return pass(skb);
}

SEC("classifier")
int to_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = pkt_parse(skb, &p);

	if (r != PARSE_OK)
		return TC_ACT_OK;
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
		__u32 masq = masq_egress(skb, &p); /* ICMP echo requests */
		if (masq == 1)
			return pass(skb);
		if (masq)
			return drop(skb, &p, FLOW_OBS_TO_NETDEV, masq, 0, 0);
		return host_flow(skb, &p, POLICY_DIR_EGRESS);
	}
	struct ct_key nk = {
		.saddr = p.daddr, .daddr = p.saddr, .sport = p.dport,
		.dport = p.sport, .proto = p.proto, .dir = CT_DIR_NODEPORT,
	};
	int first;
	struct ct_val *np = ct_lookup_reply(&nk, p.tcp_flags, &first);
	if (!np || !np->rev_nat_id) {
		__u32 masq = nodeport_snat(skb, &p);
		if (!masq)
			masq = masq_egress(skb, &p);
		if (masq == 1)
			return pass(skb);
		if (masq)
			return drop(skb, &p, FLOW_OBS_TO_NETDEV, masq, 0, 0);
		return host_flow(skb, &p, POLICY_DIR_EGRESS);
	}
	__u32 id = np->rev_nat_id;
	struct lb_revnat *rn = bpf_map_lookup_elem(&mw_revnat, &id);
	if (!rn)
		return pass(skb);
	if (first)
		ct_confirm_service(&p, rn);
	if (pkt_rewrite(skb, &p, NAT_SRC, rn->addr, rn->port) < 0)
		return drop(skb, &p, FLOW_OBS_FROM_NETDEV, REASON_NAT_FAILED, id, 0);
	return pass(skb);
}
