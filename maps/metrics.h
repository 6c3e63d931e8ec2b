/* SPDX-License-Identifier: Apache-2.0 */
/* Verdicts and drop reasons, and the per-CPU counters the programs keep for each. */
#ifndef PYDP_MAPS_METRICS_H
#define PYDP_MAPS_METRICS_H

/* Index into pydp_metrics. Values below DROP_BASE are verdicts that let the
 * packet go on; DROP_BASE and above are drops. Helpers return 0 to go on or
 * the negated DROP_* value; entry programs count exactly one reason per packet.
 * Append only: the numbers are part of the kernel/user contract. */
enum pydp_reason {
	REASON_PASS = 0,       /* handed to the kernel's stack (TC_ACT_OK / XDP_PASS) */
	REASON_REDIRECT = 1,   /* redirected to a local endpoint */
	REASON_PASS_NON_IP = 2, /* not IPv4 (ARP, IPv6, ...): handed to the stack */
	REASON_SNAT = 3,        /* masqueraded and redirected out of the uplink */
	REASON_DNAT = 4,        /* to a published port: translated and delivered to the endpoint */
	REASON_REV_NAT = 5,     /* a reply translated back and delivered (or sent out the uplink) */
	REASON_REV_NAT_ICMP = 6, /* an ICMP error quoting a translated packet, translated back */
	REASON_NAT_FIB_MISS = 7, /* no route out of the uplink, or over its MTU: to the stack untranslated */
	REASON_XDP_DNAT = 8,     /* XDP: to a published port, translated and redirected to the endpoint */
	REASON_XDP_REV_NAT = 9,  /* XDP: a masquerade reply translated back and redirected */
	REASON_XDP_PASS = 10,    /* XDP: not for the fast path, passed on to from_netdev (TC) */
	REASON_HAIRPIN = 11,     /* container to a published port of its host: DNAT+SNAT, delivered */
	REASON_HAIRPIN_REPLY = 12, /* the backend's hairpin reply translated back and delivered */
	REASON_TTL_TO_STACK = 13, /* TTL <= 1 leaving a container: to the stack, which sends time exceeded */
	REASON_LB = 14,           /* to a service VIP: translated to its backend and delivered */
	REASON_LB_REPLY = 15,     /* a backend's reply to a local client: source back to the VIP */
	REASON_ARP_VIP = 16,      /* an ARP request for a service VIP, answered by the program */
	REASON_TUNNEL_TX = 17,    /* to an endpoint on another node: encapsulated (VXLAN) */
	REASON_TUNNEL_RX = 18,    /* from the VXLAN device: delivered to a local endpoint */
	REASON_ARP_OVERLAY = 19,  /* an ARP request on an overlay network, answered by the program */
	REASON_ARP_TUNNEL = 20,   /* an ARP request out of the tunnel (a plain vxlan peer), answered */
	REASON_MESH = 21,         /* routing mesh: to a published service port whose backend is on
				   * another node: DNAT to it, SNAT to this node's mesh address, tunnelled */
	REASON_MESH_REPLY = 22,   /* routing mesh: the backend's reply, out of the tunnel, translated
				   * back and sent out of the uplink */
	REASON_TUNNEL_DECAP = 23, /* another node's VXLAN frame decapsulated at the uplink's TC
				   * ingress and delivered to a local endpoint (the stack's UDP
				   * receive, the VXLAN device and from_overlay skipped) */
	DROP_BASE = 128,
	DROP_INVALID_ETH = 129, /* Ethernet header truncated */
	DROP_INVALID_IP = 130,  /* IPv4 header truncated, ihl < 5, or version != 4 */
	DROP_INVALID_L4 = 131,  /* TCP/UDP/ICMP header truncated */
	DROP_REDIRECT = 132,    /* the redirect helper refused the target */
	DROP_NET_ISOLATED = 133, /* source and destination endpoints are on different networks */
	DROP_SRC_SPOOFED = 134, /* source address belongs to another local endpoint */
	DROP_NAT_NO_PORT = 135, /* masquerade found no free port in NAT_PORT_TRIES tries */
	DROP_NO_CT = 136,       /* to a NAT port of the uplink with no conntrack entry nor socket */
	DROP_NAT_NO_EP = 137,   /* a published port leads to an address that is no local endpoint */
	DROP_CT_CREATE = 138,   /* writing a conntrack/NAT entry failed */
	DROP_TTL_EXCEEDED = 139, /* TTL <= 1 on a path pydp routes in from the uplink */
	DROP_HAIRPIN_NO_SRC = 140, /* hairpin: no gateway address for the backend's network */
	DROP_LB_NO_BACKEND = 141, /* a service without backends: TCP gets a RST, UDP an ICMP error */
	DROP_LB_NOT_LOCAL = 142,  /* the picked backend is no endpoint here nor on a live node */
	DROP_NO_REPLY = 143,      /* no reply may answer it (a RST, an ICMP error, a fragment, a
				   * broadcast, a GSO skb), or the reply could not be built */
	DROP_NO_TUNNEL = 144,     /* overlay: no VXLAN device, or the tunnel key was refused */
	DROP_VNI_MISMATCH = 145,  /* overlay: the packet's VNI is no overlay network of this host's */
	DROP_TUNNEL_NO_EP = 146,  /* overlay: from the tunnel to no local endpoint */
	DROP_MESH_NO_ADDR = 147,  /* routing mesh: this node has no address on the backend's network */
	DROP_MESH_NO_ROUTE = 148, /* routing mesh: a reply out of the tunnel with no route out of the
				   * uplink toward its client */
};

#define PYDP_METRICS_MAX 256 /* entries in pydp_metrics: one per enum pydp_reason value */

/* Value of pydp_metrics (per-CPU array indexed by enum pydp_reason). */
struct metrics_value {
	__u64 packets; /* packets counted with this reason */
	__u64 bytes;   /* their bytes, as skb->len / XDP frame length */
};

#endif
