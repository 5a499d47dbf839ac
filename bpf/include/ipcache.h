/* IP -> security identity (LPM trie): who a peer is, where it lives, whether
 * traffic to it must be encrypted. Rust twin in src/maps/ipcache.rs. */
#ifndef MESHWORK_IPCACHE_H
#define MESHWORK_IPCACHE_H

#include "common.h"

#define IPCACHE_FLAG_ENCRYPT 0x1

struct ipcache_key {
	__u32 prefixlen; /* LPM: significant bits of addr */
	__be32 addr;
};
MW_ASSERT_SIZE(struct ipcache_key, 8);

struct ipcache_val {
	__u32 identity;
	__be32 tunnel_endpoint; /* node IP hosting the address, 0 if local/none */
	__u8 flags;             /* IPCACHE_FLAG_* */
	__u8 cluster_id;
	__u16 pad;
};
MW_ASSERT_SIZE(struct ipcache_val, 12);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_val);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_ipcache SEC(".maps");

/* Identity of addr, WORLD when nothing in the cache covers it. */
static __always_inline __u32 ipcache_identity(__be32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .addr = addr };
	struct ipcache_val *val = bpf_map_lookup_elem(&mw_ipcache, &key);
	return val ? val->identity : IDENTITY_WORLD;
}

#endif
