// SPDX-License-Identifier: Apache-2.0
/* The program on the host's flow-based VXLAN device: from_overlay at its TC ingress. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/endpoint.h"
#include "lib/nat.h"
#include "lib/overlay.h"

#define ROUTER_OUI_0 0x02 /* overlay router MACs: 02:42:ff and the VNI (as the agent writes) */
#define ROUTER_OUI_1 0x42
#define ROUTER_OUI_2 0xff

/* A frame another node tunnelled here: its VNI must be the network's of the local
 * endpoint it is addressed to (two overlay networks stay apart even where their subnets
 * overlap on the wire); it is delivered straight into that endpoint's netns, from the
 * network's router MAC. Anything else is dropped with its reason. */
/* A peer that is no pydp node (a plain Linux vxlan device) asks, by ARP through the
 * tunnel, for an address of the network of the VNI: pydp nodes never send ARP (the
 * sender's program answers), so it is answered here, with the network's router MAC
 * (02:42:ff and the VNI), back through the tunnel to where it came from. Returns
 * TC_ACT_REDIRECT or a negative DROP_*. */
static __always_inline int ov4_arp_tunnel(struct __sk_buff *skb, struct pkt *p,
					  const struct bpf_tunnel_key *in)
{
	__u8 mac[ETH_ALEN] = { ROUTER_OUI_0, ROUTER_OUI_1, ROUTER_OUI_2,
			       (__u8)(in->tunnel_id >> 16), (__u8)(in->tunnel_id >> 8),
			       (__u8)in->tunnel_id };
	struct arp4 *arp = arp4_request(skb, p);

	if (!arp)
		return -DROP_TUNNEL_NO_EP;
	arp4_answer(p, arp, mac);
	return ov4_encap(skb, bpf_htonl(in->remote_ipv4), in->tunnel_id);
}

/* Learn the inner source of a frame out of the tunnel that no node announced (a plain vxlan
 * peer): replies to it go back to the outer source, with its VNI. */
static __always_inline void ov4_learn(const struct pkt *p, const struct bpf_tunnel_key *in,
				      __u32 scope)
{
	struct endpoint_key k = { .addr = p->ip4->saddr, .scope = scope };
	struct learned_info l = {};
	const struct learned_info *old;

	old = bpf_map_lookup_elem(&pydp_learned, &k);
	if (old && old->node == bpf_htonl(in->remote_ipv4) && old->vni == in->tunnel_id)
		return; /* known: no write per packet */
	l.node = bpf_htonl(in->remote_ipv4);
	l.vni = in->tunnel_id;
	__builtin_memcpy(l.mac, p->eth->h_source, ETH_ALEN);
	bpf_map_update_elem(&pydp_learned, &k, &l, BPF_ANY);
}

/* A service backend on another node answers a client of this one: the reply entry this
 * node wrote when it picked that backend (NAT_F_SVC | NAT_F_SNAT, key: backend -> client)
 * gives the VIP back as the source (p parsed again). Returns 0 (translated or no service
 * reply) or a negative DROP_*. */
static __always_inline int ov4_service_reply(struct __sk_buff *skb, struct pkt *p, __u32 network)
{
	struct nat_entry *e;
	struct nat_key k;
	__u64 now;

	if (!nat4_key_from_pkt(p, &k, NAT_DIR_EGRESS, network))
		return 0;
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (!e || (e->flags & (NAT_F_SVC | NAT_F_SNAT)) != (NAT_F_SVC | NAT_F_SNAT))
		return 0;
	ct_advance(&k, e, p, now);
	return nat4_rewrite_skb(skb, p, 0, e->addr, e->port);
}

/* The routing mesh: a backend on another node answers a client outside through this
 * node's mesh address (its R1 entry, NAT_F_MESH | NAT_F_SNAT, key: backend -> mesh
 * address): both sides translated back (the client's address, the published port as the
 * source), sent out of the uplink. Returns a TC verdict with *reason or a negative DROP_*. */
static __always_inline int ov4_mesh_reply(struct __sk_buff *skb, struct pkt *p, __u32 network,
					  __u32 *reason)
{
	const struct host_config *cfg = nat4_config();
	struct bpf_fib_lookup fib = {};
	struct nat_entry *e;
	struct nat_key k;
	long lookup;
	__u64 now;
	int ret;

	if (!cfg || !cfg->uplink_ifindex || !nat4_key_from_pkt(p, &k, NAT_DIR_EGRESS, network))
		return -DROP_NO_CT;
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (!e || (e->flags & (NAT_F_MESH | NAT_F_SNAT)) != (NAT_F_MESH | NAT_F_SNAT))
		return -DROP_NO_CT;
	ret = nat4_two_stage(skb, p, &k, e, now);
	if (ret)
		return ret;
	*reason = REASON_MESH_REPLY;
	if (e->ifindex)
		return nat4_deliver(p, e); /* the client is a container of this node */
	if (!fib4_via_uplink(skb, p, p->ip4->saddr, cfg->uplink_ifindex, &fib, &lookup))
		return -DROP_MESH_NO_ROUTE;
	return fib4_redirect_uplink(p, &fib, lookup, cfg->uplink_ifindex);
}

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct network_info *net;
	struct bpf_tunnel_key key = {};
	const struct endpoint_info *src;
	struct endpoint_info *ep;
	struct pkt p = {};
	__u32 network, reason, *scope;
	long ret;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_NO_TUNNEL);
	ret = parse_pkt(data, data_end, &p);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	if (p.eth_proto == bpf_htons(ETH_P_ARP)) {
		ret = ov4_arp_tunnel(skb, &p, &key);
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
		return metrics_tc_exit(skb, ret, REASON_ARP_TUNNEL);
	}
	if (!p.ip4)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_TUNNEL_NO_EP);
	network = key.tunnel_id;
	scope = bpf_map_lookup_elem(&pydp_vnis, &network); /* the VNI's network */
	if (!scope)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_VNI_MISMATCH);
	network = *scope;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net || !net->vni || net->vni != key.tunnel_id)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_VNI_MISMATCH);
	src = ep4_lookup(p.ip4->saddr, network);
	if (!src)
		ov4_learn(&p, &key, network);
	ep = ep4_lookup(p.ip4->daddr, network);
	if (!ep || (ep->flags & ENDPOINT_F_REMOTE) || !(ep->ifindex || (ep->flags & ENDPOINT_F_MESH)))
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_TUNNEL_NO_EP);
	if (ep->flags & ENDPOINT_F_MESH) {
		ret = ov4_mesh_reply(skb, &p, network, &reason);
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
		return metrics_tc_exit(skb, ret, reason);
	}
	if (src && (src->flags & ENDPOINT_F_LB_BACKEND)) {
		/* a service's backend: maybe a reply to a client here, through the VIP */
		ret = ov4_service_reply(skb, &p, network); /* the source rewritten: ep stays */
		if (ret < 0)
			return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	}
	if (!ep->ifindex)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_TUNNEL_NO_EP);
	__builtin_memcpy(p.eth->h_dest, ep->mac, ETH_ALEN);
	__builtin_memcpy(p.eth->h_source, net->gw_mac, ETH_ALEN);
	ret = bpf_redirect_peer(ep->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return metrics_tc_exit(skb, TC_ACT_SHOT, DROP_REDIRECT);
	return metrics_tc_exit(skb, TC_ACT_REDIRECT, REASON_TUNNEL_RX);
}

char LICENSE[] SEC("license") = "GPL";
