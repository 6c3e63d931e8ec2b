/* SPDX-License-Identifier: Apache-2.0 */
/* Host and network settings the datapath reads at run time: uplink, NAT range, subnets. */
#ifndef PYDP_MAPS_CONFIG_H
#define PYDP_MAPS_CONFIG_H

#define PYDP_CONFIG_KEY 0          /* the only key of pydp_config */
#define NAT_PORT_MIN_DEFAULT 32768 /* masquerade port range, like ip_local_port_range */
#define NAT_PORT_MAX_DEFAULT 60999

#define HOST_F_NONE 0

/* Value of pydp_config (an array of one entry, key PYDP_CONFIG_KEY). */
struct host_config {
	__u32 uplink_ifindex; /* the uplink's ifindex; 0: no uplink, masquerade and published ports off */
	__be32 uplink_addr;   /* the uplink's IPv4 address (masquerade source), network order */
	__u16 nat_port_min;   /* first masquerade port (or ICMP id), host order */
	__u16 nat_port_max;   /* last masquerade port, host order, >= nat_port_min */
	__u32 flags;          /* HOST_F_* */
	__u32 vxlan_ifindex;  /* the host's flow-based VXLAN device (overlay); 0: none */
};

#define PYDP_NETWORKS_MAX 4096 /* max_entries of pydp_networks: network indexes it can index */

#define NETWORK_F_NONE 0
#define NETWORK_F_MASQUERADE 1 /* masquerade traffic to outside every pydp subnet */

/* Value of pydp_networks, an array indexed by the network index (endpoint_info.network). */
struct network_info {
	__u32 flags;       /* NETWORK_F_* */
	__u8 gw_mac[6];    /* the network's gateway MAC: source of frames delivered after DNAT;
			    * overlay networks: the virtual router MAC every ARP is answered with */
	__u16 pad;
	__u32 vni;         /* overlay networks: the VXLAN network identifier; 0: a local network */
	__be32 mesh_addr;  /* overlay networks: this node's own address on it, the source of the
			    * routing mesh's connections to backends on other nodes; 0: none */
};

#define PYDP_SUBNETS_MAX 4096 /* max_entries of pydp_subnets */

/* Key of pydp_subnets (an LPM trie): prefix length, then the address. */
struct subnet_key {
	__u32 prefixlen; /* 0-32, host order (the LPM trie's own field) */
	__be32 addr;     /* network address, network order */
};

/* Value of pydp_subnets. The gateway took the place of a reserved field that was always
 * written 0 (same size and offsets): 0 still means "not given" and hairpin falls back to a
 * FIB lookup for the host's source address toward the subnet. */
struct subnet_info {
	__u32 network; /* index of the pydp network owning the subnet */
	__be32 gateway; /* the network's gateway (the host's address on it; hairpin SNAT source),
			 * network order; 0: not given */
};

#endif
