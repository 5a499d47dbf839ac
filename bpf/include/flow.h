/* Observability: flow events (ring buffer) for new flows and every drop, and
 * per-CPU counters indexed by reason code. Rust twins in src/maps/flow.rs. */
#ifndef MESHWORK_FLOW_H
#define MESHWORK_FLOW_H

#include "common.h"
#include "drop.h"

#define FLOW_VERDICT_FORWARDED 1
#define FLOW_VERDICT_DROPPED 2
#define FLOW_VERDICT_TRANSLATED 3 /* socket LB rewrote a connect/sendmsg */
#define FLOW_VERDICT_AUDIT 4      /* policy would drop it; audit mode let it pass */

#define FLOW_OBS_FROM_POD 0 /* TC ingress on the host veth */
#define FLOW_OBS_TO_POD 1   /* TC egress on the host veth */
#define FLOW_OBS_SOCK 2     /* cgroup socket hook */
#define FLOW_OBS_FROM_NETDEV 3 /* TC ingress of the node's interface (NodePort, host firewall) */
#define FLOW_OBS_TO_NETDEV 4   /* TC egress of the node's interface (host firewall) */

struct flow_event {
	__u64 ts_ns;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 verdict;      /* FLOW_VERDICT_* */
	__u8 observation;  /* FLOW_OBS_* */
	__u8 pad;
	__u32 reason;      /* enum mw_reason */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u32 svc_id;      /* service the flow was translated for, 0 none */
	__u32 rule_id;     /* policy rule that decided, 0 none */
};
MW_ASSERT_SIZE(struct flow_event, 48);

struct metric_val {
	__u64 packets;
	__u64 bytes;
};
MW_ASSERT_SIZE(struct metric_val, 16);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metric_val);
	__uint(max_entries, REASON_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mw_metrics SEC(".maps");

static __always_inline void metrics_count(__u32 reason, __u64 bytes)
{
	__u32 key = reason < REASON_MAX ? reason : REASON_MAX - 1;
	struct metric_val *m = bpf_map_lookup_elem(&mw_metrics, &key);
	if (m) {
		m->packets += 1;
		m->bytes += bytes;
	}
}

/* Best effort: a full ring buffer loses the event, never the packet. */
static __always_inline void flow_emit(const struct flow_event *ev)
{
	bpf_ringbuf_output(&mw_flows, (void *)ev, sizeof(*ev), 0);
}

#endif
