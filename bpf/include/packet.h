/* Parsing IPv4/TCP/UDP headers from an skb and rewriting addresses and ports
 * with checksum fix-ups (DNAT and reverse NAT).
 *
 * Fragments: only the first fragment of a datagram carries its ports. Its
 * ports are remembered under (source, destination, IP id, protocol) as it
 * passes, and a later fragment takes them from there, so it is translated,
 * tracked and policed exactly like the first (addresses rewritten, its
 * absent L4 header left alone). A later fragment whose first one was not
 * seen (lost, reordered, evicted) cannot be classified: PARSE_FRAG_UNKNOWN,
 * which the pod programs drop with a counted reason, never half-translated.
 * Rust twin of the map: src/maps/raw.rs (FragKey, FragVal). */
#ifndef MESHWORK_PACKET_H
#define MESHWORK_PACKET_H

#include "common.h"

#define PARSE_OK 0
#define PARSE_NOT_IPV4 1
#define PARSE_FRAG_UNKNOWN 2
#define PARSE_INVALID -1

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* FIN/SYN/RST/ACK... of a TCP packet, else 0 */
	__u8 later_frag; /* a non-first fragment: no L4 header in this packet */
	__u8 icmp_type;  /* of an ICMP packet's first fragment, else 0 */
	__u8 is_icmp_head; /* the packet carries an ICMP header (icmp_type is valid) */
};

struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};
MW_ASSERT_SIZE(struct frag_key, 12);

struct frag_val {
	__be16 sport;
	__be16 dport;
};
MW_ASSERT_SIZE(struct frag_val, 4);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_frags SEC(".maps");

static __always_inline int pkt_parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return PARSE_INVALID;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_INVALID;
	if (ip->ihl < 5)
		return PARSE_INVALID;
	p->l3_off = sizeof(*eth);
	p->l4_off = sizeof(*eth) + ip->ihl * 4;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->sport = 0;
	p->dport = 0;
	p->later_frag = 0;
	p->icmp_type = 0;
	p->is_icmp_head = 0;
	__u16 frag = bpf_ntohs(ip->frag_off);
	int ported = ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP;
	if (frag & IP_OFFSET) {
		/* A later fragment: its ports are the first fragment's. */
		p->later_frag = 1;
		p->tcp_flags = 0;
		if (!ported)
			return PARSE_OK;
		struct frag_key fk = {
			.saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol,
		};
		struct frag_val *fv = bpf_map_lookup_elem(&mw_frags, &fk);
		if (!fv)
			return PARSE_FRAG_UNKNOWN;
		p->sport = fv->sport;
		p->dport = fv->dport;
		return PARSE_OK;
	}
	if (ported) {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) < 0)
			return PARSE_INVALID;
		p->sport = ports[0];
		p->dport = ports[1];
		if (frag & IP_MF) {
			struct frag_key fk = {
				.saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id,
				.proto = ip->protocol,
			};
			struct frag_val fv = { .sport = ports[0], .dport = ports[1] };
			bpf_map_update_elem(&mw_frags, &fk, &fv, BPF_ANY);
		}
	}
	p->tcp_flags = 0;
	if (ip->protocol == IPPROTO_ICMP) {
		if (bpf_skb_load_bytes(skb, p->l4_off, &p->icmp_type, 1) < 0)
			return PARSE_INVALID;
		p->is_icmp_head = 1;
	}
	if (ip->protocol == IPPROTO_TCP &&
	    bpf_skb_load_bytes(skb, p->l4_off + 13, &p->tcp_flags, 1) < 0)
		return PARSE_INVALID;
	return PARSE_OK;
}

#define NAT_SRC 0
#define NAT_DST 1

/* Rewrites the source or destination address and port, fixing the IP and
 * L4 checksums. Returns 0 or a negative error. */
static __always_inline int pkt_rewrite(struct __sk_buff *skb, struct pkt *p, int which,
				       __be32 new_addr, __be16 new_port)
{
	__be32 old_addr = which == NAT_DST ? p->daddr : p->saddr;
	__be16 old_port = which == NAT_DST ? p->dport : p->sport;
	__u32 addr_off = p->l3_off + (which == NAT_DST ? offsetof(struct iphdr, daddr)
						       : offsetof(struct iphdr, saddr));
	__u32 csum_off = 0;
	__u64 l4_flags = 0;
	int ret;

	/* A later fragment has no L4 header: only its address changes (the
	 * first fragment's L4 checksum covers the whole datagram). */
	if (!p->later_frag && p->proto == IPPROTO_TCP) {
		csum_off = p->l4_off + offsetof(struct tcphdr, check);
	} else if (!p->later_frag && p->proto == IPPROTO_UDP) {
		csum_off = p->l4_off + offsetof(struct udphdr, check);
		l4_flags = BPF_F_MARK_MANGLED_0;
	}

	if (old_addr != new_addr) {
		if (csum_off) {
			ret = bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
						  BPF_F_PSEUDO_HDR | l4_flags | sizeof(new_addr));
			if (ret < 0)
				return ret;
		}
		ret = bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), old_addr,
					  new_addr, sizeof(new_addr));
		if (ret < 0)
			return ret;
		ret = bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
		if (ret < 0)
			return ret;
	}
	if (csum_off && old_port != new_port) {
		__u32 port_off = p->l4_off + (which == NAT_DST ? 2 : 0);
		ret = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port));
		if (ret < 0)
			return ret;
		ret = bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0);
		if (ret < 0)
			return ret;
	}
	if (which == NAT_DST) {
		p->daddr = new_addr;
		p->dport = new_port;
	} else {
		p->saddr = new_addr;
		p->sport = new_port;
	}
	return 0;
}

#endif
