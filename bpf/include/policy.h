/* Identity policy: (endpoint, peer identity, port, protocol, direction) ->
 * verdict, plus the per-endpoint "enforced" flag that turns on default deny.
 * Identity 0 / port 0 / proto 0 in a key are wildcards (port 0 with a
 * protocol: every port of that protocol); identity IDENTITY_CLUSTER_PEERS
 * stands for every peer of the endpoint's own cluster. A deny anywhere wins
 * over an allow. Rust twin in src/maps/policy.rs. */
#ifndef MESHWORK_POLICY_H
#define MESHWORK_POLICY_H

#include "common.h"
#include "drop.h"
#include "packet.h"

#define POLICY_DIR_INGRESS 0 /* traffic to the endpoint */
#define POLICY_DIR_EGRESS 1  /* traffic from the endpoint */

#define POLICY_ALLOW 1
#define POLICY_DENY 2

/* The node itself as a policy endpoint (the host firewall): its record
 * and entries are keyed by this instead of a veth's ifindex. */
#define POLICY_HOST_ENDPOINT 0xffffffff

/* An ICMP packet's type stands in the key's port as this + the type, so
 * that type 0 (echo reply) is not the wildcard. */
#define POLICY_ICMP_PORT_BASE 256

struct policy_key {
	__u32 endpoint;  /* host-side ifindex of the pod's veth */
	__u32 identity;  /* peer identity, 0 = any */
	__be16 port;     /* destination port, 0 = any */
	__u8 proto;      /* 0 = any */
	__u8 direction;  /* POLICY_DIR_* */
};
MW_ASSERT_SIZE(struct policy_key, 12);

struct policy_val {
	__u8 action;     /* POLICY_ALLOW / POLICY_DENY */
	__u8 pad[3];
	__u32 rule_id;   /* opaque id of the rule that produced the entry (for explain) */
};
MW_ASSERT_SIZE(struct policy_val, 8);

/* One local endpoint. The datapath reads the enforcement flags; the other
 * fields are the agent's record of the endpoint, kept here so a restarted
 * agent can read its endpoints back from the pinned map. */
struct policy_endpoint {
	__u8 ingress_enforced;
	__u8 egress_enforced;
	__u16 endpoint_id; /* the agent's node-local endpoint id */
	__u32 identity;    /* the endpoint's own identity */
	__be32 ipv4;       /* pod address, 0 unknown */
	__u8 mac[6];       /* pod-side MAC, zero unknown */
	__u8 audit;        /* report what policy would drop, and let it pass */
	__u8 pad;
	char ifname[16];   /* host-side veth name, NUL-padded */
};
MW_ASSERT_SIZE(struct policy_endpoint, 36);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_val);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct policy_endpoint);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_endpoints SEC(".maps");

static __always_inline int policy_probe(struct policy_key *key, int *allowed, __u32 *rule)
{
	struct policy_val *v = bpf_map_lookup_elem(&mw_policy, key);
	if (!v)
		return 0;
	*rule = v->rule_id;
	if (v->action == POLICY_DENY)
		return 1;
	if (v->action == POLICY_ALLOW)
		*allowed = 1;
	return 0;
}

/* The port a packet is judged on: its destination port, or for ICMP
 * POLICY_ICMP_PORT_BASE + its type (0 for a later fragment, which carries
 * no type: only entries for every ICMP type match it; the first fragment's
 * conntrack entry lets the rest of an admitted one through). */
static __always_inline __be16 policy_port(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->is_icmp_head ? bpf_htons(POLICY_ICMP_PORT_BASE + p->icmp_type) : 0;
	return p->dport;
}

/* Whether peer counts as the endpoint's own cluster (identity own): its
 * cluster's label-based identities, and host, remote-node, health, init. */
static __always_inline int peer_in_cluster(__u32 peer, __u32 own)
{
	__u32 cluster = (own >> 16) & 0xff;

	if (peer == IDENTITY_HOST || peer == IDENTITY_REMOTE_NODE || peer == IDENTITY_HEALTH ||
	    peer == IDENTITY_INIT)
		return 1;
	return (peer >> 24) == 0 && (own >> 24) == 0 && cluster != 0 &&
	       ((peer >> 16) & 0xff) == cluster;
}

/* Returns REASON_FORWARDED when the packet may pass, else the drop reason. */
static __always_inline __u32 policy_verdict(__u32 endpoint, __u32 peer, __be16 port, __u8 proto,
					    __u8 dir, __u32 *rule)
{
	struct policy_endpoint *ep = bpf_map_lookup_elem(&mw_endpoints, &endpoint);
	int allowed = 0;
	struct policy_key key = { .endpoint = endpoint, .direction = dir };

	*rule = 0;
	/* Programs are attached only to registered endpoints: no record means
	 * it is being removed or was never written. Fail closed. */
	if (!ep)
		return REASON_POLICY_DEFAULT_DENY;
	if (dir == POLICY_DIR_INGRESS ? !ep->ingress_enforced : !ep->egress_enforced)
		return REASON_FORWARDED;

	/* The sentinel is no address's identity; never let one pass for it. */
	if (peer == IDENTITY_CLUSTER_PEERS)
		peer = IDENTITY_WORLD;

	/* For the peer, then for any peer of its own cluster, then for any
	 * peer: this port of this protocol, every port of this protocol,
	 * everything. */
	key.identity = peer; key.port = port; key.proto = proto;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	key.port = 0;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	key.proto = 0;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	if (peer_in_cluster(peer, ep->identity)) {
		key.identity = IDENTITY_CLUSTER_PEERS; key.port = port; key.proto = proto;
		if (policy_probe(&key, &allowed, rule))
			return REASON_POLICY_DENIED;
		key.port = 0;
		if (policy_probe(&key, &allowed, rule))
			return REASON_POLICY_DENIED;
		key.proto = 0;
		if (policy_probe(&key, &allowed, rule))
			return REASON_POLICY_DENIED;
	}
	key.identity = 0; key.port = port; key.proto = proto;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	key.port = 0;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	key.proto = 0;
	if (policy_probe(&key, &allowed, rule))
		return REASON_POLICY_DENIED;
	return allowed ? REASON_FORWARDED : REASON_POLICY_DEFAULT_DENY;
}

/* The host firewall's record, when a host policy selects this node. None:
 * the node's traffic is neither judged nor tracked (a pod endpoint without
 * a record is denied instead; the node must keep working before its agent
 * knows its policies). */
static __always_inline struct policy_endpoint *host_record(void)
{
	__u32 host = POLICY_HOST_ENDPOINT;
	return bpf_map_lookup_elem(&mw_endpoints, &host);
}

#endif
