/* SPDX-License-Identifier: Apache-2.0 */
/* The endpoint map: which local container holds an IPv4 address, and how to reach it. */
#ifndef PYDP_MAPS_ENDPOINT_H
#define PYDP_MAPS_ENDPOINT_H

#define PYDP_ENDPOINTS_MAX 65536 /* max_entries of pydp_endpoints */

/* Key of pydp_endpoints. */
struct endpoint_key {
	__be32 addr;  /* endpoint IPv4 address, network order */
	__u32 scope;  /* overlay networks: the network's index (their subnets may overlap, on
		       * one host too); 0: an address unique on the host (bridge networks) */
};

/* Value of pydp_endpoints. */
struct endpoint_info {
	__u32 ifindex;     /* host-side veth ifindex; the container side is its peer (0: remote) */
	__u32 network;     /* index of the endpoint's network: networks are isolated */
	__u8 mac[6];       /* container interface MAC: destination of redirected frames */
	__u16 flags;       /* ENDPOINT_F_* */
	__be32 node;       /* ENDPOINT_F_REMOTE: the underlay IPv4 address of its node */
};

#define ENDPOINT_F_NONE 0
#define ENDPOINT_F_REMOTE 2 /* on another node (overlay): reached through the VXLAN device */
#define ENDPOINT_F_MESH 4 /* this node's own address on an overlay network (the routing mesh's
			   * source toward other nodes' backends): no interface */
#define ENDPOINT_F_LB_BACKEND 1 /* a service's backend: pydp_ifaces carries IFACE_F_LB_BACKEND;
				 * on another node, its frames out of the tunnel are looked up
				 * for service replies */

#define PYDP_VNIS_MAX 16384 /* max_entries of pydp_vnis: overlay networks a host holds */
#define PYDP_LEARNED_MAX 16384 /* max_entries of pydp_learned (LRU) */

/* Value of pydp_learned (key: struct endpoint_key): an overlay address that no node of
 * the store announced but that came out of the tunnel -- a host running no pydp, with a
 * plain Linux vxlan device -- learned from the frame, as a Linux vxlan device learns. */
struct learned_info {
	__be32 node;   /* the outer source address it came from: where replies go */
	__u32 vni;     /* the VNI it came with */
	__u8 mac[6];   /* its inner source MAC */
	__u16 pad;
};

#define PYDP_IFACES_MAX 65536 /* max_entries of pydp_ifaces: host ifindexes it can index */

/* Value of pydp_ifaces, an array indexed by the host-side veth's ifindex: the endpoint
 * behind each interface, so that a packet's source is checked with an array lookup. */
struct iface_info {
	__be32 addr;   /* the endpoint's IPv4 address, network order; 0: no endpoint */
	__u32 network; /* the endpoint's network index */
	__u32 flags;   /* IFACE_F_* */
};

/* iface_info.flags */
#define IFACE_F_LB_BACKEND 1 /* the endpoint is a service's backend: its replies to local
			      * clients are looked up for reverse translation (VIP source) */
#define IFACE_F_SCOPED 2     /* the endpoint is on an overlay network: the addresses it
			      * reaches are keyed with its network as their scope */

#endif
