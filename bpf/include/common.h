/* Shared basics for every Meshwork eBPF program: kernel UAPI types, libbpf
 * helper declarations, and the few constants every header needs. */
#ifndef MESHWORK_COMMON_H
#define MESHWORK_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Compile-time layout checks: the Rust twins assert the same sizes. */
#define MW_ASSERT_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " must be " #size " bytes")

/* Reserved identities (DESIGN.md "Identities"): the twins of mesh-api's
 * ReservedIdentity, all of them, so the C twin test can compare both ways.
 * 0 is no identity at all (an address the ipcache does not know). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_UNMANAGED 3
#define IDENTITY_HEALTH 4
#define IDENTITY_INIT 5
#define IDENTITY_REMOTE_NODE 6
#define IDENTITY_KUBE_APISERVER 7
/* Never an address's identity: in a policy key, any peer of the endpoint's
 * own cluster (the `cluster` entity in one entry). */
#define IDENTITY_CLUSTER_PEERS 255

#endif
