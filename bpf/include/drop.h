/* Verdict reason codes. Every dropped packet carries one; it indexes the
 * metrics array and is copied into the flow event. Rust twin: DropReason. */
#ifndef MESHWORK_DROP_H
#define MESHWORK_DROP_H

enum mw_reason {
	REASON_FORWARDED = 0,          /* not a drop: packet passed */
	REASON_POLICY_DENIED = 1,      /* an explicit deny rule matched */
	REASON_POLICY_DEFAULT_DENY = 2,/* endpoint is policy-enforced and no rule allowed */
	REASON_NO_SERVICE_BACKEND = 3, /* service frontend has no backends */
	REASON_BACKEND_MISSING = 4,    /* slot or Maglev entry points at an unknown backend */
	REASON_CT_MAP_FULL = 5,        /* conntrack insert failed */
	REASON_INVALID_PACKET = 6,     /* truncated or malformed headers */
	REASON_NAT_FAILED = 7,         /* rewriting addresses/checksums failed */
	REASON_ENCRYPTION_REQUIRED = 8,/* strict mode: would leave the node unencrypted */
	REASON_SOURCE_SPOOFED = 9,     /* a pod sent with a source address that is not its own */
	REASON_FRAGMENT_UNKNOWN = 10,  /* a later IPv4 fragment whose first fragment was not seen */
	REASON_UNSUPPORTED_L3_PROTOCOL = 11, /* neither IPv4 nor ARP (IPv6 is not supported yet) */
	REASON_SNAT_PORTS_EXHAUSTED = 12, /* masquerade: no free port towards this destination */
	REASON_NODEPORT_NO_SNAT_PATH = 13, /* NodePort backend on another node reached through a device without SNAT (WireGuard) */
	REASON_MAX = 32,               /* size of the metrics array */
};

#endif
