/* Connection tracking (LRU). One entry per flow and endpoint direction:
 * CT_DIR_OUT for flows a pod opened (created at the from-pod hook, after
 * service DNAT), CT_DIR_IN for flows opened towards a pod, CT_DIR_SVC for the
 * pre-DNAT tuple of a service flow (remembers the chosen backend),
 * CT_DIR_NODEPORT for the post-DNAT tuple of a flow that arrived on the node's
 * interface for a NodePort (its replies are reverse-translated). Replies
 * match the reversed tuple of an existing entry and skip policy.
 *
 * Two tables, so one pod cannot exhaust conntrack for the others: a new
 * entry goes to mw_ct_new (unconfirmed, short-lived) and moves to mw_ct
 * once the flow is established (with the service entry that chose its
 * backend): for UDP and other protocols at the first reply, for TCP when
 * the handshake completes (a segment with ACK and without SYN or RST after
 * the SYN-ACK). A SYN flood, answered or not (a raw-socket sender answers
 * each SYN-ACK with a RST), or a one-way UDP flood, only churns mw_ct_new;
 * established flows, and the reverse NAT their replies need, live in mw_ct,
 * which only established flows fill. Rust twin in src/maps/conntrack.rs. */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_ct_new SEC(".maps");

#define CT_FLAG_CLOSING 0x1 /* a TCP FIN or RST was seen */
#define CT_FLAG_REPLIED 0x2 /* established: the entry lives in mw_ct */
#define CT_FLAG_ANSWERED 0x4 /* TCP: a reply (the SYN-ACK) was seen, the handshake is not complete */
#define CT_FLAG_NODEPORT_SNAT 0x8 /* CT_DIR_NODEPORT: the backend is on another node; to_netdev SNATs */

/* How long an idle entry stays valid. An expired entry counts as absent, so
 * a new flow on a reused tuple is judged by the current policy again. */
#define CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define CT_LIFETIME_TCP_CLOSING_NS (10ULL * 1000000000ULL)
#define CT_LIFETIME_OTHER_NS (60ULL * 1000000000ULL)
/* An entry never answered (a bare SYN, one-way UDP) is dropped sooner. */
#define CT_LIFETIME_UNREPLIED_NS (30ULL * 1000000000ULL)

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* Looks up and refreshes an entry; `tcp_flags` of the current packet (0 for
 * non-TCP) mark closing connections, and a fresh SYN on a closing entry
 * starts over. */
static __always_inline struct ct_val *ct_confirm(const struct ct_key *key);

static __always_inline struct ct_val *ct_lookup(const struct ct_key *key, __u8 tcp_flags)
{
	void *map = &mw_ct;
	struct ct_val *v = bpf_map_lookup_elem(&mw_ct, key);
	if (!v) {
		map = &mw_ct_new;
		v = bpf_map_lookup_elem(&mw_ct_new, key);
	}
	if (!v)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 life = CT_LIFETIME_OTHER_NS;
	if (key->proto == IPPROTO_TCP)
		life = (v->flags & CT_FLAG_CLOSING) ? CT_LIFETIME_TCP_CLOSING_NS : CT_LIFETIME_TCP_NS;
	if (!(v->flags & CT_FLAG_REPLIED) && life > CT_LIFETIME_UNREPLIED_NS)
		life = CT_LIFETIME_UNREPLIED_NS;
	int new_syn = (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	if (now - v->last_seen_ns > life || (new_syn && (v->flags & CT_FLAG_CLOSING))) {
		bpf_map_delete_elem(map, key);
		return 0;
	}
	v->last_seen_ns = now;
	__sync_fetch_and_add(&v->packets, 1);
	if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
		v->flags |= CT_FLAG_CLOSING;
	/* The handshake completes: answered, and now a plain ACK. */
	if (map == &mw_ct_new && (v->flags & CT_FLAG_ANSWERED) &&
	    (tcp_flags & (TCP_FLAG_ACK | TCP_FLAG_SYN | TCP_FLAG_RST)) == TCP_FLAG_ACK)
		return ct_confirm(key);
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

/* A new, unconfirmed entry (mw_ct_new) with CT_FLAG_* `flags`. */
static __always_inline int ct_create_flags(const struct ct_key *key, __u32 backend_id,
					   __u32 rev_nat_id, __u32 flags)
{
	struct ct_val v = {
		.last_seen_ns = bpf_ktime_get_ns(),
		.backend_id = backend_id,
		.rev_nat_id = rev_nat_id,
		.packets = 1,
		.flags = flags,
	};
	return bpf_map_update_elem(&mw_ct_new, key, &v, BPF_ANY);
}

/* A new, unconfirmed entry (mw_ct_new). */
static __always_inline int ct_create(const struct ct_key *key, __u32 backend_id, __u32 rev_nat_id)
{
	return ct_create_flags(key, backend_id, rev_nat_id, 0);
}

/* The flow of `key` is established: its entry moves to mw_ct (if it is
 * still unconfirmed). Returns the entry, wherever it now lives. */
static __always_inline struct ct_val *ct_confirm(const struct ct_key *key)
{
	struct ct_val *v = bpf_map_lookup_elem(&mw_ct, key);
	if (v)
		return v;
	v = bpf_map_lookup_elem(&mw_ct_new, key);
	if (!v)
		return 0;
	struct ct_val copy = *v;
	copy.flags |= CT_FLAG_REPLIED;
	if (bpf_map_update_elem(&mw_ct, key, &copy, BPF_ANY) < 0)
		return v; /* stays unconfirmed: still valid, only shorter-lived */
	bpf_map_delete_elem(&mw_ct_new, key);
	return bpf_map_lookup_elem(&mw_ct, key);
}

/* The flow of `key` was answered: a TCP entry is marked (its handshake
 * confirms it later, see ct_lookup), any other is confirmed now. Returns
 * the entry; `*first` says this was its first answer. */
static __always_inline struct ct_val *ct_answered(const struct ct_key *key, struct ct_val *v,
						  int *first)
{
	*first = 0;
	if (!v || (v->flags & (CT_FLAG_REPLIED | CT_FLAG_ANSWERED)))
		return v;
	*first = 1;
	if (key->proto == IPPROTO_TCP) {
		v->flags |= CT_FLAG_ANSWERED;
		return v;
	}
	return ct_confirm(key);
}

/* A reply matched `key`: refresh it as ct_lookup does and mark the flow
 * answered (`*first` set on its first answer). */
static __always_inline struct ct_val *ct_lookup_reply(const struct ct_key *key, __u8 tcp_flags,
						      int *first)
{
	return ct_answered(key, ct_lookup(key, tcp_flags), first);
}

#endif
