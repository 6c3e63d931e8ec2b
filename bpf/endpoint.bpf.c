// SPDX-License-Identifier: Apache-2.0
/* Programs on the host side of each container's veth: from_container at TC ingress. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/endpoint.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/overlay.h"

/* Traffic leaving a container: same-host IPv4 destinations are redirected
 * straight into the destination container, those on other nodes (overlay) into
 * the VXLAN tunnel; service VIPs are balanced; with an uplink configured, other
 * destinations are masqueraded (or a published port's replies translated back)
 * and sent out of the uplink; everything else goes to the stack. ARP for VIPs and
 * on overlay networks is answered here. */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct iface_info *me;
	struct endpoint_info *ep;
	struct pkt p = {};
	__u32 reason;
	int ret;

	ret = parse_pkt(data, data_end, &p);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	if (p.eth_proto == bpf_htons(ETH_P_ARP)) {
		ret = ep4_arp(skb, &p, &reason);
		return metrics_tc_exit(skb, ret, reason);
	}
	if (!p.ip4)
		return metrics_tc_exit(skb, TC_ACT_OK, REASON_PASS_NON_IP);
	me = ep4_iface(skb);
	ep = ep4_lookup(p.ip4->daddr, ep4_scope(me));
	if (!ep && ep4_scope(me))
		ep = ep4_lookup(p.ip4->daddr, 0); /* a bridge network's endpoint: isolated below */
	if (!ep) {
		ret = ov4_to_learned(skb, &p);
		if (ret != NAT_SKIP) {
			if (ret < 0)
				return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
			return metrics_tc_exit(skb, ret, REASON_TUNNEL_TX);
		}
		ret = nat4_from_container(skb, &p, me, &reason);
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
		return metrics_tc_exit(skb, ret, reason);
	}
	ret = ep4_check_source(skb, p.ip4->saddr, ep, me);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	if (ep->flags & ENDPOINT_F_REMOTE) {
		ret = ov4_to_remote(skb, &p, ep);
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
		return metrics_tc_exit(skb, ret, REASON_TUNNEL_TX);
	}
	ret = lb4_from_backend(skb, &p, me, &reason);
	if (ret != NAT_SKIP) {
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
		return metrics_tc_exit(skb, ret, reason);
	}
	ret = ep4_redirect(&p, ep);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	return metrics_tc_exit(skb, ret, REASON_REDIRECT);
}

char LICENSE[] SEC("license") = "GPL";
