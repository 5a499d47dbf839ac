/* Service load balancing: frontends, backend slots, backends, reverse NAT,
 * Maglev tables and backend selection. Used by the socket LB (sock_lb.c) and
 * the per-packet path (tc_pod.c). Rust twins in src/maps/lb.rs. */
#ifndef MESHWORK_LB_H
#define MESHWORK_LB_H

#include "common.h"
#include "drop.h"

#define MAGLEV_TABLE_SIZE 16381
#define SVC_FLAG_MAGLEV 0x1
#define SVC_FLAG_AFFINITY 0x2 /* ClientIP session affinity: see mw_affinity_svc */

/* Frontend: ClusterIP (or NodePort address) : port / protocol. */
struct lb_svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;    /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};
MW_ASSERT_SIZE(struct lb_svc_key, 8);

struct lb_svc_val {
	__u32 svc_id;        /* also the reverse-NAT id */
	__u16 backend_count; /* slots 0..backend_count-1 are valid */
	__u16 flags;         /* SVC_FLAG_* */
};
MW_ASSERT_SIZE(struct lb_svc_val, 8);

struct lb_slot_key {
	__u32 svc_id;
	__u32 slot;
};
MW_ASSERT_SIZE(struct lb_slot_key, 8);

struct lb_backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 cluster_id;
	__u32 flags;
};
MW_ASSERT_SIZE(struct lb_backend, 12);

struct lb_revnat {
	__be32 addr;
	__be16 port;
	__u16 pad;
};
MW_ASSERT_SIZE(struct lb_revnat, 8);

struct lb_maglev {
	__u32 backend_ids[MAGLEV_TABLE_SIZE];
};

/* Socket-level reverse NAT for UDP: (socket cookie, backend) -> frontend. */
struct lb_sk_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u16 pad;
};
MW_ASSERT_SIZE(struct lb_sk_key, 16);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_svc_key);
	__type(value, struct lb_svc_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_slot_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_revnat);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_maglev);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_sk_key);
	__type(value, struct lb_revnat);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_sk_revnat SEC(".maps");

/* ClientIP session affinity. A client is a network namespace (its cookie,
 * for the socket LB, which runs before the source address is chosen) or a
 * source address (the per-packet path). The entry remembers the slot as well
 * as the backend, so a backend removed from the service is never reused. */
struct lb_affinity_key {
	__u64 client;
	__u32 svc_id;
	__u8 by_netns; /* 1: client is a netns cookie; 0: an IPv4 address */
	__u8 pad[3];
};
MW_ASSERT_SIZE(struct lb_affinity_key, 16);

struct lb_affinity_val {
	__u64 last_ns;
	__u32 backend_id;
	__u32 slot;
};
MW_ASSERT_SIZE(struct lb_affinity_val, 16);

/* Service id -> affinity timeout in seconds (services with SVC_FLAG_AFFINITY). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_affinity_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_affinity SEC(".maps");

/* Settings every node of a cluster shares: the seed of the flow hash Maglev
 * indexes with, so every node picks the same backend for the same flow (the
 * agent writes it from --bpf-lb-maglev-hash-seed). */
struct lb_config {
	__u32 maglev_seed;
	__u32 pad;
};
MW_ASSERT_SIZE(struct lb_config, 8);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_lb_config SEC(".maps");

static __always_inline __u32 lb_mix(__u32 h)
{
	/* murmur3's finaliser: every input bit reaches every output bit. */
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* The flow's hash: the same on every node with the same seed (unlike the
 * skb hash, which the kernel seeds per boot). Rust twin: maglev::flow_hash. */
static __always_inline __u32 lb_flow_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
					  __u8 proto)
{
	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&mw_lb_config, &zero);
	__u32 h = cfg ? cfg->maglev_seed : 0;

	h = lb_mix(h ^ bpf_ntohl(saddr));
	h = lb_mix(h ^ bpf_ntohl(daddr));
	h = lb_mix(h ^ (((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport)));
	return lb_mix(h ^ proto);
}

static __always_inline struct lb_svc_val *lb_lookup_service(__be32 addr, __be16 port, __u8 proto)
{
	struct lb_svc_key key = { .addr = addr, .port = port, .proto = proto };
	return bpf_map_lookup_elem(&mw_services, &key);
}

/* Picks a backend id for a new flow. `hash` is a per-flow hash used by
 * Maglev; random selection ignores it. Returns 0 when no backend can be
 * chosen, with *reason set; *slot is the chosen slot (~0 for Maglev). */
static __always_inline __u32 lb_select_slot(const struct lb_svc_val *svc, __u32 hash, __u32 *slot,
					    __u32 *reason)
{
	*slot = ~0u;
	if (svc->backend_count == 0) {
		*reason = REASON_NO_SERVICE_BACKEND;
		return 0;
	}
	if (svc->flags & SVC_FLAG_MAGLEV) {
		__u32 id = svc->svc_id;
		struct lb_maglev *table = bpf_map_lookup_elem(&mw_maglev, &id);
		if (table) {
			__u32 idx = hash % MAGLEV_TABLE_SIZE;
			/* Keep the compiler from dropping the bound the verifier needs. */
			asm volatile("" : "+r"(idx));
			if (idx < MAGLEV_TABLE_SIZE) {
				__u32 backend = table->backend_ids[idx];
				if (backend)
					return backend;
			}
		}
		/* No table yet: fall back to random slots rather than dropping. */
	}
	struct lb_slot_key key = {
		.svc_id = svc->svc_id,
		.slot = bpf_get_prandom_u32() % svc->backend_count,
	};
	__u32 *backend = bpf_map_lookup_elem(&mw_slots, &key);
	if (!backend || *backend == 0) {
		*reason = REASON_BACKEND_MISSING;
		return 0;
	}
	*slot = key.slot;
	return *backend;
}

/* Picks a backend for a new flow of `client` (see struct lb_affinity_key).
 * With ClientIP affinity the client keeps its backend while it stays in the
 * service and the client was seen within the timeout; Maglev services hash
 * the client instead, which is sticky by construction. */
static __always_inline __u32 lb_select_backend(const struct lb_svc_val *svc, __u32 hash, __u64 client,
					       __u8 by_netns, __u32 *reason)
{
	__u32 slot;
	if (!(svc->flags & SVC_FLAG_AFFINITY))
		return lb_select_slot(svc, hash, &slot, reason);
	if (svc->flags & SVC_FLAG_MAGLEV)
		return lb_select_slot(svc, (__u32)(client ^ (client >> 32)) * 2654435761u, &slot, reason);
	__u32 id = svc->svc_id;
	__u32 *timeout = bpf_map_lookup_elem(&mw_affinity_svc, &id);
	if (!timeout)
		return lb_select_slot(svc, hash, &slot, reason);
	struct lb_affinity_key key = { .client = client, .svc_id = id, .by_netns = by_netns };
	__u64 now = bpf_ktime_get_ns();
	struct lb_affinity_val *av = bpf_map_lookup_elem(&mw_affinity, &key);
	if (av && now - av->last_ns < (__u64)*timeout * 1000000000ull && av->slot < svc->backend_count) {
		struct lb_slot_key sk = { .svc_id = id, .slot = av->slot };
		__u32 *b = bpf_map_lookup_elem(&mw_slots, &sk);
		if (b && *b == av->backend_id) {
			av->last_ns = now;
			return av->backend_id;
		}
	}
	__u32 backend = lb_select_slot(svc, hash, &slot, reason);
	if (backend) {
		struct lb_affinity_val v = { .last_ns = now, .backend_id = backend, .slot = slot };
		bpf_map_update_elem(&mw_affinity, &key, &v, BPF_ANY);
	}
	return backend;
}

static __always_inline struct lb_backend *lb_lookup_backend(__u32 id)
{
	return bpf_map_lookup_elem(&mw_backends, &id);
}

#endif
