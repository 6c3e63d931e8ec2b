/* SPDX-License-Identifier: Apache-2.0 */
/* Connection tracking with NAT (masquerade, published ports) and the published-port map. */
#ifndef PYDP_MAPS_NAT_H
#define PYDP_MAPS_NAT_H

#define PYDP_NAT_MAX 262144 /* max_entries of pydp_nat (LRU: two entries per connection) */

/* nat_key.dir: where the packet is seen. */
#define NAT_DIR_EGRESS 0  /* leaving a container (from_container): rewrite the source */
#define NAT_DIR_INGRESS 1 /* entering from the uplink (from_netdev): rewrite the destination */

/* Key of pydp_nat: a packet's 5-tuple as seen on the wire. For ICMP echo the identifier
 * sits in sport for requests and in dport for replies (the other port is 0). */
struct nat_key {
	__be32 saddr; /* source address, network order */
	__be32 daddr; /* destination address, network order */
	__be16 sport; /* source port (ICMP echo request: identifier), network order */
	__be16 dport; /* destination port (ICMP echo reply: identifier), network order */
	__u8 proto;   /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_ICMP */
	__u8 dir;     /* NAT_DIR_* */
	__u16 scope;  /* NAT_DIR_EGRESS: the endpoint key scope of the container that sends the
		       * packet (its overlay network's index; 0 on a bridge network), so two
		       * overlay networks sharing a subnet never share an entry; INGRESS: 0 */
};

/* nat_entry.state: conntrack state of the connection, kept in both of its entries. */
#define CT_NEW 0         /* UDP or ICMP seen one way only; TCP without a SYN seen */
#define CT_SYN 1         /* TCP: SYN seen, handshake not done */
#define CT_ESTABLISHED 2 /* TCP: a non-SYN packet after the SYN; UDP/ICMP: seen both ways */
#define CT_CLOSING 3     /* TCP: FIN seen */
#define CT_CLOSED 4      /* TCP: RST seen */

/* nat_entry.flags */
#define NAT_F_SNAT 1 /* the connection was masqueraded (started by a container) */
#define NAT_F_DNAT 2 /* the connection came in to a published port */
#define NAT_F_SVC 8 /* a connection to a service (VIP or published service port): with
		     * NAT_F_DNAT the client's entry (holds the backend), with NAT_F_SNAT
		     * the backend's reply entry (holds the VIP); both NAT_DIR_EGRESS */
#define NAT_F_MESH 16 /* the routing mesh: a published service port's connection to a backend on
		       * another node (four entries: see nat4_mesh_to in bpf/lib/nat.h) */
#define NAT_F_HAIRPIN 4 /* a container to a published port of its own host (four entries, all
			 * NAT_DIR_EGRESS: see nat4_hairpin_new in bpf/lib/nat.h) */

/* Value of pydp_nat: how to rewrite a packet matching the key. One entry per direction
 * (Cilium's shape): the egress entry of a masqueraded connection holds the translated
 * source, the ingress entry the original; a published port's the other way round. */
struct nat_entry {
	__u64 expires;  /* CLOCK_MONOTONIC ns (bpf_ktime_get_ns) after which the entry is dead */
	__be32 addr;    /* address to write: source (egress entries) or destination (ingress) */
	__be16 port;    /* port or ICMP identifier to write, network order */
	__u8 state;     /* CT_* */
	__u8 flags;     /* NAT_F_* */
	__u32 ifindex;  /* ingress entries: the endpoint's host-side veth to deliver to */
	__u8 dmac[6];   /* ingress entries: destination MAC (the endpoint's) */
	__u8 smac[6];   /* ingress entries: source MAC (the gateway MAC the endpoint knows) */
};

#define PYDP_PORTS_MAX 65536 /* max_entries of pydp_ports */

/* Key of pydp_ports: one published host port. */
struct port_key {
	__be32 addr;  /* host address published on, network order; 0: the uplink's address */
	__be16 port;  /* host port, network order */
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* Value of pydp_ports: where a published port leads (a range is one entry per port). */
struct port_target {
	__be32 addr;  /* container address (a local endpoint), network order */
	__be16 port;  /* container port, network order */
	__u16 flags;  /* PORT_F_* */
	__u32 scope;  /* the container's endpoint_key scope (its network's on an overlay) */
};

/* port_target.flags */
#define PORT_F_SERVICE 1 /* the port leads to a service: addr:port is its frontend (VIP,
			  * service port), the backend is picked as for the VIP */

#endif
