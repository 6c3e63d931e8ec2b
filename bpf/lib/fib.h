/* SPDX-License-Identifier: Apache-2.0 */
/* FIB lookup and redirect out of the uplink for translated packets. */
#ifndef PYDP_LIB_FIB_H
#define PYDP_LIB_FIB_H

#include "lib/ip4.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define AF_INET 2

/* The route of a translated packet out of the uplink, looked up before translating (src:
 * p's source as it will be): 1 when it leaves through the uplink (fib filled; *ret the
 * lookup's result, SUCCESS or NO_NEIGH), 0 when the stack must route p untranslated -- the
 * route leaves elsewhere, there is none, or p is over the uplink's MTU (tot_len 0 makes the
 * kernel check the skb itself, GSO-aware; the stack then sends fragmentation needed). */
static __always_inline int fib4_via_uplink(struct __sk_buff *skb, const struct pkt *p,
					   __be32 src, __u32 uplink, struct bpf_fib_lookup *fib,
					   long *ret)
{
	fib->family = AF_INET;
	fib->tos = p->ip4->tos;
	fib->l4_protocol = p->l4_proto;
	fib->tot_len = 0;
	fib->ipv4_src = src;
	fib->ipv4_dst = p->ip4->daddr;
	fib->ifindex = uplink;
	*ret = bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT);
	return fib->ifindex == uplink &&
	       (*ret == BPF_FIB_LKUP_RET_SUCCESS || *ret == BPF_FIB_LKUP_RET_NO_NEIGH);
}

/* Send p (translated since fib4_via_uplink said yes) out of the uplink: one routed hop
 * (TTL), MACs from the neighbour table and bpf_redirect; with no neighbour entry yet,
 * bpf_redirect_neigh resolves it. Returns a TC verdict or a negative DROP_*. */
static __always_inline int fib4_redirect_uplink(struct pkt *p, const struct bpf_fib_lookup *fib,
						long lookup, __u32 uplink)
{
	int err = ip4_ttl_dec(p->ip4);

	if (err)
		return err;
	if (lookup == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(uplink, NULL, 0, 0);
	__builtin_memcpy(p->eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect(uplink, 0);
}

#endif
