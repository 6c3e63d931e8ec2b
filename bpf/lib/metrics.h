/* SPDX-License-Identifier: Apache-2.0 */
/* The single exit of every program: count the packet under its reason, return the verdict. */
#ifndef PYDP_LIB_METRICS_H
#define PYDP_LIB_METRICS_H

#include "lib/maps.h"

static __always_inline void metrics_count(__u32 reason, __u64 bytes)
{
	struct metrics_value *m = bpf_map_lookup_elem(&pydp_metrics, &reason);

	if (m) {
		m->packets++;
		m->bytes += bytes;
	}
}

/* Count skb under reason and return verdict (a TC_ACT_* value). */
static __always_inline int metrics_tc_exit(struct __sk_buff *skb, int verdict, __u32 reason)
{
	metrics_count(reason, skb->len);
	return verdict;
}

/* Count an XDP frame under reason and return verdict (an XDP_* value). */
static __always_inline int metrics_xdp_exit(struct xdp_md *ctx, int verdict, __u32 reason)
{
	metrics_count(reason, (__u64)(ctx->data_end - ctx->data));
	return verdict;
}

#endif
