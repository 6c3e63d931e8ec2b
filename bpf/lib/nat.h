/* SPDX-License-Identifier: Apache-2.0 */
/* IPv4 NAT: masquerade (SNAT) of containers' traffic to the outside, published ports (DNAT)
 * from the uplink, reverse translation of replies and of ICMP errors quoting them. */
#ifndef PYDP_LIB_NAT_H
#define PYDP_LIB_NAT_H

#include "lib/config.h"
#include "lib/csum.h"
#include "lib/ct.h"
#include "lib/endpoint.h"
#include "lib/fib.h"
#include "lib/ip4.h"
#include "lib/lb.h"
#include "lib/overlay.h"
#include "lib/reply.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define NAT_SKIP 1 /* not for NAT: the packet goes on untouched */
#define NAT_MESH 3 /* nat4_dnat_new: the backend is on another node (the routing mesh) */

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PORT_UNREACH 3 /* code of ICMP_DEST_UNREACH */

static __always_inline const struct host_config *nat4_config(void)
{
	__u32 key = PYDP_CONFIG_KEY;

	return bpf_map_lookup_elem(&pydp_config, &key);
}

/* Fill k with p's tuple as seen in dir; false when p has none NAT handles (other
 * protocols, non-first fragments, ICMP other than echo). */
static __always_inline int nat4_key_from_pkt(const struct pkt *p, struct nat_key *k, __u8 dir,
					     __u32 scope)
{
	const struct icmp4hdr *ic;
	const struct udphdr *uh;

	if (!p->l4)
		return 0;
	k->saddr = p->ip4->saddr;
	k->daddr = p->ip4->daddr;
	k->proto = p->l4_proto;
	k->dir = dir;
	k->scope = (__u16)scope;
	switch (p->l4_proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP: /* ports at the same offsets in both */
		uh = p->l4;
		k->sport = uh->source;
		k->dport = uh->dest;
		return 1;
	case IPPROTO_ICMP:
		ic = p->l4;
		if (ic->type == ICMP_ECHO) {
			k->sport = ic->id;
			k->dport = 0;
			return 1;
		}
		if (ic->type == ICMP_ECHOREPLY) {
			k->sport = 0;
			k->dport = ic->id;
			return 1;
		}
		return 0;
	default:
		return 0;
	}
}

/* Rewrite p's source (dst = 0) or destination (dst = 1) address and port (ICMP echo: the
 * identifier) to addr:port, updating the IP, TCP/UDP (pseudo-header) and ICMP checksums
 * incrementally. A UDP checksum of 0 (none) stays 0; a computed 0 is sent as 0xffff. */
static __always_inline void nat4_rewrite(struct pkt *p, int dst, __be32 addr, __be16 port)
{
	struct iphdr *ip4 = p->ip4;
	__be32 *afield = dst ? &ip4->daddr : &ip4->saddr;
	__be32 old_addr = *afield;
	__sum16 *csum = NULL;
	__be16 *pfield, old_port;
	int pseudo = 1, udp = 0;

	csum_replace4(&ip4->check, old_addr, addr);
	*afield = addr;
	if (p->l4_proto == IPPROTO_TCP) {
		struct tcphdr *th = p->l4;

		pfield = dst ? &th->dest : &th->source;
		csum = &th->check;
	} else if (p->l4_proto == IPPROTO_UDP) {
		struct udphdr *uh = p->l4;

		pfield = dst ? &uh->dest : &uh->source;
		if (uh->check)
			csum = &uh->check;
		udp = 1;
	} else {
		struct icmp4hdr *ic = p->l4;

		pfield = &ic->id;
		csum = &ic->checksum;
		pseudo = 0;
	}
	old_port = *pfield;
	*pfield = port;
	if (!csum)
		return;
	if (pseudo)
		csum_replace4(csum, old_addr, addr);
	csum_replace2(csum, old_port, port);
	if (udp && !*csum)
		*csum = 0xffff;
}

/* TC: nat4_rewrite for an skb. A TCP/UDP checksum goes through the kernel's helper, which
 * knows what the skb's checksum state makes of the field: a full checksum is updated
 * (CHECKSUM_COMPLETE's skb->csum too, for the pseudo-header's address); the pseudo-header
 * seed of a CHECKSUM_PARTIAL skb (a local stack's offloaded send, e.g. a container's) takes
 * the address change only -- the device or skb_checksum_help completes it, ports included,
 * when the packet leaves. The helper may move the packet, so p is parsed again. Returns 0
 * or a negative DROP_*. */
static __always_inline int nat4_rewrite_skb(struct __sk_buff *skb, struct pkt *p, int dst,
					    __be32 addr, __be16 port)
{
	struct iphdr *ip4 = p->ip4;
	__be32 *afield = dst ? &ip4->daddr : &ip4->saddr;
	__be32 old_addr = *afield;
	struct udphdr *uh = p->l4; /* TCP's ports sit at the same offsets */
	__be16 *pfield = dst ? &uh->dest : &uh->source;
	__be16 old_port = *pfield;
	__u32 off, flags = 0;

	if (p->l4_proto == IPPROTO_ICMP) {
		nat4_rewrite(p, dst, addr, port); /* never offloaded; no pseudo-header */
		return 0;
	}
	off = (__u32)((void *)p->l4 - (void *)(long)skb->data);
	if (p->l4_proto == IPPROTO_TCP) {
		off += offsetof(struct tcphdr, check);
	} else {
		off += offsetof(struct udphdr, check);
		flags = BPF_F_MARK_MANGLED_0; /* 0 stays "no checksum"; a computed 0 is 0xffff */
	}
	csum_replace4(&ip4->check, old_addr, addr);
	*afield = addr;
	*pfield = port;
	if (bpf_l4_csum_replace(skb, off, old_addr, addr, flags | BPF_F_PSEUDO_HDR | 4) ||
	    bpf_l4_csum_replace(skb, off, old_port, port, flags | 2))
		return -DROP_INVALID_L4;
	__builtin_memset(p, 0, sizeof(*p));
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	return 0;
}

/* The network of the local endpoint that sent p in on skb's interface; false when the
 * source is no local endpoint behind that interface (then it is not masqueraded). */
static __always_inline int nat4_src_network(const struct __sk_buff *skb, __be32 saddr,
					    __u32 *network)
{
	const struct iface_info *me = ep4_iface(skb);
	const struct endpoint_info *src;

	if (me && me->addr && me->addr == saddr) {
		*network = me->network;
		return 1;
	}
	src = ep4_lookup(saddr, ep4_scope(me));
	if (!src || src->ifindex != skb->ifindex)
		return 0;
	*network = src->network;
	return 1;
}

/* Whether a host socket owns k's destination (k as seen on ingress: the socket's remote
 * is k's source). TCP listeners, request and time-wait sockets count. */
static __always_inline int nat4_host_socket(struct __sk_buff *skb, const struct nat_key *k)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = k->saddr;
	t.ipv4.daddr = k->daddr;
	t.ipv4.sport = k->sport;
	t.ipv4.dport = k->dport;
	if (k->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The port search of masquerade and hairpin: the first candidate (the original port, in
 * rk->dport) or ports of the NAT range from a start derived from the tuple, until the reply
 * tuple rk is free -- no live entry of another connection (owner is the reply entry to
 * write: an entry with its address, port and interface is the connection's own, which may
 * have it already; two overlay networks' containers may share address and port), no host
 * socket toward the same peer.
 * Returns the port (network order, >= 0) or -DROP_NAT_NO_PORT. A global function: the
 * verifier checks its loop once instead of once per caller and caller's state. */
__attribute__((noinline)) int nat4_port_search(struct __sk_buff *skb, struct nat_key *rk,
					       __u32 start, const struct nat_entry *owner)
{
	const struct host_config *cfg = nat4_config();
	__u64 now = bpf_ktime_get_ns();
	__u32 range, i;
	__be16 cand;

	if (!skb || !rk || !owner || !cfg)
		return -DROP_NAT_NO_PORT;
	cand = rk->dport;
	range = cfg->nat_port_max >= cfg->nat_port_min ?
			(__u32)cfg->nat_port_max - cfg->nat_port_min + 1 : 1;
	for (i = 0; i < NAT_PORT_TRIES; i++) {
		const struct nat_entry *old;

		if (i)
			cand = bpf_htons((__u16)(cfg->nat_port_min + (start + i) % range));
		rk->dport = cand;
		old = bpf_map_lookup_elem(&pydp_nat, rk);
		if (old && old->expires >= now &&
		    (old->addr != owner->addr || old->port != owner->port ||
		     old->ifindex != owner->ifindex))
			continue; /* taken by another live connection */
		if (rk->proto != IPPROTO_ICMP && nat4_host_socket(skb, rk))
			continue; /* the host's own connection from this port to the same peer */
		return cand;
	}
	return -DROP_NAT_NO_PORT;
}

/* A new masqueraded connection for p (tuple k, egress): keep the source port when the
 * reply tuple is free, else try ports of the configured range from a start derived from
 * the tuple. Writes the ingress entry (reply -> original, with the L2 to deliver it) and
 * the egress entry (original -> translated). Returns 0 with *port set, NAT_SKIP when p is
 * not to be masqueraded, or a negative DROP_*.
 * The default range is Linux's own ephemeral range, so a candidate a host socket holds
 * toward the same peer is skipped (one socket lookup per new connection, not per packet).
 * Two CPUs racing for one port may both win it (BPF_ANY): the later entry replaces the
 * earlier and one connection's replies are lost, as with an LRU eviction. */
__attribute__((noinline)) int nat4_snat_new(struct __sk_buff *skb, const struct nat_key *k,
					    __be16 *port)
{
	/* A global function (see nat4_port_search): the packet is parsed again. */
	const struct host_config *cfg = nat4_config();
	struct pkt pk = {}, *p = &pk;
	__u64 now = bpf_ktime_get_ns();
	struct subnet_key sk = { .prefixlen = 32 };
	const struct network_info *net;
	struct nat_entry rv = {}, fv = {};
	struct nat_key rk = {};
	__u32 network, start;
	int cand;

	if (!skb || !k || !port || !cfg)
		return -DROP_INVALID_IP;
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->ip4)
		return -DROP_INVALID_IP;
	if (!nat4_src_network(skb, k->saddr, &network))
		return NAT_SKIP;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	sk.addr = k->daddr;
	if (bpf_map_lookup_elem(&pydp_subnets, &sk))
		/* inside a pydp network: not masqueraded. An overlay endpoint reaches its own
		 * network's endpoints through the program only, never another network's. */
		return net && net->vni ? -DROP_NET_ISOLATED : NAT_SKIP;
	if (!net || !(net->flags & NETWORK_F_MASQUERADE))
		return NAT_SKIP;

	rv.state = ct_initial_state(ct_tcp_flags(p));
	rv.expires = now + ct_timeout_ns(k->proto, rv.state);
	rv.flags = NAT_F_SNAT;
	rv.addr = k->saddr;
	rv.port = k->sport;
	rv.ifindex = skb->ifindex;
	__builtin_memcpy(rv.dmac, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(rv.smac, p->eth->h_dest, ETH_ALEN);
	rk.saddr = k->daddr;
	rk.daddr = cfg->uplink_addr;
	rk.sport = k->dport;
	rk.proto = k->proto;
	rk.dir = NAT_DIR_INGRESS;

	start = (k->saddr ^ k->daddr ^ ((__u32)k->sport << 16 | k->dport)) * 2654435761u;
	rk.dport = k->sport;
	cand = nat4_port_search(skb, &rk, start, &rv);
	if (cand < 0)
		return cand;
	rk.dport = (__be16)cand;
	if (bpf_map_update_elem(&pydp_nat, &rk, &rv, BPF_ANY))
		return -DROP_CT_CREATE;
	fv = rv;
	fv.addr = cfg->uplink_addr;
	fv.port = (__be16)cand;
	fv.ifindex = 0;
	__builtin_memset(fv.dmac, 0, ETH_ALEN);
	__builtin_memset(fv.smac, 0, ETH_ALEN);
	if (bpf_map_update_elem(&pydp_nat, k, &fv, BPF_ANY))
		return -DROP_CT_CREATE;
	*port = (__be16)cand;
	return 0;
}

/* The published port k (a TCP or UDP tuple) is addressed to, or NULL. A wildcard entry
 * (address 0) matches the uplink's address only. */
static __always_inline const struct port_target *nat4_port_lookup(const struct host_config *cfg,
								   const struct nat_key *k)
{
	struct port_key pk = { .addr = k->daddr, .port = k->dport, .proto = k->proto };
	const struct port_target *t;

	if (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP)
		return NULL;
	t = bpf_map_lookup_elem(&pydp_ports, &pk);
	if (!t && k->daddr == cfg->uplink_addr) {
		pk.addr = 0;
		t = bpf_map_lookup_elem(&pydp_ports, &pk);
	}
	return t;
}

/* Where the published port k is addressed to leads: a container's addr:port, or for a
 * published service port the backend its table picks for k; *scope is its endpoint key's
 * scope. Returns 0, NAT_SKIP when no port is published there, or -DROP_LB_NO_BACKEND. */
static __always_inline int nat4_port_resolve(const struct host_config *cfg,
					     const struct nat_key *k, __be32 *addr, __be16 *port,
					     __u32 *scope)
{
	const struct port_target *t = nat4_port_lookup(cfg, k);
	const struct svc_info *svc;
	struct lb_backend be;
	int ret;

	if (!t)
		return NAT_SKIP;
	if (!(t->flags & PORT_F_SERVICE)) {
		*addr = t->addr;
		*port = t->port;
		*scope = t->scope;
		return 0;
	}
	svc = lb4_lookup(t->addr, t->port, k->proto);
	if (!svc)
		return -DROP_LB_NO_BACKEND;
	ret = lb4_select(svc, k->saddr, t->addr, k->sport, t->port, k->proto, &be);
	if (ret)
		return ret;
	*addr = be.addr;
	*port = be.port;
	*scope = ep4_net_scope(svc->network);
	return 0;
}

static __always_inline int nat4_hairpin(struct __sk_buff *skb, struct pkt *p,
					const struct nat_key *k, struct nat_entry *e, __u64 now,
					__u32 *reason);
static __always_inline int nat4_hairpin_new(struct __sk_buff *skb, struct pkt *p,
					    const struct host_config *cfg,
					    const struct nat_key *k, __u64 now, __u32 *reason);
__attribute__((noinline)) int nat4_hairpin_to(struct __sk_buff *skb, const struct nat_key *k,
					      __be32 baddr, __be16 bport, __u32 *reason);
__attribute__((noinline)) int nat4_mesh(struct __sk_buff *skb, const struct nat_key *k,
					__u32 *reason);
__attribute__((noinline)) int nat4_mesh_to(struct __sk_buff *skb, const struct nat_key *k,
					   __be32 baddr, __be16 bport, __u32 scope);

/* Deliver (TC) a packet of a service connection as entry e says, into the backend's or
 * the client's netns. The VIP is in the client's own subnet (answered by ARP), so this is
 * no routed hop: the TTL stays. Returns TC_ACT_REDIRECT or a negative DROP_*. */
static __always_inline int lb4_deliver(struct pkt *p, const struct nat_entry *e)
{
	long ret;

	__builtin_memcpy(p->eth->h_dest, e->dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, e->smac, ETH_ALEN);
	if (CFG_REDIRECT_PEER)
		ret = bpf_redirect_peer(e->ifindex, 0);
	else
		ret = bpf_redirect(e->ifindex, 0);
	return ret == TC_ACT_REDIRECT ? TC_ACT_REDIRECT : -DROP_REDIRECT;
}

/* A service packet translated toward a backend on another node (an overlay network's):
 * into the tunnel to its node. The backend's reply comes back through the tunnel, where
 * from_overlay gives it the VIP back (the reply entry lives here). */
static __always_inline int lb4_to_remote(struct pkt *p, __be32 backend, struct __sk_buff *skb)
{
	const struct endpoint_info *ep = ep4_lookup(backend, ep4_scope(ep4_iface(skb)));

	if (!ep || !(ep->flags & ENDPOINT_F_REMOTE))
		return -DROP_LB_NOT_LOCAL;
	return ov4_to_remote(skb, p, ep);
}

/* A packet of a tracked service connection (k, entry e with NAT_F_SVC): the client's goes
 * to the backend e holds (destination rewritten), the backend's reply back to the client
 * from the VIP (source rewritten). */
static __always_inline int lb4_tracked(struct __sk_buff *skb, struct pkt *p,
				       const struct nat_key *k, struct nat_entry *e, __u64 now,
				       __u32 *reason)
{
	int reply = !!(e->flags & NAT_F_SNAT);
	int ret;

	ct_advance(k, e, p, now);
	*reason = reply ? REASON_LB_REPLY : REASON_LB;
	ret = nat4_rewrite_skb(skb, p, !reply, e->addr, e->port);
	if (ret)
		return ret;
	if (!reply && !e->ifindex)
		return lb4_to_remote(p, e->addr, skb); /* a backend on another node */
	return lb4_deliver(p, e);
}

/* A new connection k from a local client to a frontend of svc: pick the backend, write the
 * pair of entries (both NAT_DIR_EGRESS: the client's, holding the backend, and the
 * backend's reply, holding the VIP; conntrack keeps the backend while the table changes),
 * translate and deliver. A client reaching itself through its service (hairpin) is
 * translated on both sides as for a published port (it sees the gateway as the source).
 * Only clients on the service's network reach it. Returns a TC verdict with *reason, or a
 * negative DROP_* (-DROP_LB_NO_BACKEND: an empty table). */
#define LB_HAIRPIN 100 /* lb4_new: the client is its own backend (in *hp): hairpin it */

__attribute__((noinline)) int lb4_new(struct __sk_buff *skb, const struct nat_key *k,
				      const struct svc_info *svc, __u32 *reason,
				      struct lb_backend *hp)
{
	/* A global function (see nat4_port_search): the packet is parsed again. */
	struct nat_entry fwd = {}, rev = {};
	const struct endpoint_info *ep;
	struct pkt pk = {}, *p = &pk;
	struct nat_key rk = {};
	struct lb_backend be;
	__u64 now;
	__u32 cnet;
	int ret;

	if (!skb || !k || !svc || !reason || !hp)
		return -DROP_INVALID_IP;
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	now = bpf_ktime_get_ns();
	if (!nat4_src_network(skb, k->saddr, &cnet) || cnet != svc->network)
		return -DROP_NET_ISOLATED;
	ret = lb4_select(svc, k->saddr, k->daddr, k->sport, k->dport, k->proto, &be);
	if (ret)
		return ret;
	if (be.addr == k->saddr) {
		*hp = be; /* the caller hairpins: two global calls deep would overflow the stack */
		return LB_HAIRPIN;
	}
	ep = ep4_lookup(be.addr, ep4_net_scope(svc->network));
	if (!ep)
		return -DROP_LB_NOT_LOCAL;
	rk.scope = ep4_ct_scope(ep); /* the backend's replies */

	fwd.state = ct_initial_state(ct_tcp_flags(p));
	fwd.expires = now + ct_timeout_ns(k->proto, fwd.state);
	fwd.flags = NAT_F_SVC | NAT_F_DNAT;
	fwd.addr = be.addr;
	fwd.port = be.port;
	fwd.ifindex = ep->ifindex; /* 0: on another node, through the tunnel */
	__builtin_memcpy(fwd.dmac, ep->mac, ETH_ALEN);
	__builtin_memcpy(fwd.smac, p->eth->h_dest, ETH_ALEN); /* the MAC the VIP answered with */
	rev.state = fwd.state;
	rev.expires = fwd.expires;
	rev.flags = NAT_F_SVC | NAT_F_SNAT;
	rev.addr = k->daddr;
	rev.port = k->dport;
	rev.ifindex = skb->ifindex;
	__builtin_memcpy(rev.dmac, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(rev.smac, p->eth->h_dest, ETH_ALEN);
	rk.saddr = be.addr;
	rk.daddr = k->saddr;
	rk.sport = be.port;
	rk.dport = k->sport;
	rk.proto = k->proto;
	rk.dir = NAT_DIR_EGRESS;
	if (bpf_map_update_elem(&pydp_nat, &rk, &rev, BPF_ANY) ||
	    bpf_map_update_elem(&pydp_nat, k, &fwd, BPF_ANY))
		return -DROP_CT_CREATE;
	*reason = REASON_LB;
	ret = nat4_rewrite_skb(skb, p, 1, be.addr, be.port);
	if (ret)
		return ret;
	if (!fwd.ifindex)
		return lb4_to_remote(p, be.addr, skb);
	return lb4_deliver(p, &fwd);
}

/* A service with no backend for k's packet p: TCP gets a reset, UDP a port unreachable
 * from the VIP (as a host with no socket there answers), sent back out of the interface it
 * came in on; counted DROP_LB_NO_BACKEND. Returns TC_ACT_REDIRECT or a negative DROP_*. */
__attribute__((noinline)) int lb4_reply(struct __sk_buff *skb, __be32 src)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};
	int ret;

	/* A global function: the verifier checks it once, not once per caller's state (the
	 * replies' loops would multiply the callers' paths). So it parses the packet again. */
	if (!skb || parse_pkt(data, data_end, &p) || !p.ip4)
		return -DROP_NO_REPLY;
	if (p.l4_proto == IPPROTO_TCP)
		ret = reply4_tcp_rst(skb, &p);
	else
		ret = reply4_icmp_unreach(skb, &p, ICMP_PORT_UNREACH, src);
	return ret;
}

static __always_inline int lb4_no_backend(struct __sk_buff *skb, const struct nat_key *k,
					  __u32 *reason)
{
	int ret = lb4_reply(skb, k->daddr);

	if (ret)
		return ret;
	*reason = DROP_LB_NO_BACKEND;
	return bpf_redirect(skb->ifindex, 0);
}

/* from_container, to a local endpoint from an endpoint that is some service's backend
 * (IFACE_F_LB_BACKEND): a reply of a service connection gets the VIP back as its source.
 * Returns NAT_SKIP for any other packet (plain local traffic). */
static __always_inline int lb4_from_backend(struct __sk_buff *skb, struct pkt *p,
					    const struct iface_info *me, __u32 *reason)
{
	struct nat_entry *e;
	struct nat_key k;
	__u64 now;

	if (!me || !(me->flags & IFACE_F_LB_BACKEND))
		return NAT_SKIP;
	if (!nat4_key_from_pkt(p, &k, NAT_DIR_EGRESS, ep4_scope(me)))
		return NAT_SKIP;
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (!e || (e->flags & (NAT_F_SVC | NAT_F_SNAT)) != (NAT_F_SVC | NAT_F_SNAT))
		return NAT_SKIP;
	return lb4_tracked(skb, p, &k, e, now, reason);
}

/* from_container, a destination that is no local endpoint: translate the source of a
 * tracked connection (masquerade, or a published port's reply) or masquerade a new one,
 * then send it out of the uplink. What the uplink cannot take (no route through it, over
 * its MTU, TTL <= 1) goes to the stack untranslated and writes no entry. Returns a TC
 * verdict with *reason, or a negative DROP_*. */
static __always_inline int nat4_from_container(struct __sk_buff *skb, struct pkt *p,
					       const struct iface_info *me, __u32 *reason)
{
	const struct host_config *cfg = nat4_config();
	struct bpf_fib_lookup fib = {};
	struct nat_entry *e;
	struct nat_key k;
	__be32 addr;
	__be16 port;
	long lookup;
	__u64 now;
	int ret;

	*reason = REASON_PASS;
	if (!cfg || !nat4_key_from_pkt(p, &k, NAT_DIR_EGRESS, ep4_scope(me)))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (e && (e->flags & NAT_F_SVC) && ct_tcp_reopens(&k, e, p))
		e = NULL; /* a new connection on a closed one's tuple: pick a backend again */
	if (e && (e->flags & NAT_F_SVC))
		return lb4_tracked(skb, p, &k, e, now, reason);
	if (e && (e->flags & NAT_F_HAIRPIN))
		return nat4_hairpin(skb, p, &k, e, now, reason);
	if (e && (e->flags & (NAT_F_MESH | NAT_F_DNAT)) == (NAT_F_MESH | NAT_F_DNAT))
		return nat4_mesh(skb, &k, reason); /* to its host's published port, tunnelled */
	if (!e && k.proto != IPPROTO_ICMP) {
		const struct svc_info *svc = lb4_lookup(k.daddr, k.dport, k.proto);

		if (svc) {
			struct lb_backend hp = {};

			ret = lb4_new(skb, &k, svc, reason, &hp);
			if (ret == -DROP_LB_NO_BACKEND)
				return lb4_no_backend(skb, &k, reason);
			if (ret == LB_HAIRPIN)
				return nat4_hairpin_to(skb, &k, hp.addr, hp.port, reason);
			return ret;
		}
	}
	if (!cfg->uplink_ifindex)
		return TC_ACT_OK;
	if (p->ip4->ttl <= 1) {
		/* The host is this packet's first router: its stack forwards nothing with TTL
		 * <= 1 and sends the ICMP time exceeded from the gateway (traceroute's first
		 * hop), or delivers it when the host itself is the destination. */
		*reason = REASON_TTL_TO_STACK;
		return TC_ACT_OK;
	}
	if (!e) {
		ret = nat4_hairpin_new(skb, p, cfg, &k, now, reason);
		if (ret != NAT_SKIP)
			return ret;
	}
	addr = e ? e->addr : cfg->uplink_addr;
	if (!fib4_via_uplink(skb, p, addr, cfg->uplink_ifindex, &fib, &lookup)) {
		*reason = REASON_NAT_FIB_MISS;
		return TC_ACT_OK;
	}
	if (e) {
		ct_advance(&k, e, p, now);
		*reason = (e->flags & NAT_F_DNAT) ? REASON_REV_NAT : REASON_SNAT;
		port = e->port;
	} else {
		ret = nat4_snat_new(skb, &k, &port);
		if (ret)
			return ret == NAT_SKIP ? TC_ACT_OK : ret;
		*reason = REASON_SNAT;
	}
	ret = nat4_rewrite_skb(skb, p, 0, addr, port);
	if (ret)
		return ret;
	return fib4_redirect_uplink(p, &fib, lookup, cfg->uplink_ifindex);
}

/* The L3/L2 half of delivering a translated packet to a local endpoint as entry e says
 * (TC and XDP alike): one routed hop (TTL), its MAC as destination, the gateway MAC it
 * knows as source. Returns 0 or a negative DROP_*. */
static __always_inline int nat4_deliver_l2(struct pkt *p, const struct nat_entry *e)
{
	int ret = ip4_ttl_dec(p->ip4);

	if (ret)
		return ret;
	__builtin_memcpy(p->eth->h_dest, e->dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, e->smac, ETH_ALEN);
	return 0;
}

/* Deliver a translated packet (TC) to the endpoint of entry e, into its netns. Returns
 * TC_ACT_REDIRECT or a negative DROP_*. */
static __always_inline int nat4_deliver(struct pkt *p, const struct nat_entry *e)
{
	long ret = nat4_deliver_l2(p, e);

	if (ret)
		return ret;
	if (CFG_REDIRECT_PEER)
		ret = bpf_redirect_peer(e->ifindex, 0);
	else
		ret = bpf_redirect(e->ifindex, 0);
	return ret == TC_ACT_REDIRECT ? TC_ACT_REDIRECT : -DROP_REDIRECT;
}

/* A new connection to a published port (tuple k, ingress): write both entries and fill
 * *in with the ingress one. Returns 0, NAT_SKIP when no port is published there, NAT_MESH
 * (in->addr, in->port: the backend, in->ifindex: its scope; nothing written) when a
 * published service port picked a backend on another node, or a negative DROP_*. Shared by from_netdev and xdp_uplink
 * (no skb). */
static __always_inline int nat4_dnat_new(const struct pkt *p, const struct host_config *cfg,
					 const struct nat_key *k, __u64 now, struct nat_entry *in)
{
	const struct endpoint_info *ep;
	const struct network_info *net;
	struct nat_entry out = {};
	struct nat_key ok = {};
	__u32 scope;
	__be32 addr;
	__be16 port;
	int ret;

	ret = nat4_port_resolve(cfg, k, &addr, &port, &scope);
	if (ret)
		return ret;
	ep = ep4_lookup(addr, scope);
	if (!ep)
		return -DROP_NAT_NO_EP;
	if (ep->flags & ENDPOINT_F_REMOTE) {
		in->addr = addr; /* a service's backend on another node: the routing mesh */
		in->port = port;
		in->ifindex = scope; /* no interface: the backend's scope */
		return NAT_MESH;
	}
	net = bpf_map_lookup_elem(&pydp_networks, &ep->network);

	in->state = ct_initial_state(ct_tcp_flags(p));
	in->expires = now + ct_timeout_ns(k->proto, in->state);
	in->flags = NAT_F_DNAT;
	in->addr = addr;
	in->port = port;
	in->ifindex = ep->ifindex;
	__builtin_memcpy(in->dmac, ep->mac, ETH_ALEN);
	if (net)
		__builtin_memcpy(in->smac, net->gw_mac, ETH_ALEN);
	else
		__builtin_memcpy(in->smac, p->eth->h_dest, ETH_ALEN);
	out.state = in->state;
	out.expires = in->expires;
	out.flags = NAT_F_DNAT;
	out.addr = k->daddr;
	out.port = k->dport;
	ok.saddr = addr;
	ok.daddr = k->saddr;
	ok.sport = port;
	ok.dport = k->sport;
	ok.proto = k->proto;
	ok.dir = NAT_DIR_EGRESS;
	ok.scope = ep4_ct_scope(ep);
	if (bpf_map_update_elem(&pydp_nat, &ok, &out, BPF_ANY))
		return -DROP_CT_CREATE;
	if (bpf_map_update_elem(&pydp_nat, k, in, BPF_ANY))
		return -DROP_CT_CREATE;
	return 0;
}

/* An ICMP error (destination unreachable, time exceeded) whose quote is a packet we
 * translated: translate the outer destination and the quoted source (address, port or
 * echo identifier) back, fixing the outer IP, inner IP, inner L4 (where the quote holds
 * it: UDP's always, TCP's when 20 bytes are quoted, as Linux does) and ICMP checksums,
 * and deliver. Anything else (the host's own errors) goes on untouched. */
static __always_inline int nat4_icmp_error(struct __sk_buff *skb, struct pkt *p, __u64 now,
					   __u32 *reason)
{
	void *data_end = (void *)(long)skb->data_end;
	struct icmp4hdr *ic = p->l4;
	struct iphdr *in = (void *)(ic + 1);
	__sum16 *l4csum = NULL, old_l4csum, old_ipcsum;
	__be16 *pfield, old_port, port;
	const struct nat_entry *e;
	struct nat_key k = {};
	int pseudo = 1, udp = 0;
	__be32 old_addr, addr;
	__u32 ihl;
	__u8 *l4;

	if ((void *)(in + 1) > data_end)
		return TC_ACT_OK;
	ihl = in->ihl * 4;
	if (in->version != 4 || ihl < sizeof(*in) || (in->frag_off & bpf_htons(IP_OFFSET_MASK)))
		return TC_ACT_OK;
	l4 = (void *)in + ihl;
	if (l4 + 8 > (__u8 *)data_end)
		return TC_ACT_OK;
	k.saddr = in->daddr;
	k.daddr = in->saddr;
	k.proto = in->protocol;
	k.dir = NAT_DIR_INGRESS;
	if (in->protocol == IPPROTO_TCP || in->protocol == IPPROTO_UDP) {
		pfield = (__be16 *)l4;
		k.sport = ((__be16 *)l4)[1];
		k.dport = *pfield;
		if (in->protocol == IPPROTO_UDP) {
			udp = 1;
			if (((struct udphdr *)l4)->check)
				l4csum = &((struct udphdr *)l4)->check;
		} else if (l4 + sizeof(struct tcphdr) <= (__u8 *)data_end) {
			l4csum = &((struct tcphdr *)l4)->check;
		}
	} else if (in->protocol == IPPROTO_ICMP && ((struct icmp4hdr *)l4)->type == ICMP_ECHO) {
		pfield = &((struct icmp4hdr *)l4)->id;
		k.dport = *pfield;
		l4csum = &((struct icmp4hdr *)l4)->checksum;
		pseudo = 0;
	} else {
		return TC_ACT_OK;
	}
	if (p->ip4->daddr != in->saddr)
		return TC_ACT_OK;
	e = ct_lookup(&k, now);
	if (!e)
		return TC_ACT_OK;
	addr = e->addr;
	port = e->port;

	old_addr = in->saddr;
	csum_replace4(&p->ip4->check, old_addr, addr);
	p->ip4->daddr = addr;
	old_ipcsum = in->check;
	csum_replace4(&in->check, old_addr, addr);
	in->saddr = addr;
	csum_replace4(&ic->checksum, old_addr, addr);
	csum_replace2(&ic->checksum, old_ipcsum, in->check);
	old_port = *pfield;
	*pfield = port;
	csum_replace2(&ic->checksum, old_port, port);
	if (l4csum) {
		old_l4csum = *l4csum;
		if (pseudo)
			csum_replace4(l4csum, old_addr, addr);
		csum_replace2(l4csum, old_port, port);
		if (udp && !*l4csum)
			*l4csum = 0xffff;
		csum_replace2(&ic->checksum, old_l4csum, *l4csum);
	}
	*reason = REASON_REV_NAT_ICMP;
	return nat4_deliver(p, e);
}

/* from_netdev: reverse-translate replies of masqueraded connections and ICMP errors about
 * them, translate connections to published ports, deliver to the endpoint. A reply to a
 * NAT port with no entry and no host socket is dropped; everything else is the host's
 * and goes on untouched. Returns a TC verdict with *reason, or a negative DROP_*. */
static __always_inline int nat4_from_netdev(struct __sk_buff *skb, struct pkt *p, __u32 *reason)
{
	const struct host_config *cfg = nat4_config();
	struct nat_entry *e, in = {};
	struct nat_key k;
	__u64 now;
	__u16 dport;
	int ret;

	*reason = REASON_PASS;
	if (!cfg || !cfg->uplink_ifindex)
		return TC_ACT_OK;
	if (p->l4 && p->l4_proto == IPPROTO_ICMP) {
		__u8 type = ((struct icmp4hdr *)p->l4)->type;

		if (type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED)
			return nat4_icmp_error(skb, p, bpf_ktime_get_ns(), reason);
	}
	if (!nat4_key_from_pkt(p, &k, NAT_DIR_INGRESS, 0))
		return TC_ACT_OK;
	if (ov4_is_tunnel(cfg, &k)) {
		/* another node's VXLAN frame: decapsulated here, or the stack gives it to
		 * pydp_vxlan */
		ret = ov4_decap(skb, reason);
		return ret == NAT_SKIP ? TC_ACT_OK : ret;
	}
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (e && (e->flags & NAT_F_MESH) && ct_tcp_reopens(&k, e, p))
		e = NULL; /* a new connection on a closed one's tuple: pick a backend again */
	if (e && (e->flags & NAT_F_MESH))
		return nat4_mesh(skb, &k, reason);
	if (e) {
		ct_advance(&k, e, p, now);
		*reason = (e->flags & NAT_F_DNAT) ? REASON_DNAT : REASON_REV_NAT;
		ret = nat4_rewrite_skb(skb, p, 1, e->addr, e->port);
		return ret ? ret : nat4_deliver(p, e);
	}
	ret = nat4_dnat_new(p, cfg, &k, now, &in);
	if (ret == -DROP_LB_NO_BACKEND)
		return lb4_no_backend(skb, &k, reason); /* a published service port */
	if (ret == NAT_MESH) {
		*reason = REASON_MESH;
		return nat4_mesh_to(skb, &k, in.addr, in.port, in.ifindex);
	}
	if (!ret) {
		*reason = REASON_DNAT;
		ret = nat4_rewrite_skb(skb, p, 1, in.addr, in.port);
		return ret ? ret : nat4_deliver(p, &in);
	}
	if (ret != NAT_SKIP)
		return ret;
	dport = bpf_ntohs(k.dport);
	if (k.proto != IPPROTO_ICMP && k.daddr == cfg->uplink_addr && dport >= cfg->nat_port_min &&
	    dport <= cfg->nat_port_max && !nat4_host_socket(skb, &k))
		return -DROP_NO_CT;
	return TC_ACT_OK;
}

/* Hairpin, the source address the backend B sees: the gateway address of B's network from
 * pydp_subnets, else the address the host's FIB prefers toward B (BPF_FIB_LOOKUP_SRC,
 * kernel >= 6.8; an input lookup from the client's interface, which needs forwarding on,
 * as any routed hop does). 0 when neither gives one. */
__attribute__((noinline)) __be32 nat4_fib_src(struct __sk_buff *skb, __be32 client,
					      __be32 backend, __u32 proto)
{
	/* global (see nat4_port_search): bpf_fib_lookup's 64-byte struct stays off the
	 * callers' frames */
	struct bpf_fib_lookup fib = {};
	long ret;

	if (!skb)
		return 0;
	fib.family = AF_INET;
	fib.l4_protocol = (__u8)proto;
	fib.ipv4_src = client;
	fib.ipv4_dst = backend;
	fib.ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib),
			     BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return fib.ipv4_src;
}

static __always_inline __be32 nat4_hairpin_src(struct __sk_buff *skb, const struct nat_key *k,
					       __be32 backend)
{
	struct subnet_key sk = { .prefixlen = 32, .addr = backend };
	const struct subnet_info *si = bpf_map_lookup_elem(&pydp_subnets, &sk);

	if (si && si->gateway)
		return si->gateway;
	return nat4_fib_src(skb, k->saddr, backend, k->proto);
}

/* A new two-stage connection (hairpin, routing mesh) of client C:cp (k) to the
 * frontend F:fp (k's destination), translated to backend B:bp and given the source S:sp:
 * the port search for sp (cp when free toward B:bp, else a port of the NAT range, a port a
 * host socket holds toward B:bp skipped), then three entries, flagged flag:
 *   R1  B:bp -> S:sp   dst := C:cp   (| NAT_F_SNAT; e's L2, if any, delivers it to C)
 *   R2  B:bp -> C:cp   src := F:fp
 *   K2  C:cp -> B:bp   src := S:sp
 * e is the caller's scratch entry: its state, deadline and R1's L2 set. B's keys (R1, R2)
 * carry bscope, the client's (K2) k's. Returns sp (network order, >= 0) or a negative
 * DROP_*; the caller writes K1 (k) last: it is the lookup key. */
static __always_inline int nat4_two_stage_new(struct __sk_buff *skb, const struct nat_key *k,
					      __be32 baddr, __be16 bport, __be32 src,
					      __u8 flag, struct nat_entry *e, __u32 bscope)
{
	struct nat_key kk = {};
	__u32 start;
	int cand;

	kk.scope = (__u16)bscope;
	kk.saddr = baddr;
	kk.daddr = src;
	kk.sport = bport;
	kk.dport = k->sport;
	kk.proto = k->proto;
	kk.dir = NAT_DIR_EGRESS;
	start = (k->saddr ^ baddr ^ ((__u32)k->sport << 16 | bport)) * 2654435761u;
	e->addr = k->saddr; /* R1's, as the port search's owner */
	e->port = k->sport;
	cand = nat4_port_search(skb, &kk, start, e);
	if (cand < 0)
		return cand;
	/* R1  B:bp -> S:sp   dst := C:cp */
	kk.dport = (__be16)cand;
	e->flags = flag | NAT_F_SNAT;
	if (bpf_map_update_elem(&pydp_nat, &kk, e, BPF_ANY))
		return -DROP_CT_CREATE;
	/* R2  B:bp -> C:cp   src := F:fp */
	kk.daddr = k->saddr;
	kk.dport = k->sport;
	e->flags = flag;
	e->addr = k->daddr;
	e->port = k->dport;
	e->ifindex = 0;
	__builtin_memset(e->dmac, 0, ETH_ALEN);
	__builtin_memset(e->smac, 0, ETH_ALEN);
	if (bpf_map_update_elem(&pydp_nat, &kk, e, BPF_ANY))
		return -DROP_CT_CREATE;
	/* K2  C:cp -> B:bp   src := S:sp */
	kk.scope = k->scope;
	kk.saddr = k->saddr;
	kk.daddr = baddr;
	kk.sport = k->sport;
	kk.dport = bport;
	e->addr = src;
	e->port = (__be16)cand;
	if (bpf_map_update_elem(&pydp_nat, &kk, e, BPF_ANY))
		return -DROP_CT_CREATE;
	return cand;
}

/* Hairpin: a container (C:cp) to a published port of its own host (H:hp) that leads to a
 * local backend (B:bp). As Docker's DNAT plus MASQUERADE on the bridge, B sees the source
 * G:gp, G the gateway address of B's network (routable, not link-local), so B's reply comes
 * back through from_container too. Four entries, all NAT_DIR_EGRESS (from_container sees
 * both directions), each rewriting one side:
 *   K1  C:cp -> H:hp   dst := B:bp, deliver to B    NAT_F_HAIRPIN | NAT_F_DNAT (original)
 *   K2  C:cp -> B:bp   src := G:gp                  NAT_F_HAIRPIN
 *   R1  B:bp -> G:gp   dst := C:cp, deliver to C    NAT_F_HAIRPIN | NAT_F_SNAT (reply)
 *   R2  B:bp -> C:cp   src := H:hp                  NAT_F_HAIRPIN
 * K2 and R2 are looked up after K1 and R1 only (their destination is a local endpoint, so
 * their tuples never reach the NAT lookup first). gp is cp when free, else a port of the
 * NAT range, as masquerade picks it; a port a host socket holds toward B:bp is skipped.
 * Returns a TC verdict with *reason, NAT_SKIP when k is no hairpin, or a negative DROP_*. */
__attribute__((noinline)) int nat4_hairpin_to(struct __sk_buff *skb, const struct nat_key *k,
					      __be32 baddr, __be16 bport, __u32 *reason)
{
	/* A global function, checked once by the verifier (see nat4_port_search): it takes
	 * the skb and scalars and parses the packet again; its four entries are written from
	 * one scratch entry, so its frame stays small (the stack holds 512 bytes for the
	 * whole call chain). */
	const struct host_config *cfg = nat4_config();
	struct pkt pk = {}, *p = &pk;
	const struct endpoint_info *ep;
	const struct network_info *net;
	struct nat_entry e = {};
	__be32 gw;
	int cand, ret;

	if (!skb || !k || !reason || !cfg)
		return -DROP_INVALID_IP;
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	/* the backend: on the client's network (a service), else on a bridge network */
	ep = ep4_lookup(baddr, ep4_scope(ep4_iface(skb)));
	if (!ep)
		ep = ep4_lookup(baddr, 0);
	if (!ep || (ep->flags & ENDPOINT_F_REMOTE) || !ep->ifindex)
		return -DROP_NAT_NO_EP;
	gw = nat4_hairpin_src(skb, k, baddr);
	if (!gw)
		return -DROP_HAIRPIN_NO_SRC;
	net = bpf_map_lookup_elem(&pydp_networks, &ep->network);

	e.state = ct_initial_state(ct_tcp_flags(p));
	e.expires = bpf_ktime_get_ns() + ct_timeout_ns(k->proto, e.state);
	e.ifindex = skb->ifindex; /* R1 (B:bp -> G:gp) is delivered to C */
	__builtin_memcpy(e.dmac, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(e.smac, p->eth->h_dest, ETH_ALEN); /* the gateway MAC C used */
	cand = nat4_two_stage_new(skb, k, baddr, bport, gw, NAT_F_HAIRPIN, &e, ep4_ct_scope(ep));
	if (cand < 0)
		return cand;
	/* K1  C:cp -> H:hp   dst := B:bp, deliver to B (written last: it is the lookup key) */
	e.flags = NAT_F_HAIRPIN | NAT_F_DNAT;
	e.addr = baddr;
	e.port = bport;
	e.ifindex = ep->ifindex;
	__builtin_memcpy(e.dmac, ep->mac, ETH_ALEN);
	if (net)
		__builtin_memcpy(e.smac, net->gw_mac, ETH_ALEN);
	else
		__builtin_memcpy(e.smac, p->eth->h_dest, ETH_ALEN);
	if (bpf_map_update_elem(&pydp_nat, k, &e, BPF_ANY))
		return -DROP_CT_CREATE;
	*reason = REASON_HAIRPIN;
	if ((ret = nat4_rewrite_skb(skb, p, 1, baddr, bport)) ||
	    (ret = nat4_rewrite_skb(skb, p, 0, gw, (__be16)cand)))
		return ret;
	return nat4_deliver(p, &e);
}

/* Hairpin, a new connection: k (a container's packet) to a published port of its own host
 * that leads to a local backend. Returns as nat4_hairpin_to, NAT_SKIP when k is none. */
static __always_inline int nat4_hairpin_new(struct __sk_buff *skb, struct pkt *p,
					    const struct host_config *cfg,
					    const struct nat_key *k, __u64 now, __u32 *reason)
{
	const struct endpoint_info *ep;
	__u32 cnet, scope;
	__be32 addr;
	__be16 port;
	int ret;

	if (!nat4_src_network(skb, k->saddr, &cnet))
		return NAT_SKIP;
	ret = nat4_port_resolve(cfg, k, &addr, &port, &scope);
	if (ret)
		return ret;
	ep = ep4_lookup(addr, scope);
	if (ep && (ep->flags & ENDPOINT_F_REMOTE)) {
		*reason = REASON_MESH; /* a published service port's backend on another node */
		ret = nat4_mesh_to(skb, k, addr, port, scope);
	} else {
		ret = nat4_hairpin_to(skb, k, addr, port, reason);
	}
	/* never NAT_SKIP (its verdicts are TC_ACT_REDIRECT or negative): the caller goes on
	 * with p only after NAT_SKIP, and a global function may have moved the packet */
	return ret == NAT_SKIP ? -DROP_REDIRECT : ret;
}

/* A tracked two-stage connection (hairpin, routing mesh): e, found under k, is the
 * client's first-stage entry (K1) or the backend's (R1); it rewrites the destination, the
 * second-stage entry under (k's source -> e's target) the source. The four entries keep
 * their state and deadline together. Every entry is NAT_DIR_EGRESS but a mesh
 * connection's K1, which from_netdev looks up as NAT_DIR_INGRESS. Rewrites both sides;
 * returns 0 or a negative DROP_*. */
static __always_inline int nat4_two_stage(struct __sk_buff *skb, struct pkt *p,
					  const struct nat_key *k, struct nat_entry *e, __u64 now)
{
	int reply = !!(e->flags & NAT_F_SNAT);
	struct nat_key k2 = {}, pk = {};
	struct nat_entry *e2, *pe;
	__u64 expires;
	__u8 state;
	int ret;

	k2.saddr = k->saddr;
	k2.daddr = e->addr;
	k2.sport = k->sport;
	k2.dport = e->port;
	k2.proto = k->proto;
	k2.dir = NAT_DIR_EGRESS;
	k2.scope = k->scope; /* the same side's second stage */
	e2 = bpf_map_lookup_elem(&pydp_nat, &k2);
	if (!e2)
		return -DROP_NO_CT;
	state = ct_next_state(k->proto, e->state, ct_tcp_flags(p), reply);
	expires = now + ct_timeout_ns(k->proto, state);
	if (state != e->state || expires - e->expires > CT_REFRESH_SLACK * NS_PER_SEC) {
		e->state = e2->state = state;
		e->expires = e2->expires = expires;
		/* the other direction: first stage {B|C, G|H}, second stage {B|C, C|B} */
		pk.saddr = e->addr;
		pk.daddr = e2->addr;
		pk.sport = e->port;
		pk.dport = e2->port;
		pk.proto = k->proto;
		/* a mesh connection's K1 is INGRESS when its client came in from the uplink
		 * (its R1 then delivers through the uplink: no ifindex) */
		pk.dir = (reply && (e->flags & NAT_F_MESH) && !e->ifindex) ? NAT_DIR_INGRESS :
									       NAT_DIR_EGRESS;
		/* the other side's scope: a mesh K1 holds B's in its ifindex; else e's ifindex
		 * names the other side's interface (none: a client outside, INGRESS) */
		if (!reply && (e->flags & NAT_F_MESH))
			pk.scope = (__u16)e->ifindex;
		else
			pk.scope = ep4_ifindex_scope(e->ifindex);
		pe = bpf_map_lookup_elem(&pydp_nat, &pk);
		if (pe) {
			pe->state = state;
			pe->expires = expires;
		}
		pk.daddr = k->saddr;
		pk.dport = k->sport;
		pk.dir = NAT_DIR_EGRESS;
		pe = bpf_map_lookup_elem(&pydp_nat, &pk);
		if (pe) {
			pe->state = state;
			pe->expires = expires;
		}
	}
	if ((ret = nat4_rewrite_skb(skb, p, 1, e->addr, e->port)) ||
	    (ret = nat4_rewrite_skb(skb, p, 0, e2->addr, e2->port)))
		return ret;
	return 0;
}

/* Hairpin, a tracked connection: e is K1 (the client's packet) or R1 (the backend's reply)
 * of nat4_hairpin_to, found under k: both sides rewritten, delivered as e says. */
static __always_inline int nat4_hairpin(struct __sk_buff *skb, struct pkt *p,
					const struct nat_key *k, struct nat_entry *e, __u64 now,
					__u32 *reason)
{
	int ret;

	*reason = (e->flags & NAT_F_SNAT) ? REASON_HAIRPIN_REPLY : REASON_HAIRPIN;
	ret = nat4_two_stage(skb, p, k, e, now);
	return ret ? ret : nat4_deliver(p, e);
}

/* The routing mesh: a client X:xp outside reaches a published service port U:up of this
 * node, whose table picked a backend B:bp on another node. As Docker's ingress, B sees the
 * connection from M:mp, M this node's own address on B's overlay network (its mesh
 * endpoint, announced to every node), so B's reply is tunnelled back here. Four entries,
 * each rewriting one side:
 *   K1  X:xp -> U:up   dst := B:bp, tunnel to B's node  NAT_F_MESH | NAT_F_DNAT, INGRESS
 *   K2  X:xp -> B:bp   src := M:mp                      NAT_F_MESH, EGRESS
 *   R1  B:bp -> M:mp   dst := X:xp, out of the uplink   NAT_F_MESH | NAT_F_SNAT, EGRESS
 *   R2  B:bp -> X:xp   src := U:up                      NAT_F_MESH, EGRESS
 * from_netdev finds K1, from_overlay R1; K2 and R2 are looked up after them only. mp is xp
 * when free toward B:bp, else a port of the NAT range; K1 keeps B's endpoint scope (in its
 * ifindex: a mesh entry delivers through the tunnel). Returns a TC verdict (the caller
 * counts REASON_MESH) or a negative DROP_*. */
__attribute__((noinline)) int nat4_mesh_to(struct __sk_buff *skb, const struct nat_key *k,
					   __be32 baddr, __be16 bport, __u32 scope)
{
	/* A global function (see nat4_port_search): the packet is parsed again, the four
	 * entries are written from one scratch entry. */
	struct pkt pk = {}, *p = &pk;
	const struct endpoint_info *ep;
	const struct network_info *net;
	struct nat_entry e = {};
	__u32 network;
	__be32 mesh;
	int cand, ret;

	if (!skb || !k)
		return -DROP_INVALID_IP;
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	ep = ep4_lookup(baddr, scope);
	if (!ep || !(ep->flags & ENDPOINT_F_REMOTE))
		return -DROP_LB_NOT_LOCAL;
	network = ep->network;
	net = bpf_map_lookup_elem(&pydp_networks, &network);
	if (!net || !net->mesh_addr)
		return -DROP_MESH_NO_ADDR;
	mesh = net->mesh_addr;

	e.state = ct_initial_state(ct_tcp_flags(p));
	e.expires = bpf_ktime_get_ns() + ct_timeout_ns(k->proto, e.state);
	if (k->dir == NAT_DIR_EGRESS) {
		/* a container of this node is the client (its host's published port): R1
		 * delivers the reply to it */
		e.ifindex = skb->ifindex;
		__builtin_memcpy(e.dmac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(e.smac, p->eth->h_dest, ETH_ALEN);
	}
	cand = nat4_two_stage_new(skb, k, baddr, bport, mesh, NAT_F_MESH, &e, ep4_ct_scope(ep));
	if (cand < 0)
		return cand;
	/* K1  X:xp -> U:up   dst := B:bp (written last: it is the lookup key) */
	e.flags = NAT_F_MESH | NAT_F_DNAT;
	e.addr = baddr;
	e.port = bport;
	e.ifindex = scope;
	if (bpf_map_update_elem(&pydp_nat, k, &e, BPF_ANY))
		return -DROP_CT_CREATE;
	if ((ret = nat4_rewrite_skb(skb, p, 1, baddr, bport)) ||
	    (ret = nat4_rewrite_skb(skb, p, 0, mesh, (__be16)cand)))
		return ret;
	return ov4_to_remote(skb, p, ep);
}

/* The routing mesh, a tracked connection: k is K1 (the client's packet, at from_netdev)
 * of nat4_mesh_to: both sides rewritten, tunnelled to the backend's node -- while it is
 * alive (its endpoints leave the map when its lease ends). A global function: from_netdev's
 * frame stays small enough for nat4_mesh_to's chain. */
__attribute__((noinline)) int nat4_mesh(struct __sk_buff *skb, const struct nat_key *k,
					__u32 *reason)
{
	struct pkt pk = {}, *p = &pk;
	const struct endpoint_info *ep;
	struct nat_entry *e;
	__u32 scope;
	__u64 now;
	int ret;

	if (!skb || !k || !reason)
		return -DROP_INVALID_IP;
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	now = bpf_ktime_get_ns();
	e = ct_lookup(k, now);
	if (!e)
		return -DROP_NO_CT;
	*reason = REASON_MESH;
	scope = e->ifindex;
	ret = nat4_two_stage(skb, p, k, e, now);
	if (ret)
		return ret;
	ep = ep4_lookup(p->ip4->daddr, scope);
	if (!ep || !(ep->flags & ENDPOINT_F_REMOTE))
		return -DROP_LB_NOT_LOCAL;
	return ov4_to_remote(skb, p, ep);
}

/* Deliver a translated frame (XDP) to the endpoint of entry e: out of its host-side veth
 * (XDP has no redirect_peer), so the container side receives it. Returns XDP_REDIRECT or
 * a negative DROP_*. */
static __always_inline int nat4_deliver_xdp(struct pkt *p, const struct nat_entry *e)
{
	long ret = nat4_deliver_l2(p, e);

	if (ret)
		return ret;
	ret = bpf_redirect(e->ifindex, 0);
	return ret == XDP_REDIRECT ? XDP_REDIRECT : -DROP_REDIRECT;
}

/* Checksum offload on the XDP path. A frame a local stack sent with checksum offload
 * (CHECKSUM_PARTIAL, e.g. from another namespace through a veth uplink) carries in its
 * TCP/UDP checksum field only the pseudo-header sum, uncomplemented: the skb says so, but
 * XDP sees no skb, and XDP_REDIRECT turns the frame into one the receiver must verify
 * (CHECKSUM_NONE). Such a frame gets its L4 checksum computed in full after translation;
 * one with a real checksum (any NIC) keeps the incremental update. */
#define NAT_XDP_CSUM_MAX 4096 /* longest L4 segment checksummed in full; longer: TC */
#define NAT_CSUM_CHUNK 256    /* bytes per bpf_csum_diff call */

/* The unfolded one's-complement sum of the IPv4 pseudo-header of p's L4 segment. */
static __always_inline __u32 nat4_pseudo_sum(const struct iphdr *ip4, __u32 l4_len)
{
	return (ip4->saddr & 0xffff) + (ip4->saddr >> 16) + (ip4->daddr & 0xffff) +
	       (ip4->daddr >> 16) + bpf_htons((__u16)ip4->protocol) + bpf_htons((__u16)l4_len);
}

/* p's TCP or UDP checksum field. */
static __always_inline __sum16 *nat4_l4_csum_field(const struct pkt *p)
{
	if (p->l4_proto == IPPROTO_TCP)
		return &((struct tcphdr *)p->l4)->check;
	return &((struct udphdr *)p->l4)->check;
}

/* The length of p's L4 segment from the IP header (padding after it excluded). */
static __always_inline __u32 nat4_l4_len(const struct pkt *p)
{
	return (__u32)bpf_ntohs(p->ip4->tot_len) - (__u32)((void *)p->l4 - (void *)p->ip4);
}

/* Whether p's TCP/UDP checksum field holds the pseudo-header seed of checksum offload (1),
 * a checksum (0), or a seed for a segment too long or cut short to checksum here (-1). */
static __always_inline int nat4_csum_partial(const struct pkt *p, void *data_end)
{
	__sum16 *c = nat4_l4_csum_field(p);
	__u32 len = nat4_l4_len(p);

	if (!*c || *c != csum_fold32(nat4_pseudo_sum(p->ip4, len)))
		return 0;
	if (len > NAT_XDP_CSUM_MAX || (void *)p->l4 + len > data_end)
		return -1;
	return 1;
}

/* Compute the frame's TCP/UDP checksum in full (pseudo-header, header, payload), as
 * offload would have. Returns 0 or -DROP_INVALID_IP when the segment is not all in the
 * frame. A global function: its loops are checked once by the verifier, not once per
 * caller's state (that took the XDP object's load from milliseconds to seconds); so it
 * parses the frame again. */
__attribute__((noinline)) int nat4_csum_full(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt pk = {}, *p = &pk;
	__sum16 *c;
	__u32 left;
	__u8 *pos;
	__u16 sum;
	__u64 s;
	long r;
	int i;

	if (!ctx || parse_pkt((void *)(long)ctx->data, data_end, p) || !p->l4)
		return -DROP_INVALID_IP;
	if (p->l4_proto != IPPROTO_TCP && p->l4_proto != IPPROTO_UDP)
		return -DROP_INVALID_IP;
	c = nat4_l4_csum_field(p);
	left = nat4_l4_len(p);
	pos = p->l4;
	if (left > NAT_XDP_CSUM_MAX)
		return -DROP_INVALID_IP;
	*c = 0;
	s = nat4_pseudo_sum(p->ip4, left);
	for (i = 0; i < NAT_XDP_CSUM_MAX / NAT_CSUM_CHUNK; i++) {
		if (left < NAT_CSUM_CHUNK)
			break;
		if (pos + NAT_CSUM_CHUNK > (__u8 *)data_end)
			return -DROP_INVALID_IP;
		r = bpf_csum_diff(NULL, 0, (__be32 *)pos, NAT_CSUM_CHUNK, 0);
		if (r < 0)
			return -DROP_INVALID_IP;
		s += (__u32)r;
		pos += NAT_CSUM_CHUNK;
		left -= NAT_CSUM_CHUNK;
	}
	for (i = 0; i < NAT_CSUM_CHUNK / 2; i++) {
		if (left < 2)
			break;
		/* keep clang from turning the check into arithmetic on data_end */
		asm volatile("" : "+r"(pos));
		if (pos + 2 > (__u8 *)data_end)
			return -DROP_INVALID_IP;
		s += *(__u16 *)pos;
		pos += 2;
		left -= 2;
	}
	if (left) { /* the odd last byte, the high half of a word padded with zero */
		if (pos + 1 > (__u8 *)data_end)
			return -DROP_INVALID_IP;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		s += *pos;
#else
		s += (__u32)*pos << 8;
#endif
	}
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	sum = (__u16)~csum_fold32((__u32)s);
	if (!sum && p->l4_proto == IPPROTO_UDP)
		sum = 0xffff; /* 0 is UDP's "no checksum" */
	*c = (__sum16)sum;
	return 0;
}

/* xdp_uplink, the fast path of nat4_from_netdev for TCP and UDP from outside: a tracked
 * connection's ingress entry (published port, masquerade reply) or a new connection to a
 * published port is translated and redirected before an skb exists, with the same
 * entries as TC. Everything else (ICMP and ICMP errors, fragments, misses, the host's own
 * traffic, the DROP_NO_CT decision that needs a socket lookup) is XDP_PASS to from_netdev,
 * complete on its own; so does TTL <= 1, and a checksum-offload frame too long to checksum
 * here (nat4_csum_partial). Returns an XDP verdict with *reason, or a negative DROP_*. */
static __always_inline int nat4_from_netdev_xdp(struct xdp_md *ctx, struct pkt *p, void *data_end,
						 __u32 *reason)
{
	const struct host_config *cfg = nat4_config();
	struct nat_entry *e, in = {};
	struct nat_key k;
	int ret, partial;
	__u64 now;

	*reason = REASON_XDP_PASS;
	if (!cfg || !cfg->uplink_ifindex || !p->l4)
		return XDP_PASS;
	if (p->l4_proto != IPPROTO_TCP && p->l4_proto != IPPROTO_UDP)
		return XDP_PASS;
	if (p->ip4->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK))
		return XDP_PASS;
	if (p->ip4->ttl <= 1)
		return XDP_PASS; /* from_netdev counts DROP_TTL_EXCEEDED if it is ours to route */
	if (!nat4_key_from_pkt(p, &k, NAT_DIR_INGRESS, 0) || ov4_is_tunnel(cfg, &k))
		return XDP_PASS;
	partial = nat4_csum_partial(p, data_end);
	if (partial < 0)
		return XDP_PASS;
	now = bpf_ktime_get_ns();
	e = ct_lookup(&k, now);
	if (e && (e->flags & NAT_F_MESH))
		return XDP_PASS; /* the routing mesh tunnels: from_netdev's */
	if (e) {
		ct_advance(&k, e, p, now);
		*reason = (e->flags & NAT_F_DNAT) ? REASON_XDP_DNAT : REASON_XDP_REV_NAT;
		nat4_rewrite(p, 1, e->addr, e->port);
		if (partial && (ret = nat4_csum_full(ctx)))
			return ret;
		return nat4_deliver_xdp(p, e);
	}
	ret = nat4_dnat_new(p, cfg, &k, now, &in);
	if (ret == NAT_SKIP || ret == NAT_MESH || ret == -DROP_LB_NO_BACKEND)
		return XDP_PASS; /* TC answers an empty service's clients, tunnels the mesh's */
	if (ret)
		return ret;
	*reason = REASON_XDP_DNAT;
	nat4_rewrite(p, 1, in.addr, in.port);
	if (partial && (ret = nat4_csum_full(ctx)))
		return ret;
	return nat4_deliver_xdp(p, &in);
}

#endif
