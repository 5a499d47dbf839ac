/* Strict-mode encryption: pod traffic to another node's pod CIDR (any
 * cluster) must leave through the WireGuard device; what the routing table
 * would send anywhere else (a peer removed, a node without a key yet, a
 * route someone changed) is dropped here and counted, never left to
 * routing. The agent keeps the set of CIDRs and the device's ifindex.
 * Rust twin in src/maps/encrypt.rs. */
#ifndef MESHWORK_ENCRYPT_H
#define MESHWORK_ENCRYPT_H

#include "common.h"
#include "packet.h"

#define ENCRYPT_CFG_STRICT 0x1 /* enforce: drop what would leave in clear */
#define MW_AF_INET 2

struct encrypt_key {
	__u32 prefixlen; /* LPM: significant bits of addr */
	__be32 addr;
};
MW_ASSERT_SIZE(struct encrypt_key, 8);

struct encrypt_val {
	__be32 node_ip; /* the node owning the CIDR (for people reading the map) */
};
MW_ASSERT_SIZE(struct encrypt_val, 4);

struct encrypt_cfg {
	__u32 wg_ifindex; /* the only device such traffic may leave through */
	__u32 flags;      /* ENCRYPT_CFG_* */
};
MW_ASSERT_SIZE(struct encrypt_cfg, 8);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct encrypt_key);
	__type(value, struct encrypt_val);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_encrypt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct encrypt_cfg);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_encrypt_cfg SEC(".maps");

/* Whether strict mode forbids this packet: enforcement is on, the
 * destination is another node's pod, and the FIB (as the kernel will route
 * it, from the pod's interface) sends it anywhere but the WireGuard device,
 * or nowhere. */
static __always_inline int encrypt_violation(struct __sk_buff *skb, const struct pkt *p)
{
	__u32 zero = 0;
	struct encrypt_cfg *cfg = bpf_map_lookup_elem(&mw_encrypt_cfg, &zero);

	if (!cfg || !(cfg->flags & ENCRYPT_CFG_STRICT))
		return 0;
	struct encrypt_key key = { .prefixlen = 32, .addr = p->daddr };
	if (!bpf_map_lookup_elem(&mw_encrypt, &key))
		return 0;

	struct bpf_fib_lookup fib = {
		.family = MW_AF_INET,
		.l4_protocol = p->proto,
		.sport = p->sport,
		.dport = p->dport,
		.tot_len = 0, /* no MTU check: only the egress device matters */
		.ifindex = skb->ifindex,
		.ipv4_src = p->saddr,
		.ipv4_dst = p->daddr,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 1;
	return !cfg->wg_ifindex || fib.ifindex != cfg->wg_ifindex;
}

#endif
