/* SPDX-License-Identifier: Apache-2.0 */
/* Service load balancing: frontend lookup, backend selection (Maglev or random), the ARP
 * answer for a VIP. The translation itself is NAT's (lib/nat.h): a service connection is
 * a pair of conntrack entries that remember the backend. */
#ifndef PYDP_LIB_LB_H
#define PYDP_LIB_LB_H

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"

/* The frontend (vip, port, proto), or NULL. */
static __always_inline const struct svc_info *lb4_lookup(__be32 vip, __be16 port, __u8 proto)
{
	struct svc_key key = { .vip = vip, .port = port, .proto = proto };

	return bpf_map_lookup_elem(&pydp_services, &key);
}

/* murmur3's 32-bit finalizer: every input bit moves every output bit. */
static __always_inline __u32 lb4_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* A flow's hash for its Maglev slot: the 5-tuple, with no per-host seed, so that every
 * host with the same table sends a flow to the same backend (the routing mesh needs it). */
static __always_inline __u32 lb4_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
				      __u8 proto)
{
	__u32 h = lb4_mix(saddr ^ 0x9e3779b9);

	h = lb4_mix(h ^ daddr);
	h = lb4_mix(h ^ ((__u32)sport << 16 | dport));
	return lb4_mix(h ^ proto);
}

/* Pick the backend of a new connection (saddr:sport -> frontend) from svc's table: the
 * slot of the flow's hash in a Maglev table, a random slot otherwise. A backend port 0
 * means the frontend's port. Returns 0 with *be filled, or -DROP_LB_NO_BACKEND. */
static __always_inline int lb4_select(const struct svc_info *svc, __be32 saddr, __be32 vip,
				      __be16 sport, __be16 port, __u8 proto,
				      struct lb_backend *be)
{
	const struct lb_backend *slot;
	__u32 index = svc->index, size = svc->size, n;
	void *table;

	if (!size)
		return -DROP_LB_NO_BACKEND;
	table = bpf_map_lookup_elem(&pydp_lb_tables, &index);
	if (!table)
		return -DROP_LB_NO_BACKEND;
	if (svc->flags & SVC_F_MAGLEV)
		n = lb4_hash(saddr, vip, sport, port, proto) % size;
	else
		n = bpf_get_prandom_u32() % size;
	slot = bpf_map_lookup_elem(table, &n);
	if (!slot || !slot->addr)
		return -DROP_LB_NO_BACKEND;
	*be = *slot;
	if (!be->port)
		be->port = port;
	return 0;
}

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* An ARP packet for IPv4 over Ethernet. */
struct arp4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

/* The ARP request for IPv4 over Ethernet in p (a request for the sender's own address --
 * duplicate address detection -- excluded), or NULL. */
static __always_inline struct arp4 *arp4_request(struct __sk_buff *skb, struct pkt *p)
{
	void *data_end = (void *)(long)skb->data_end;
	struct arp4 *arp = (void *)(p->eth + 1);

	if ((void *)(arp + 1) > data_end)
		return NULL;
	if (arp->op != bpf_htons(ARPOP_REQUEST) || arp->htype != bpf_htons(ARPHRD_ETHER) ||
	    arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != ETH_ALEN || arp->plen != 4 ||
	    !arp->tpa || arp->tpa == arp->spa)
		return NULL;
	return arp;
}

/* Turn the request arp (in p) into its reply: the address asked is at mac; the frame goes
 * back to the asker. */
static __always_inline void arp4_answer(struct pkt *p, struct arp4 *arp, const __u8 *mac)
{
	__be32 target = arp->tpa;

	arp->op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, ETH_ALEN);
	arp->tpa = arp->spa;
	__builtin_memcpy(arp->sha, mac, ETH_ALEN);
	arp->spa = target;
	__builtin_memcpy(p->eth->h_dest, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, mac, ETH_ALEN);
}

/* A VIP has no interface, so nobody would answer a client's ARP for it (VIPs come from
 * the network's own subnet): an ARP request for a VIP of the network the sender is on is
 * answered here with the network's gateway MAC (frames to it come back through
 * from_container, which translates them) and sent back out of the interface. Returns
 * TC_ACT_REDIRECT, or TC_ACT_OK for any other frame (the stack's). */
static __always_inline int lb4_arp_reply(struct __sk_buff *skb, struct pkt *p, __u32 network)
{
	struct arp4 *arp = arp4_request(skb, p);
	const struct network_info *net;
	const struct svc_info *svc;

	if (!arp)
		return TC_ACT_OK;
	svc = lb4_lookup(arp->tpa, 0, 0);
	if (!svc || svc->network != network)
		return TC_ACT_OK;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net)
		return TC_ACT_OK;
	arp4_answer(p, arp, net->gw_mac);
	return bpf_redirect(skb->ifindex, 0);
}

#endif
