/* SPDX-License-Identifier: Apache-2.0 */
/* Connection tracking on pydp_nat entries: TCP state, timeouts checked on lookup. */
#ifndef PYDP_LIB_CT_H
#define PYDP_LIB_CT_H

#include "lib/config.h"
#include "lib/endpoint.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define NS_PER_SEC 1000000000ULL

/* TCP flag bits (byte 13 of the header). */
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10

/* The TCP flags of p, 0 for other protocols. */
static __always_inline __u8 ct_tcp_flags(const struct pkt *p)
{
	if (p->l4_proto != IPPROTO_TCP || !p->l4)
		return 0;
	return ((const __u8 *)p->l4)[13];
}

/* Seconds an entry in state lives without traffic. */
static __always_inline __u64 ct_timeout_ns(__u8 proto, __u8 state)
{
	__u32 s;

	if (proto == IPPROTO_TCP) {
		if (state == CT_ESTABLISHED)
			s = CT_TIMEOUT_TCP_EST;
		else if (state == CT_CLOSING || state == CT_CLOSED)
			s = CT_TIMEOUT_TCP_CLOSE;
		else
			s = CT_TIMEOUT_TCP_SYN;
	} else if (proto == IPPROTO_UDP) {
		s = state == CT_ESTABLISHED ? CT_TIMEOUT_UDP_STREAM : CT_TIMEOUT_UDP;
	} else {
		s = CT_TIMEOUT_ICMP;
	}
	return (__u64)s * NS_PER_SEC;
}

/* The state of a connection's first packet. A TCP packet without SYN starts in CT_NEW
 * (short timeout) and becomes established on its next non-SYN packet, like Linux's loose
 * pickup, without giving stray ACKs a long-lived entry. */
static __always_inline __u8 ct_initial_state(__u8 tcp_flags)
{
	if (tcp_flags & TCP_F_RST)
		return CT_CLOSED;
	if (tcp_flags & TCP_F_FIN)
		return CT_CLOSING;
	if (tcp_flags & TCP_F_SYN)
		return CT_SYN;
	return CT_NEW;
}

/* The state after a packet; reply: the packet goes against the connection's direction. */
static __always_inline __u8 ct_next_state(__u8 proto, __u8 state, __u8 flags, int reply)
{
	if (proto != IPPROTO_TCP)
		return (reply || state == CT_ESTABLISHED) ? CT_ESTABLISHED : CT_NEW;
	if (flags & TCP_F_RST)
		return CT_CLOSED;
	if (flags & TCP_F_FIN)
		return CT_CLOSING;
	if (flags & TCP_F_SYN) {
		if (!(flags & TCP_F_ACK))
			return CT_SYN; /* a new SYN reopens a closed tuple */
		return state == CT_ESTABLISHED ? state : CT_SYN;
	}
	if (state == CT_SYN || state == CT_NEW)
		return CT_ESTABLISHED;
	return state;
}

/* Whether p, a TCP SYN without ACK, starts a new connection on the tuple of e's closed
 * (FIN or RST seen) one: it must be looked at as new, not follow the old one's NAT (whose
 * other entry another connection may own by now). */
static __always_inline int ct_tcp_reopens(const struct nat_key *k, const struct nat_entry *e,
					  const struct pkt *p)
{
	__u8 flags = ct_tcp_flags(p);

	return k->proto == IPPROTO_TCP && (flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN &&
	       (e->state == CT_CLOSED || e->state == CT_CLOSING);
}

/* The live entry for k, or NULL (absent or expired: an expired entry is a miss). */
static __always_inline struct nat_entry *ct_lookup(const struct nat_key *k, __u64 now)
{
	struct nat_entry *e = bpf_map_lookup_elem(&pydp_nat, k);

	if (e && e->expires < now)
		return NULL;
	return e;
}

/* The scope of the other side's EGRESS keys of e's connection (k is e's key): e's ifindex
 * names the interface the other side sends from (a service's client entry: the backend's;
 * its reply entry, an ingress entry: the container's); none, the side is on another node,
 * on k's network. */
static __always_inline __u16 ct_pair_scope(const struct nat_key *k, const struct nat_entry *e)
{
	return e->ifindex ? ep4_ifindex_scope(e->ifindex) : k->scope;
}

/* The key of the other direction's entry of e's connection (k is e's key). */
static __always_inline void ct_pair_key(const struct nat_key *k, const struct nat_entry *e,
					struct nat_key *pk)
{
	pk->proto = k->proto;
	pk->scope = 0;
	if (e->flags & NAT_F_SVC) {
		/* both entries EGRESS: client C:cp -> VIP:vp holds B:bp, B:bp -> C:cp holds VIP:vp */
		pk->dir = NAT_DIR_EGRESS;
		pk->scope = ct_pair_scope(k, e);
		if (e->flags & NAT_F_DNAT) {
			pk->saddr = e->addr;
			pk->daddr = k->saddr;
			pk->sport = e->port;
			pk->dport = k->sport;
		} else {
			pk->saddr = k->daddr;
			pk->daddr = e->addr;
			pk->sport = k->dport;
			pk->dport = e->port;
		}
		return;
	}
	if (k->dir == NAT_DIR_EGRESS) {
		pk->dir = NAT_DIR_INGRESS;
		pk->saddr = k->daddr;
		pk->daddr = e->addr;
		pk->sport = k->dport;
		pk->dport = e->port;
	} else {
		pk->dir = NAT_DIR_EGRESS;
		pk->scope = ct_pair_scope(k, e);
		pk->saddr = e->addr;
		pk->daddr = k->saddr;
		pk->sport = e->port;
		pk->dport = k->sport;
	}
}

/* Account a packet seen through entry e (key k): advance the state, push the deadline.
 * Most packets write nothing; a state change or a deadline moved by more than
 * CT_REFRESH_SLACK also updates the other direction's entry (one more lookup). */
static __always_inline void ct_advance(const struct nat_key *k, struct nat_entry *e,
				       const struct pkt *p, __u64 now)
{
	int reply = (e->flags & NAT_F_SVC)  ? !!(e->flags & NAT_F_SNAT) :
		    (e->flags & NAT_F_SNAT) ? k->dir == NAT_DIR_INGRESS :
					      k->dir == NAT_DIR_EGRESS;
	__u8 state = ct_next_state(k->proto, e->state, ct_tcp_flags(p), reply);
	__u64 expires = now + ct_timeout_ns(k->proto, state);
	struct nat_entry *pe;
	struct nat_key pk;

	if (state == e->state && expires - e->expires <= CT_REFRESH_SLACK * NS_PER_SEC)
		return;
	e->state = state;
	e->expires = expires;
	ct_pair_key(k, e, &pk);
	pe = bpf_map_lookup_elem(&pydp_nat, &pk);
	if (pe) {
		pe->state = state;
		pe->expires = expires;
	}
}

#endif
