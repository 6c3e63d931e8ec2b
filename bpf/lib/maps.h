/* SPDX-License-Identifier: Apache-2.0 */
/* Every map pydp's programs share, declared once; pinned by name under the bpffs root. */
#ifndef PYDP_LIB_MAPS_H
#define PYDP_LIB_MAPS_H

#include "lib/common.h"
#include "maps/config.h"
#include "maps/nat.h"
#include "maps/lb.h"

/* Written by the agent (one entry per local endpoint); read by from_container. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, PYDP_ENDPOINTS_MAX); /* preallocated: no allocation on update */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_endpoints SEC(".maps");

/* Written by the agent (the endpoint behind each host ifindex below PYDP_IFACES_MAX);
 * read by from_container to check a packet's source with one array lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct iface_info);
	__uint(max_entries, PYDP_IFACES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_ifaces SEC(".maps");

/* Written by from_overlay (addresses out of the tunnel that no node announced); read by
 * from_container, for replies to them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct learned_info);
	__uint(max_entries, PYDP_LEARNED_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_learned SEC(".maps");

/* An overlay network's VNI -> its network index: the scope of the endpoints a frame out of
 * the tunnel is addressed to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, PYDP_VNIS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_vnis SEC(".maps");

/* Written by every program (one count per packet and reason); read by the CLI. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, PYDP_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_metrics SEC(".maps");

/* Written by the agent (key PYDP_CONFIG_KEY: uplink, NAT range); read by every program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct host_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_config SEC(".maps");

/* Written by the agent (per network index: masquerade flag, gateway MAC); read by
 * from_container (masquerade) and from_netdev (DNAT delivery). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct network_info);
	__uint(max_entries, PYDP_NETWORKS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_networks SEC(".maps");

/* Written by the agent (every pydp network's subnet); read by from_container: a
 * destination in none of them is "outside" and gets masqueraded. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct subnet_key);
	__type(value, struct subnet_info);
	__uint(max_entries, PYDP_SUBNETS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required by LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_subnets SEC(".maps");

/* Written by from_container and from_netdev (two entries per NATed connection) and by the
 * agent (deletes on removal); read by both programs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(max_entries, PYDP_NAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_nat SEC(".maps");

/* Written by the agent (one entry per published host port); read by from_netdev. Not
 * preallocated: memory follows what is published (64 B an entry, 64 KB for a 1,000-port
 * range) instead of 5 MB for the 65,536 slots from the start; only the agent inserts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct port_key);
	__type(value, struct port_target);
	__uint(max_entries, PYDP_PORTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_ports SEC(".maps");

/* Written by sock_sendmsg4/sock_connect4 (the published address a host UDP socket used);
 * read by sock_recvmsg4, which gives the replies that address back. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_rev_value);
	__uint(max_entries, PYDP_SOCK_REV_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_sock_rev SEC(".maps");

/* Written by the agent (every frontend of every service, and each VIP's mark); read by
 * from_container (east-west) and, through published service ports, from_netdev/xdp. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_info);
	__uint(max_entries, PYDP_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_services SEC(".maps");

/* A service's backend table: Maglev's M slots, or one slot per backend. BPF_F_INNER_MAP
 * lets each table have its own size. A table is written only while no frontend names its
 * slot of pydp_lb_tables (a spare, or one quarantined past an RCU grace period), then the
 * frontends are pointed at it: a packet never sees a half-written table. BPF_F_MMAPABLE:
 * the agent fills a table with one memcpy (~14 us) instead of a batch update (~0.3 us a
 * slot: 5 ms at M=16381). */
struct lb_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
};

/* clang emits a struct met only through the inner map's pointer as a forward declaration,
 * which libbpf cannot size: this unused constant makes its BTF whole. */
static const struct lb_backend pydp_lb_backend_btf __attribute__((used)) = {};

/* Written by the agent (service index -> its table); read with pydp_services. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, PYDP_LB_TABLES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lb_table);
} pydp_lb_tables SEC(".maps");

#endif
