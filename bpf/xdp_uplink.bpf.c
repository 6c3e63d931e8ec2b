// SPDX-License-Identifier: Apache-2.0
/* The uplink's XDP program: xdp_uplink, the fast path of from_netdev for published ports. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/nat.h"

/* Frames entering the host: TCP and UDP to published ports and masquerade replies are
 * translated and redirected to the endpoint's host-side veth; everything else goes on
 * (XDP_PASS) to from_netdev at TC ingress, which handles it all on its own. */
SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	__u32 reason;
	int ret;

	ret = parse_pkt(data, data_end, &p);
	if (ret < 0)
		return metrics_xdp_exit(ctx, XDP_PASS, REASON_XDP_PASS); /* TC counts the drop */
	if (!p.ip4)
		return metrics_xdp_exit(ctx, XDP_PASS, REASON_XDP_PASS);
	ret = nat4_from_netdev_xdp(ctx, &p, data_end, &reason);
	if (ret < 0)
		return metrics_xdp_exit(ctx, XDP_DROP, -ret);
	return metrics_xdp_exit(ctx, ret, reason);
}

char LICENSE[] SEC("license") = "GPL";
