// SPDX-License-Identifier: Apache-2.0
/* The program on the host's flow-based VXLAN device: from_overlay at its TC ingress. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/endpoint.h"

/* A frame another node tunnelled here: its VNI must be the network's of the local
 * endpoint it is addressed to (two overlay networks stay apart even where their subnets
 * overlap on the wire); it is delivered straight into that endpoint's netns, from the
 * network's router MAC. Anything else is dropped with its reason. */
SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct network_info *net;
	struct bpf_tunnel_key key = {};
	struct endpoint_info *ep;
	struct pkt p = {};
	__u32 network;
	long ret;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_NO_TUNNEL);
	ret = parse_pkt(data, data_end, &p);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	if (!p.ip4)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_TUNNEL_NO_EP); /* ARP never crosses: answered at the sender */
	ep = ep4_lookup(p.ip4->daddr);
	if (!ep || (ep->flags & ENDPOINT_F_REMOTE) || !ep->ifindex)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_TUNNEL_NO_EP);
	network = ep->network;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net || !net->vni || net->vni != key.tunnel_id)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_VNI_MISMATCH);
	__builtin_memcpy(p.eth->h_dest, ep->mac, ETH_ALEN);
	__builtin_memcpy(p.eth->h_source, net->gw_mac, ETH_ALEN);
	ret = bpf_redirect_peer(ep->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_REDIRECT);
	return metrics_tc_exit(skb, TC_ACT_REDIRECT, REASON_TUNNEL_RX);
}

char LICENSE[] SEC("license") = "GPL";
