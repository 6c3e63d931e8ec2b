/* SPDX-License-Identifier: Apache-2.0 */
/* Service load balancing: frontends (VIP, port, protocol) -> service -> backend table. */
#ifndef PYDP_MAPS_LB_H
#define PYDP_MAPS_LB_H

#define PYDP_SERVICES_MAX 262144 /* max_entries of pydp_services: frontends and VIP marks
				  * (not preallocated: memory follows what is programmed) */
#define PYDP_LB_TABLES_MAX 131072 /* max_entries of pydp_lb_tables: service indexes (1 MB of
				   * pointers: tables are allocated only for services) */

/* Key of pydp_services. A frontend has its port and protocol; each VIP also has one entry
 * with port 0 and proto 0 (its mark: from_container answers ARP for it). */
struct svc_key {
	__be32 vip;  /* the service's virtual IPv4 address, network order */
	__be16 port; /* frontend port, network order; 0 in the VIP's mark */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP; 0 in the VIP's mark */
	__u8 pad;
};

/* svc_info.flags */
#define SVC_F_MAGLEV 1 /* the table is a Maglev table: a flow's hash picks its slot */
#define SVC_F_RANDOM 2 /* the table lists the backends: a random slot per connection */

/* Value of pydp_services: which table serves the frontend and how to pick from it. */
struct svc_info {
	__u32 index;   /* the service's index: key of its table in pydp_lb_tables */
	__u32 size;    /* slots of the table (Maglev M, or the backends for random); 0: none */
	__u32 network; /* the service's network index (isolation, as for endpoints) */
	__u32 sig;     /* the agent's signature of the table's contents (0 in the VIP's mark) */
	__u16 flags;   /* SVC_F_* */
	__u16 pad;
};

/* A slot of a service's table (the inner arrays of pydp_lb_tables). */
struct lb_backend {
	__be32 addr; /* backend IPv4 address, network order; 0: an empty slot */
	__be16 port; /* backend port, network order; 0: the frontend's port */
	__u16 pad;
};

#endif
