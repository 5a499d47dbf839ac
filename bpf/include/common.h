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

/* Reserved identities (DESIGN.md "Identities"). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

#endif
