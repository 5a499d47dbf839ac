/* BPF masquerade: pod traffic leaving the cluster network is SNATed to the
 * node's address as it leaves the node's interface (to_netdev), and its
 * replies are translated back as they arrive (from_netdev), before the
 * host firewall or NodePort see them.
 *
 * What is masqueraded: a TCP or UDP packet, or an ICMP echo request (its
 * identifier claimed like a port), whose source is in this node's
 * pod CIDR, whose destination is not exempt (mw_masq_exempt: the pod CIDRs
 * of every node of every connected cluster and the node addresses, plus
 * the operator's CIDRs, like ip-masq-agent's nonMasqueradeCIDRs), and
 * which is not a reply of a flow opened towards the pod (those keep the
 * pod's address: the peer addressed it). Until the agent has written the
 * exempt set it writes the config (mw_masq_config.node_addr 0: off), so a
 * half-known cluster never sees its own pods behind a node address (which
 * a policy admitting `remote-node` would then let in).
 *
 * Ports: a flow keeps its source port when that port is in the range
 * (port_min..port_max, by default the ports above the node's ephemeral
 * range, so the node's own connections never collide), else it gets a
 * random one; up to MASQ_PORT_TRIES ports are tried per flow. A port is
 * claimed by inserting its reply tuple (BPF_NOEXIST, so two CPUs never
 * share one); what the claim maps back to is the original source. The
 * forward entry is only an index to the claim and is trusted only while
 * the claim still points back at it.
 *
 * Lifetimes follow conntrack's: an entry never answered lives
 * CT_LIFETIME_UNREPLIED_NS, a TCP flow that saw FIN or RST
 * CT_LIFETIME_TCP_CLOSING_NS, a TCP flow CT_LIFETIME_TCP_NS, anything else
 * CT_LIFETIME_OTHER_NS; an expired claim is free again.
 * Rust twin in src/maps/masquerade.rs. */
#ifndef MESHWORK_NAT_H
#define MESHWORK_NAT_H

#include "common.h"
#include "drop.h"
#include "packet.h"
#include "conntrack.h"
#include "encrypt.h"
#include "policy.h"

#define SNAT_DIR_OUT 0 /* original tuple (pod side) -> the translated source */
#define SNAT_DIR_IN 1  /* reply tuple (to the node) -> the original source: the claim */

#define SNAT_FLAG_REPLIED 0x1
#define SNAT_FLAG_CLOSING 0x2

#define MASQ_PORT_TRIES 16
#define MASQ_CFG_MASQUERADE 0x1 /* masquerade pod traffic (else only NodePort SNAT) */

/* How this node SNATs: masqueraded pod traffic, and NodePort flows to a
 * backend on another node (so its replies come back here). */
struct masq_config {
	__be32 node_addr; /* the source SNATed packets get; 0: no SNAT at all */
	__be32 pod_net;   /* this node's pod CIDR (network, mask) */
	__be32 pod_mask;
	__u16 port_min;   /* host byte order, inclusive */
	__u16 port_max;
	__u32 flags;      /* MASQ_CFG_* */
};
MW_ASSERT_SIZE(struct masq_config, 20);

struct masq_exempt_key {
	__u32 prefixlen;
	__be32 addr;
};
MW_ASSERT_SIZE(struct masq_exempt_key, 8);

struct snat_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* SNAT_DIR_* */
	__u16 pad;
};
MW_ASSERT_SIZE(struct snat_key, 16);

struct snat_val {
	__u64 last_seen_ns;
	__be32 addr; /* OUT: the new source; IN: the original source */
	__be16 port;
	__u8 flags;  /* SNAT_FLAG_*, kept on the claim (IN) */
	__u8 pad;
};
MW_ASSERT_SIZE(struct snat_val, 16);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct masq_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_masq_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct masq_exempt_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_masq_exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct snat_key);
	__type(value, struct snat_val);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_snat SEC(".maps");

static __always_inline int snat_expired(const struct snat_key *k, const struct snat_val *v,
					__u64 now)
{
	__u64 life = k->proto == IPPROTO_TCP ? CT_LIFETIME_TCP_NS : CT_LIFETIME_OTHER_NS;
	if (v->flags & SNAT_FLAG_CLOSING)
		life = CT_LIFETIME_TCP_CLOSING_NS;
	if (!(v->flags & SNAT_FLAG_REPLIED) && life > CT_LIFETIME_UNREPLIED_NS)
		life = CT_LIFETIME_UNREPLIED_NS;
	return now - v->last_seen_ns > life;
}

/* Refreshes a claim with the packet's TCP flags (`replied`: it is a reply). */
static __always_inline void snat_touch(struct snat_val *v, __u8 tcp_flags, int replied, __u64 now)
{
	v->last_seen_ns = now;
	if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
		v->flags |= SNAT_FLAG_CLOSING;
	else if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		v->flags &= ~SNAT_FLAG_CLOSING; /* a new connection on the same tuple */
	if (replied)
		v->flags |= SNAT_FLAG_REPLIED;
}

/* Whether `p` is a reply of a flow a peer opened towards the pod (to_pod
 * tracked it as CT_DIR_IN). */
static __always_inline int masq_is_reply(const struct pkt *p)
{
	struct ct_key k = {
		.saddr = p->daddr, .daddr = p->saddr, .sport = p->dport,
		.dport = p->sport, .proto = p->proto, .dir = CT_DIR_IN,
	};
	return bpf_map_lookup_elem(&mw_ct, &k) || bpf_map_lookup_elem(&mw_ct_new, &k);
}

/* The claim of `out`'s translation, if it still points back at `p`. */
static __always_inline struct snat_val *snat_claim_of(const struct pkt *p,
						      const struct snat_val *out, __u64 now)
{
	struct snat_key in = {
		.saddr = p->daddr, .daddr = out->addr, .sport = p->dport,
		.dport = out->port, .proto = p->proto, .dir = SNAT_DIR_IN,
	};
	struct snat_val *claim = bpf_map_lookup_elem(&mw_snat, &in);
	if (!claim || claim->addr != p->saddr || claim->port != p->sport ||
	    snat_expired(&in, claim, now))
		return 0;
	return claim;
}

/* Claims a port of `cfg`'s range for `p`'s flow: 0 and *port set, or -1. */
static __always_inline int snat_claim(const struct pkt *p, const struct masq_config *cfg,
				      __be16 *port, __u64 now)
{
	__u32 span = (__u32)cfg->port_max - cfg->port_min + 1;
	__u16 own = bpf_ntohs(p->sport);
	struct snat_val claim = {
		.last_seen_ns = now, .addr = p->saddr, .port = p->sport,
	};
	struct snat_key in = {
		.saddr = p->daddr, .daddr = cfg->node_addr, .sport = p->dport,
		.proto = p->proto, .dir = SNAT_DIR_IN,
	};

	if (cfg->port_max < cfg->port_min)
		return -1;
	for (int i = 0; i < MASQ_PORT_TRIES; i++) {
		__u16 candidate = own;
		if (i > 0 || own < cfg->port_min || own > cfg->port_max)
			candidate = cfg->port_min + bpf_get_prandom_u32() % span;
		in.dport = bpf_htons(candidate);
		if (bpf_map_update_elem(&mw_snat, &in, &claim, BPF_NOEXIST) == 0) {
			*port = in.dport;
			return 0;
		}
		struct snat_val *held = bpf_map_lookup_elem(&mw_snat, &in);
		if (held && snat_expired(&in, held, now)) {
			/* A stale claim: free it and take it (NOEXIST again, so a
			 * CPU that freed it first wins). */
			bpf_map_delete_elem(&mw_snat, &in);
			if (bpf_map_update_elem(&mw_snat, &in, &claim, BPF_NOEXIST) == 0) {
				*port = in.dport;
				return 0;
			}
		}
	}
	return -1;
}

/* Translates `p`'s source to the node address and a claimed port (the
 * flow's claim, or a new one). Returns 1, or a drop reason. */
static __always_inline __u32 snat_apply(struct __sk_buff *skb, struct pkt *p,
					const struct masq_config *cfg)
{
	__u64 now = bpf_ktime_get_ns();
	struct snat_key out = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport,
		.dport = p->dport, .proto = p->proto, .dir = SNAT_DIR_OUT,
	};
	__be16 port = 0;
	struct snat_val *fwd = bpf_map_lookup_elem(&mw_snat, &out);
	struct snat_val *claim = 0;
	if (fwd && fwd->addr == cfg->node_addr)
		claim = snat_claim_of(p, fwd, now);
	if (claim) {
		port = fwd->port;
		fwd->last_seen_ns = now;
		snat_touch(claim, p->tcp_flags, 0, now);
	} else {
		/* A later fragment follows its first one, which claimed. */
		if (p->later_frag)
			return REASON_FRAGMENT_UNKNOWN;
		if (snat_claim(p, cfg, &port, now) < 0)
			return REASON_SNAT_PORTS_EXHAUSTED;
		struct snat_val v = { .last_seen_ns = now, .addr = cfg->node_addr, .port = port };
		if (bpf_map_update_elem(&mw_snat, &out, &v, BPF_ANY) < 0)
			return REASON_SNAT_PORTS_EXHAUSTED;
	}
	if (pkt_rewrite(skb, p, NAT_SRC, cfg->node_addr, port) < 0)
		return REASON_NAT_FAILED;
	return 1;
}

static __always_inline struct masq_config *snat_config(void)
{
	__u32 zero = 0;
	struct masq_config *cfg = bpf_map_lookup_elem(&mw_masq_config, &zero);
	return cfg && cfg->node_addr ? cfg : 0;
}

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8

/* An ICMP echo's identifier (network order) into *id; 0, or -1. */
static __always_inline int icmp_echo_id(struct __sk_buff *skb, const struct pkt *p, __be16 *id)
{
	return bpf_skb_load_bytes(skb, p->l4_off + 4, id, sizeof(*id));
}

/* Rewrites an ICMP echo's source (egress) or destination (ingress)
 * address and its identifier, with both checksums (ICMP's covers no
 * addresses). */
static __always_inline int icmp_echo_rewrite(struct __sk_buff *skb, struct pkt *p, int which,
					     __be32 addr, __be16 old_id, __be16 new_id)
{
	__be32 old_addr = which == NAT_DST ? p->daddr : p->saddr;
	__u32 addr_off = p->l3_off + (which == NAT_DST ? offsetof(struct iphdr, daddr)
						       : offsetof(struct iphdr, saddr));
	if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), old_addr, addr,
				sizeof(addr)) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0) < 0)
		return -1;
	if (old_id != new_id &&
	    (bpf_l4_csum_replace(skb, p->l4_off + 2, old_id, new_id, sizeof(new_id)) < 0 ||
	     bpf_skb_store_bytes(skb, p->l4_off + 4, &new_id, sizeof(new_id), 0) < 0))
		return -1;
	if (which == NAT_DST)
		p->daddr = addr;
	else
		p->saddr = addr;
	return 0;
}

/* Masquerades an ICMP echo request: its identifier stands for the source
 * port (claimed like one; the reply's is the destination port of the
 * claim). Returns 1 or a drop reason. */
static __always_inline __u32 masq_icmp_echo(struct __sk_buff *skb, struct pkt *p,
					    const struct masq_config *cfg)
{
	__be16 id;
	if (icmp_echo_id(skb, p, &id) < 0)
		return REASON_INVALID_PACKET;
	/* Claimed as a flow whose ports are (id, 0). */
	struct pkt flow = *p;
	flow.sport = id;
	flow.dport = 0;
	__u64 now = bpf_ktime_get_ns();
	struct snat_key out = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = id,
		.proto = p->proto, .dir = SNAT_DIR_OUT,
	};
	__be16 nat_id = 0;
	struct snat_val *fwd = bpf_map_lookup_elem(&mw_snat, &out);
	struct snat_val *claim = 0;
	if (fwd && fwd->addr == cfg->node_addr)
		claim = snat_claim_of(&flow, fwd, now);
	if (claim) {
		nat_id = fwd->port;
		fwd->last_seen_ns = now;
		snat_touch(claim, 0, 0, now);
	} else {
		if (snat_claim(&flow, cfg, &nat_id, now) < 0)
			return REASON_SNAT_PORTS_EXHAUSTED;
		struct snat_val v = { .last_seen_ns = now, .addr = cfg->node_addr, .port = nat_id };
		if (bpf_map_update_elem(&mw_snat, &out, &v, BPF_ANY) < 0)
			return REASON_SNAT_PORTS_EXHAUSTED;
	}
	if (icmp_echo_rewrite(skb, p, NAT_SRC, cfg->node_addr, id, nat_id) < 0)
		return REASON_NAT_FAILED;
	return 1;
}

/* to_netdev: masquerades `p` if it must be. Returns 0 when the packet is
 * not masqueraded (go on as before), 1 when it was (pass it), or a drop
 * reason (> 1) when it must be but cannot. TCP, UDP and ICMP echo requests
 * are masqueraded; other protocols leave as they are. */
static __always_inline __u32 masq_egress(struct __sk_buff *skb, struct pkt *p)
{
	struct masq_config *cfg = snat_config();

	if (!cfg || !(cfg->flags & MASQ_CFG_MASQUERADE))
		return 0;
	int echo = p->proto == IPPROTO_ICMP && p->is_icmp_head &&
		   p->icmp_type == ICMP_ECHO_REQUEST;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && !echo)
		return 0;
	if ((p->saddr & cfg->pod_mask) != cfg->pod_net || p->saddr == cfg->node_addr)
		return 0;
	struct masq_exempt_key ek = { .prefixlen = 32, .addr = p->daddr };
	if (bpf_map_lookup_elem(&mw_masq_exempt, &ek))
		return 0;
	if (echo)
		return masq_icmp_echo(skb, p, cfg);
	if (masq_is_reply(p))
		return 0;
	return snat_apply(skb, p, cfg);
}

/* to_netdev: a NodePort flow from_netdev sent to a backend on another node
 * (CT_FLAG_NODEPORT_SNAT) leaves with the node's address, so the backend
 * answers this node, which translates the reply back (masq_ingress, then
 * the NodePort reverse NAT). Returns 0 (not such a flow), 1, or a reason. */
static __always_inline __u32 nodeport_snat(struct __sk_buff *skb, struct pkt *p)
{
	struct ct_key k = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport,
		.dport = p->dport, .proto = p->proto, .dir = CT_DIR_NODEPORT,
	};
	struct ct_val *v = bpf_map_lookup_elem(&mw_ct, &k);
	if (!v)
		v = bpf_map_lookup_elem(&mw_ct_new, &k);
	if (!v || !(v->flags & CT_FLAG_NODEPORT_SNAT))
		return 0;
	struct masq_config *cfg = snat_config();
	if (!cfg)
		return REASON_NAT_FAILED;
	return snat_apply(skb, p, cfg);
}

#define NODEPORT_PATH_LOCAL 0  /* the backend is on this node (or is the node) */
#define NODEPORT_PATH_SNAT 1   /* on another node, through the interface it came in on */
#define NODEPORT_PATH_NONE 2   /* elsewhere (the WireGuard device), or no route: dropped */

/* Where the kernel will send a NodePort flow from `p`'s client to backend
 * `addr`:`port` that arrived on skb's interface. */
static __always_inline int nodeport_path(struct __sk_buff *skb, const struct pkt *p, __be32 addr,
					 __be16 port)
{
	struct bpf_fib_lookup fib = {
		.family = MW_AF_INET,
		.l4_protocol = p->proto,
		.sport = p->sport,
		.dport = port,
		.ifindex = skb->ifindex,
		.ipv4_src = p->saddr,
		.ipv4_dst = addr,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return NODEPORT_PATH_LOCAL; /* a local address: the node itself */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return NODEPORT_PATH_NONE;
	__u32 out = fib.ifindex;
	if (bpf_map_lookup_elem(&mw_endpoints, &out))
		return NODEPORT_PATH_LOCAL; /* a pod's veth */
	if (out == skb->ifindex)
		return NODEPORT_PATH_SNAT;
	return NODEPORT_PATH_NONE;
}

/* from_netdev: a reply to a masqueraded flow gets its original destination
 * back. Returns 0 when `p` is none, 1 when translated, or a drop reason. */
static __always_inline __u32 masq_ingress(struct __sk_buff *skb, struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP && p->is_icmp_head && p->icmp_type == ICMP_ECHO_REPLY) {
		__be16 id;
		if (icmp_echo_id(skb, p, &id) < 0)
			return 0;
		struct snat_key in = {
			.saddr = p->saddr, .daddr = p->daddr, .dport = id,
			.proto = p->proto, .dir = SNAT_DIR_IN,
		};
		struct snat_val *claim = bpf_map_lookup_elem(&mw_snat, &in);
		__u64 now = bpf_ktime_get_ns();
		if (!claim || snat_expired(&in, claim, now))
			return 0;
		snat_touch(claim, 0, 1, now);
		if (icmp_echo_rewrite(skb, p, NAT_DST, claim->addr, id, claim->port) < 0)
			return REASON_NAT_FAILED;
		return 1;
	}
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return 0;
	struct snat_key in = {
		.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport,
		.dport = p->dport, .proto = p->proto, .dir = SNAT_DIR_IN,
	};
	struct snat_val *claim = bpf_map_lookup_elem(&mw_snat, &in);
	__u64 now = bpf_ktime_get_ns();
	if (!claim || snat_expired(&in, claim, now))
		return 0;
	snat_touch(claim, p->tcp_flags, 1, now);
	if (pkt_rewrite(skb, p, NAT_DST, claim->addr, claim->port) < 0)
		return REASON_NAT_FAILED;
	return 1;
}

#endif
