/* SPDX-License-Identifier: Apache-2.0 */
/* Local endpoints: look an IPv4 destination up and deliver straight into its container. */
#ifndef PYDP_LIB_ENDPOINT_H
#define PYDP_LIB_ENDPOINT_H

#include "lib/maps.h"
#include "lib/parse.h"

/* Load-time constant: 1 to deliver with bpf_redirect_peer (into the container's
 * netns, skipping the host's stack and a backlog queue), 0 for bpf_redirect to
 * the host-side veth's egress (the peer then receives it). */
const volatile __u32 CFG_REDIRECT_PEER = 1;

/* The endpoint at addr in scope (an overlay network's index, 0 for host-unique addresses:
 * see struct endpoint_key), or NULL. */
static __always_inline struct endpoint_info *ep4_lookup(__be32 addr, __u32 scope)
{
	struct endpoint_key key = { .addr = addr, .scope = scope };

	return bpf_map_lookup_elem(&pydp_endpoints, &key);
}

/* The scope of the addresses the endpoint behind an interface reaches: its network's
 * index on an overlay network, else 0. */
static __always_inline __u32 ep4_scope(const struct iface_info *me)
{
	return me && (me->flags & IFACE_F_SCOPED) ? me->network : 0;
}

/* The scope of a network's endpoints (one array lookup). */
static __always_inline __u32 ep4_net_scope(__u32 network)
{
	const struct network_info *net = bpf_map_lookup_elem(&pydp_networks, &network);

	return net && net->vni ? network : 0;
}

/* The endpoint behind host interface ifindex (pydp_ifaces), or NULL. */
static __always_inline const struct iface_info *ep4_iface_of(__u32 ifindex)
{
	if (ifindex >= PYDP_IFACES_MAX)
		return NULL;
	return bpf_map_lookup_elem(&pydp_ifaces, &ifindex);
}

/* The endpoint behind skb's interface, or NULL: looked up once per packet by
 * from_container and handed to the steps that need it. */
static __always_inline const struct iface_info *ep4_iface(const struct __sk_buff *skb)
{
	return ep4_iface_of(skb->ifindex);
}

/* The scope from_container keys conntrack with for packets from host interface ifindex
 * (nat_key.scope); 0 for no interface. */
static __always_inline __u16 ep4_ifindex_scope(__u32 ifindex)
{
	return ifindex ? (__u16)ep4_scope(ep4_iface_of(ifindex)) : 0;
}

/* The scope of the conntrack keys of ep's packets: what from_container keys them with (its
 * interface's scope) for a local endpoint, what from_overlay keys them with (its network's)
 * for one on another node. */
static __always_inline __u16 ep4_ct_scope(const struct endpoint_info *ep)
{
	return ep->ifindex ? ep4_ifindex_scope(ep->ifindex) : (__u16)ep4_net_scope(ep->network);
}

/* Traffic between two local endpoints: the source must be the endpoint behind the
 * interface it came in on, and both must be on one network (Docker's isolation
 * between networks). An unknown source (not a local endpoint) is left to the stack's
 * rules. Returns 0 or a negative DROP_*. */
static __always_inline int ep4_check_source(const struct __sk_buff *skb, __be32 saddr,
					    const struct endpoint_info *dst,
					    const struct iface_info *me)
{
	const struct endpoint_info *src;

	/* the common case, the interface's own endpoint: me, one array lookup */
	if (me && me->addr && me->addr == saddr)
		return me->network != dst->network ? -DROP_NET_ISOLATED : 0;
	src = ep4_lookup(saddr, ep4_scope(me));
	if (!src)
		return 0;
	if (src->ifindex != skb->ifindex)
		return -DROP_SRC_SPOOFED;
	if (src->network != dst->network)
		return -DROP_NET_ISOLATED;
	return 0;
}

/* Rewrite the destination MAC to the endpoint's and redirect to it. Returns the
 * TC verdict, or -DROP_REDIRECT when the helper refuses. */
static __always_inline int ep4_redirect(struct pkt *p, const struct endpoint_info *ep)
{
	long ret;

	__builtin_memcpy(p->eth->h_dest, ep->mac, ETH_ALEN);
	if (CFG_REDIRECT_PEER)
		ret = bpf_redirect_peer(ep->ifindex, 0);
	else
		ret = bpf_redirect(ep->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return -DROP_REDIRECT;
	return TC_ACT_REDIRECT;
}

#endif
