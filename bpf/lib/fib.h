/* SPDX-License-Identifier: Apache-2.0 */
/* FIB lookup and redirect out of the uplink for translated packets. */
#ifndef PYDP_LIB_FIB_H
#define PYDP_LIB_FIB_H

#include "lib/ip4.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define AF_INET 2

/* Send p (already translated) out of the uplink: bpf_fib_lookup as output through it,
 * MACs from the neighbour table and bpf_redirect; with no neighbour entry yet,
 * bpf_redirect_neigh resolves it. When the route does not leave through the uplink (or
 * there is none) the translated packet goes to the stack, counted REASON_NAT_FIB_MISS.
 * Returns a TC verdict (*reason left as the caller set it on a redirect), or
 * -DROP_TTL_EXCEEDED. The TTL is decremented on a redirect only: the stack does its own. */
static __always_inline int fib4_redirect_uplink(struct __sk_buff *skb, struct pkt *p,
						__u32 uplink, __u32 *reason)
{
	struct bpf_fib_lookup fib = {};
	long ret;

	fib.family = AF_INET;
	fib.tos = p->ip4->tos;
	fib.l4_protocol = p->l4_proto;
	fib.tot_len = bpf_ntohs(p->ip4->tot_len);
	fib.ipv4_src = p->ip4->saddr;
	fib.ipv4_dst = p->ip4->daddr;
	fib.ifindex = uplink;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (fib.ifindex == uplink &&
	    (ret == BPF_FIB_LKUP_RET_SUCCESS || ret == BPF_FIB_LKUP_RET_NO_NEIGH)) {
		/* routed here, not by the stack: the hop's TTL decrement is ours */
		int err = ip4_ttl_dec(p->ip4);

		if (err)
			return err;
		if (ret == BPF_FIB_LKUP_RET_SUCCESS) {
			__builtin_memcpy(p->eth->h_dest, fib.dmac, ETH_ALEN);
			__builtin_memcpy(p->eth->h_source, fib.smac, ETH_ALEN);
			return bpf_redirect(uplink, 0);
		}
		if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
			return bpf_redirect_neigh(uplink, NULL, 0, 0);
	}
	*reason = REASON_NAT_FIB_MISS;
	return TC_ACT_OK;
}

#endif
