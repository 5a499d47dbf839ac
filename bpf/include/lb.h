/* Service load balancing: frontends, backend slots, backends, reverse NAT,
 * Maglev tables and backend selection. Used by the socket LB (sock_lb.c) and
 * the per-packet path (tc_pod.c). Rust twins in src/maps/lb.rs. */
#ifndef MESHWORK_LB_H
#define MESHWORK_LB_H

#include "common.h"
#include "drop.h"

#define MAGLEV_TABLE_SIZE 16381
#define SVC_FLAG_MAGLEV 0x1

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

static __always_inline struct lb_svc_val *lb_lookup_service(__be32 addr, __be16 port, __u8 proto)
{
	struct lb_svc_key key = { .addr = addr, .port = port, .proto = proto };
	return bpf_map_lookup_elem(&mw_services, &key);
}

/* Picks a backend id for a new flow. `hash` is a per-flow hash used by
 * Maglev; random selection ignores it. Returns 0 when no backend can be
 * chosen, with *reason set. */
static __always_inline __u32 lb_select_backend(const struct lb_svc_val *svc, __u32 hash, __u32 *reason)
{
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
	return *backend;
}

static __always_inline struct lb_backend *lb_lookup_backend(__u32 id)
{
	return bpf_map_lookup_elem(&mw_backends, &id);
}

#endif
