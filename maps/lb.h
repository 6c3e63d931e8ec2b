/* SPDX-License-Identifier: Apache-2.0 */
/* Service load balancing: frontends (VIP, port, protocol) -> service -> backend table. */
#ifndef PYDP_MAPS_LB_H
#define PYDP_MAPS_LB_H

#define PYDP_SERVICES_MAX 262144 /* max_entries of pydp_services: frontends and VIP marks
				  * (not preallocated: memory follows what is programmed) */
#define PYDP_LB_TABLES_MAX 262144 /* max_entries of pydp_lb_tables: table slots (2 MB of
				   * pointers: tables are allocated only for slots in use). A
				   * service's table changes by moving to a spare slot, so slots
				   * outnumber services: every one's, spares, and quarantined ones */

/* Key of pydp_services. A frontend has its port and protocol; each VIP also has one entry
 * with port 0 and proto 0 (its mark: from_container answers ARP for it; the agent reads
 * which service the VIP's frontends belong to from it). */
struct svc_key {
	__be32 vip;  /* the service's virtual IPv4 address, network order */
	__be16 port; /* frontend port, network order; 0 in the VIP's mark */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP; 0 in the VIP's mark */
	__u8 pad;
};

/* svc_info.flags */
#define SVC_F_MAGLEV 1 /* the table is a Maglev table: a flow's hash picks its slot */
#define SVC_F_RANDOM 2 /* the table lists the backends: a random slot per connection */

/* Value of pydp_services: which table serves the frontend and how to pick from it. A table
 * is never written while a frontend names it: the agent writes a new table into a slot no
 * frontend names, then points the frontends at it (see maps/lb.py, LbTables). */
struct svc_info {
	__u32 index;   /* a frontend's: its table's slot in pydp_lb_tables (0: none); the VIP
			* mark's: the service's index (the agent's bookkeeping) */
	__u32 size;    /* slots of the table (Maglev M, or the backends for random); 0: none */
	__u32 network; /* the service's network index (isolation, as for endpoints) */
	__u32 sig;     /* the agent's signature of the table's contents (0 in the VIP's mark) */
	__u16 flags;   /* SVC_F_* */
	__u16 pad;
};

/* A slot of a service's table (the inner arrays of pydp_lb_tables; an array may be larger
 * than its table: the slots past svc_info.size are never picked). Slot 0 of pydp_lb_tables
 * holds no table: its array's first two entries are the last writer's stamp. */
struct lb_backend {
	__be32 addr; /* backend IPv4 address, network order; 0: an empty slot */
	__be16 port; /* backend port, network order; 0: the frontend's port */
	__u16 pad;
};

#endif
