/* Connection tracking (LRU). One entry per flow and endpoint direction:
 * CT_DIR_OUT for flows a pod opened (created at the from-pod hook, after
 * service DNAT), CT_DIR_IN for flows opened towards a pod, CT_DIR_SVC for the
 * pre-DNAT tuple of a service flow (remembers the chosen backend),
 * CT_DIR_NODEPORT for the post-DNAT tuple of a flow that arrived on the node's
 * interface for a NodePort (its replies are reverse-translated). Replies
 * match the reversed tuple of an existing entry and skip policy. Rust twin in
 * src/maps/conntrack.rs. */
#ifndef MESHWORK_CONNTRACK_H
#define MESHWORK_CONNTRACK_H

#include "common.h"

#define CT_DIR_OUT 0
#define CT_DIR_IN 1
#define CT_DIR_SVC 2
#define CT_DIR_NODEPORT 3 /* backend-side tuple of a NodePort flow; rev_nat_id set */

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};
MW_ASSERT_SIZE(struct ct_key, 16);

struct ct_val {
	__u64 last_seen_ns;
	__u32 backend_id;  /* CT_DIR_SVC: the chosen backend */
	__u32 rev_nat_id;  /* CT_DIR_OUT: service id to reverse-translate replies, 0 none */
	__u32 packets;
	__u32 flags;
};
MW_ASSERT_SIZE(struct ct_val, 24);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_ct SEC(".maps");

static __always_inline struct ct_val *ct_lookup(const struct ct_key *key)
{
	struct ct_val *v = bpf_map_lookup_elem(&mw_ct, key);
	if (v) {
		v->last_seen_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&v->packets, 1);
	}
	return v;
}

static __always_inline void ct_reverse(const struct ct_key *in, struct ct_key *out, __u8 dir)
{
	out->saddr = in->daddr;
	out->daddr = in->saddr;
	out->sport = in->dport;
	out->dport = in->sport;
	out->proto = in->proto;
	out->dir = dir;
	out->pad = 0;
}

static __always_inline int ct_create(const struct ct_key *key, __u32 backend_id, __u32 rev_nat_id)
{
	struct ct_val v = {
		.last_seen_ns = bpf_ktime_get_ns(),
		.backend_id = backend_id,
		.rev_nat_id = rev_nat_id,
		.packets = 1,
	};
	return bpf_map_update_elem(&mw_ct, key, &v, BPF_ANY);
}

#endif
