/* SPDX-License-Identifier: Apache-2.0 */
/* Overlay networks: endpoints on other nodes reached through the host's one flow-based
 * VXLAN device (`external`: no per-network device, no FDB or ARP entries), the tunnel key
 * (VNI, remote node) set by the program; ARP on overlay networks answered by the program. */
#ifndef PYDP_LIB_OVERLAY_H
#define PYDP_LIB_OVERLAY_H

#include "lib/common.h"
#include "lib/endpoint.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define OV_TUNNEL_TTL 64
#define OV_VXLAN_PORT 4789 /* the VXLAN device's UDP port (pydp_vxlan, as the agent makes it) */

#ifndef NAT_SKIP
#define NAT_SKIP 1 /* not for this step: the packet goes on */
#endif

/* Whether a frame entering from the uplink (tuple k, as NAT sees it) is VXLAN to this host:
 * it goes to the stack and the VXLAN device untouched, without NAT's lookups (no published
 * port or NAT port can be the device's own). */
static __always_inline int ov4_is_tunnel(const struct host_config *cfg, const struct nat_key *k)
{
	return cfg->vxlan_ifindex && k->proto == IPPROTO_UDP &&
	       k->dport == bpf_htons(OV_VXLAN_PORT) && k->daddr == cfg->uplink_addr;
}

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7) /* kernel >= 6.3; older UAPI headers lack it */
#endif
#define OV_VXLAN_FLAG_VNI 0x08000000 /* the VXLAN header's I flag: the VNI is valid */
#define OV_INNER_ETH_LEN 14

struct ov_vxlanhdr {
	__be32 flags;
	__be32 vni; /* the VNI in the upper 24 bits */
};

/* The receive fast path, at the uplink's TC ingress: a VXLAN frame from another pydp node
 * to a local endpoint of one of this host's overlay networks, sent by an endpoint that
 * node announced, is decapsulated here and delivered straight into the container -- the
 * stack's UDP receive, the VXLAN device (its GRO cell, a metadata dst per frame) and
 * from_overlay are skipped. Anything else goes the device's way (NAT_SKIP): ARP, a source
 * no node announced (a plain vxlan peer: learned there), a service backend's frames (their
 * replies may need the VIP back) and the mesh's, fragments, IP options.
 * GSO super-frames (a veth's, or GRO's on a NIC) are taken too, their gso_size kept (it is
 * the inner MSS): this is where throughput gains, one decap per 64 KB. This kernel's
 * adjust_room has no flag that clears a tunnel GSO type on decap, so the skb keeps
 * SKB_GSO_UDP_TUNNEL and skb->encapsulation. The container's stack ignores both. Forwarded
 * by the container, software GSO segments it by its TCP header, and a re-encapsulating
 * tunnel finds inner header offsets that are right (the pop leaves the inner headers where
 * they were). Untested: a NIC with UDP-tunnel TSO handed such a frame.
 * Returns TC_ACT_REDIRECT with *reason, NAT_SKIP, or a negative DROP_*. A global function:
 * its frame stays off from_netdev's (the stack holds 512 bytes per call chain), so it
 * parses the frame again. */
__attribute__((noinline)) int ov4_decap(struct __sk_buff *skb, __u32 *reason)
{
	void *data_end, *data;
	const struct endpoint_info *src, *dst;
	const struct network_info *net;
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__u32 vni, network, ifindex, *scope;
	struct ov_vxlanhdr *vx;
	struct iphdr *iip;
	struct ethhdr *ieth, *eth;
	struct pkt pk = {}, *p = &pk;
	int outer;

	if (!skb || !reason)
		return NAT_SKIP;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (parse_pkt(data, data_end, p) || !p->ip4 || !p->l4 || p->l4_proto != IPPROTO_UDP)
		return NAT_SKIP;
	vx = (void *)((struct udphdr *)p->l4 + 1);
	ieth = (void *)(vx + 1);
	iip = (void *)(ieth + 1);
	if ((void *)(iip + 1) > data_end)
		return NAT_SKIP;
	if (p->ip4->ihl != 5 || (p->ip4->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK)))
		return NAT_SKIP;
	if (!(vx->flags & bpf_htonl(OV_VXLAN_FLAG_VNI)) || ieth->h_proto != bpf_htons(ETH_P_IP) ||
	    iip->version != 4)
		return NAT_SKIP;
	vni = bpf_ntohl(vx->vni) >> 8;
	scope = bpf_map_lookup_elem(&pydp_vnis, &vni);
	if (!scope)
		return NAT_SKIP;
	network = *scope;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net || net->vni != vni)
		return NAT_SKIP;
	src = ep4_lookup(iip->saddr, network);
	if (!src || (src->flags & (ENDPOINT_F_LB_BACKEND | ENDPOINT_F_MESH)) ||
	    !(src->flags & ENDPOINT_F_REMOTE) || src->node != p->ip4->saddr)
		return NAT_SKIP;
	dst = ep4_lookup(iip->daddr, network);
	if (!dst || !dst->ifindex || (dst->flags & (ENDPOINT_F_REMOTE | ENDPOINT_F_MESH)))
		return NAT_SKIP;
	ifindex = dst->ifindex;
	__builtin_memcpy(dmac, dst->mac, ETH_ALEN);
	__builtin_memcpy(smac, net->gw_mac, ETH_ALEN);
	/* outer IPv4, UDP and VXLAN headers and the inner Ethernet header go; the outer
	 * Ethernet header is kept, rewritten */
	outer = sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(*vx) + OV_INNER_ETH_LEN;
	if (bpf_skb_adjust_room(skb, -outer, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
		return NAT_SKIP; /* unchanged: the device's way */
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -DROP_INVALID_ETH;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	*reason = REASON_TUNNEL_DECAP;
	return bpf_redirect_peer(ifindex, 0) == TC_ACT_REDIRECT ? TC_ACT_REDIRECT : -DROP_REDIRECT;
}

/* Tunnel p (a frame from a local endpoint, its L2 already set) to node with vni. A global
 * function: the 44-byte tunnel key stays off its callers' frames (the routing mesh's
 * chain from from_container is at the 512-byte stack limit). */
__attribute__((noinline)) int ov4_encap(struct __sk_buff *skb, __be32 node, __u32 vni)
{
	__u32 key0 = PYDP_CONFIG_KEY;
	const struct host_config *cfg = bpf_map_lookup_elem(&pydp_config, &key0);
	struct bpf_tunnel_key key = {};

	if (!skb || !cfg || !cfg->vxlan_ifindex || !node || !vni)
		return -DROP_NO_TUNNEL;
	key.remote_ipv4 = bpf_ntohl(node);
	key.tunnel_id = vni;
	key.tunnel_ttl = OV_TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
		return -DROP_NO_TUNNEL;
	if (bpf_redirect(cfg->vxlan_ifindex, 0) != TC_ACT_REDIRECT)
		return -DROP_NO_TUNNEL;
	return TC_ACT_REDIRECT;
}

/* Send p, from a local endpoint, to ep on another node: the tunnel key carries the VNI of
 * ep's network and ep's node as the outer destination; the VXLAN device builds the outer
 * headers (UDP source port from the inner flow's hash, RFC 7348). The inner frame goes
 * from the network's router MAC to ep's MAC, as the receiving node delivers it. Returns
 * TC_ACT_REDIRECT or a negative DROP_*. */
static __always_inline int ov4_to_remote(struct __sk_buff *skb, struct pkt *p,
					 const struct endpoint_info *ep)
{
	__u32 network = ep->network;
	const struct network_info *net = bpf_map_lookup_elem(&pydp_networks, &network);

	if (!net || !net->vni)
		return -DROP_NO_TUNNEL;
	__builtin_memcpy(p->eth->h_dest, ep->mac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, net->gw_mac, ETH_ALEN);
	return ov4_encap(skb, ep->node, net->vni);
}

/* from_container, a destination no node announced, from an endpoint of an overlay network:
 * an address learned from the tunnel (a plain vxlan peer, pydp_learned) with this
 * network's VNI is tunnelled back to where it came from. NAT_SKIP for anything else. */
static __always_inline int ov4_to_learned(struct __sk_buff *skb, struct pkt *p)
{
	struct endpoint_key k = { .addr = p->ip4->daddr };
	__u32 ifindex = skb->ifindex, network;
	const struct network_info *net;
	const struct learned_info *l;
	const struct iface_info *me;

	if (ifindex >= PYDP_IFACES_MAX)
		return NAT_SKIP;
	me = bpf_map_lookup_elem(&pydp_ifaces, &ifindex);
	if (!me || !me->addr)
		return NAT_SKIP;
	network = me->network;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net || !net->vni)
		return NAT_SKIP;
	k.scope = network;
	l = bpf_map_lookup_elem(&pydp_learned, &k);
	if (!l || l->vni != net->vni)
		return NAT_SKIP;
	__builtin_memcpy(p->eth->h_dest, l->mac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, net->gw_mac, ETH_ALEN);
	return ov4_encap(skb, l->node, l->vni);
}

/* An ARP request on an overlay network (there is no bridge: every address, the gateway's
 * and the other endpoints', local or remote, is behind the program): answered with the
 * network's router MAC, unless it asks for the sender's own address (duplicate address
 * detection). Returns TC_ACT_REDIRECT for an answer, TC_ACT_OK otherwise. */
static __always_inline int ov4_arp_reply(struct __sk_buff *skb, struct pkt *p,
					 const struct network_info *net)
{
	struct arp4 *arp = arp4_request(skb, p);

	if (!arp)
		return TC_ACT_OK;
	arp4_answer(p, arp, net->gw_mac);
	return bpf_redirect(skb->ifindex, 0);
}

/* from_container, an ARP frame from the endpoint behind skb's interface: on an overlay
 * network every request is answered (ov4_arp_reply); on a bridge network only one for a
 * service VIP of its network (lb4_arp_reply), the rest going to the bridge. Returns the
 * verdict with *reason. */
static __always_inline int ep4_arp(struct __sk_buff *skb, struct pkt *p, __u32 *reason)
{
	__u32 ifindex = skb->ifindex, network;
	const struct network_info *net;
	const struct iface_info *me;
	int ret;

	*reason = REASON_PASS_NON_IP;
	if (ifindex >= PYDP_IFACES_MAX)
		return TC_ACT_OK;
	me = bpf_map_lookup_elem(&pydp_ifaces, &ifindex);
	if (!me || !me->addr)
		return TC_ACT_OK;
	network = me->network;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (net && net->vni) {
		ret = ov4_arp_reply(skb, p, net);
		if (ret == TC_ACT_REDIRECT)
			*reason = REASON_ARP_OVERLAY;
		return ret;
	}
	ret = lb4_arp_reply(skb, p, network);
	if (ret == TC_ACT_REDIRECT)
		*reason = REASON_ARP_VIP;
	return ret;
}

#endif
