/* Socket load balancing (cgroup v2 sock_addr hooks): a connect() or sendmsg()
 * to a service frontend is sent to a backend chosen at that moment, so the
 * per-packet path never sees the ClusterIP. recvmsg()/getpeername() on UDP
 * sockets report the frontend again, so replies appear to come from the
 * ClusterIP. */
#include "include/common.h"
#include "include/drop.h"
#include "include/lb.h"
#include "include/flow.h"

char _license[] SEC("license") = "GPL";

#define SYS_REJECT 0
#define SYS_PROCEED 1

static __always_inline void sock_report(struct bpf_sock_addr *ctx, __u8 verdict, __u32 reason,
					__be32 daddr, __be16 dport, __u8 proto, __u32 svc_id)
{
	struct flow_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.daddr = daddr,
		.dport = dport,
		.proto = proto,
		.verdict = verdict,
		.observation = FLOW_OBS_SOCK,
		.reason = reason,
		.svc_id = svc_id,
	};
	flow_emit(&ev);
}

static __always_inline int sock4_forward(struct bpf_sock_addr *ctx, int connect)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = ctx->protocol;
	__u32 reason = 0;
	struct lb_svc_val *svc = lb_lookup_service(addr, port, proto);

	if (!svc)
		return SYS_PROCEED;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 backend_id = lb_select_backend(svc, (__u32)(cookie ^ (cookie >> 32)) * 2654435761u,
					     bpf_get_netns_cookie(ctx), 1, &reason);
	struct lb_backend *be = backend_id ? lb_lookup_backend(backend_id) : 0;
	if (!be) {
		if (!reason)
			reason = REASON_BACKEND_MISSING;
		metrics_count(reason, 0);
		sock_report(ctx, FLOW_VERDICT_DROPPED, reason, addr, port, proto, svc->svc_id);
		return SYS_REJECT;
	}
	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	if (proto == IPPROTO_UDP) {
		struct lb_sk_key key = { .cookie = cookie, .addr = be->addr, .port = be->port };
		struct lb_revnat val = { .addr = addr, .port = port };
		bpf_map_update_elem(&mw_sk_revnat, &key, &val, BPF_ANY);
	}
	if (connect)
		sock_report(ctx, FLOW_VERDICT_TRANSLATED, REASON_FORWARDED, addr, port, proto, svc->svc_id);
	return SYS_PROCEED;
}

static __always_inline int sock4_reverse(struct bpf_sock_addr *ctx)
{
	struct lb_sk_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb_revnat *rn = bpf_map_lookup_elem(&mw_sk_revnat, &key);
	if (rn) {
		ctx->user_ip4 = rn->addr;
		ctx->user_port = (__u32)rn->port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, 1);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, 0);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}
